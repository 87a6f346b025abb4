"""Sensitivity page: analyse each channel group in the background, pick a MACs ratio, prune,
fine-tune. The analysis lives in the session's workspace (``.sens``) and survives a reload."""

from __future__ import annotations

import copy

import streamlit as st

from uif_explorer import app_logic, charts, data
from uif_explorer.ui import errors, jobs, loaders, state, workspace

st.title("Sensitivity", anchor=False)
st.markdown(
    "Each channel group is pruned alone at a few ratios and the model is scored: the curves "
    "show which groups can lose channels cheaply. Then pick how many MACs to remove."
)

PRESETS = {p.label: p for p in app_logic.SENS_PRESETS}


def _progress_block(job: jobs.Job | None, what: str) -> None:
    if job is None:
        return
    if job.running:
        st.progress(job.fraction, text=f"{what}: {jobs.describe(job)}")
        if st.button("Cancel", key=f"cancel_{job.name}", icon=":material/stop:"):
            job.cancel()
            st.toast("Cancelling after the current step...")
    elif job.status == jobs.FAILED:
        errors.show(f"{what} stopped: {job.error}. What was saved is kept; fix the cause "
                    "(see the message) and start it again to resume.")
    elif job.status == jobs.CANCELLED:
        st.info(f"{what} cancelled after {job.done} steps; saved steps are kept, start it "
                "again to resume.", icon=":material/info:")


def _rerun_when_finished(job: jobs.Job | None) -> None:
    """A fragment saw its job end: redraw the whole page once (buttons, slider...)."""
    if job is not None and not job.running:
        seen = st.session_state.setdefault("jobs_seen", {})
        if seen.get(job.name) != job.serial:
            seen[job.name] = job.serial
            st.rerun()


def _curves(sens: dict | None, images: int | None) -> None:
    if not sens:
        st.info("No analysis of this model in this workspace yet: press **Run analysis**.",
                icon=":material/info:")
        return
    done, total = app_logic.sens_progress(sens)
    src = app_logic.data_source(images) if images else "the analysis's eval data"
    status = "finished" if sens.get("complete") else "unfinished"
    st.caption(f"{done} of {total} evaluations saved ({status}). Score: {src}, in %. "
               "x: fraction of the group's channels removed.")
    st.plotly_chart(charts.sensitivity_figure(sens), key="sens_curves")


with errors.guard("showing the sensitivity analysis"):
    token = workspace.current_token()
    name = state.model_name()
    loaded = loaders.load_sample(name)
    stamp = loaders.weights_stamp(name)
    runner = workspace.runner(token, name, "iterative", stamp)
    sens_path = runner.workspace.sens(runner.name)
    registry = jobs.registry()
    job_name = f"sensitivity:{name}"
    st.caption(f"Model: **{loaded.sample.title}** (`{name}`, chosen on the Model page), "
               f"{loaded.summary.macs / 1e6:.2f} M MACs at input {loaded.summary.input_label}.")

    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    preset = PRESETS[c1.selectbox("Analysis setting", list(PRESETS), key="sens_preset",
                                  help="Images of the bundled Fashion-MNIST test subset used "
                                  "to score each step, and the channel ratios tried per group.")]
    job = registry.get(token, job_name)
    if c2.button("Run analysis", type="primary", key="sens_run",
                 disabled=job is not None and job.running):
        existing = app_logic.read_sens(sens_path)
        forced = existing is not None and (
            existing.get("complete")
            or sorted(existing["ratios"]) != sorted(preset.ratios)
            or app_logic.read_settings(sens_path).get("images") != preset.images)
        app_logic.write_settings(sens_path, preset.images, preset.ratios)
        from uif_explorer.torch.evaluation import top1_accuracy

        def work(job: jobs.Job, images=preset.images, ratios=preset.ratios, forced=forced):
            return runner.ana(top1_accuracy, args=(app_logic.test_loader(images),),
                              ratios=ratios, forced=bool(forced), progress=job.progress)

        job = registry.start(token, job_name, work, label="Sensitivity analysis")

    def live() -> None:
        job = registry.get(token, job_name)
        _progress_block(job, "Sensitivity analysis")
        _curves(app_logic.read_sens(sens_path), app_logic.read_settings(sens_path).get("images"))
        _rerun_when_finished(job)

    if job is not None and job.running:
        st.fragment(live, run_every=0.5)()
    else:
        if job is not None:
            st.session_state.setdefault("jobs_seen", {})[job.name] = job.serial
        live()

    sens = app_logic.read_sens(sens_path)
    known_images = app_logic.read_settings(sens_path).get("images")  # None: made by the CLI
    images = int(known_images or 200)
    sens_source = (app_logic.data_source(int(known_images)) if known_images
                   else "the data the analysis was run with (outside the app)")
    if sens and sens.get("complete"):
        st.subheader("Choose how much to prune", anchor=False)
        pct = st.slider("MACs to remove (%)", min_value=5, max_value=80, value=30, step=1,
                        key="sens_macs_pct",
                        help="Fraction of the original model's MACs to remove; the groups' "
                        "ratios come from the curves above.")
        preview = runner.plan(pct / 100)
        cols = st.columns(4)
        for col, (label, value) in zip(cols, app_logic.preview_metrics(preview, images).items(),
                                       strict=False):
            col.metric(label, value, border=True)
        st.caption(
            f"Computed from the pruning plan without building the model: MACs in millions at "
            f"input {loaded.summary.input_label} (batch 1), params in millions; the predicted "
            f"accuracy adds up the curves' drops ({sens_source}). Original: "
            f"{preview.original_macs:.3f} M MACs, {preview.original_params:.4f} M params."
        )
        st.dataframe(preview.groups, hide_index=True, key="sens_plan_table",
                     column_config={"ratio": st.column_config.NumberColumn(
                         "Ratio removed", format="%.3f")})
        if st.button("Prune", type="primary", key="sens_prune", icon=":material/content_cut:"):
            with st.spinner("Pruning and scoring..."):
                ratio = pct / 100
                model = runner.prune(removal_ratio=ratio, mode="sparse")
                acc = app_logic.accuracy(model, images)
            registry.forget(token, f"finetune:{name}")  # its result belongs to the old prune
            workspace.set_pruned({
                "model": model, "kind": "sparse", "model_name": name,
                "source": f"Sensitivity, {pct} % of MACs removed",
                "removal_ratio": ratio, "spec_path": str(runner.workspace.spec(name, ratio=ratio)),
                "accuracy": acc, "images": images, "macs_m": preview.macs,
                "params_m": preview.params,
            })
        pruned = workspace.pruned()
        if pruned and pruned["model_name"] == name and pruned["source"].startswith("Sens"):
            st.metric(f"Pruned accuracy ({pruned['source']})", f"{pruned['accuracy']:.2f} %",
                      delta=f"{pruned['accuracy'] - sens['baseline']:.2f} points vs unpruned",
                      border=True)
            st.caption(f"Measured on the pruned (sparse) model: "
                       f"{app_logic.data_source(pruned['images'])}. Spec saved as "
                       f"`{runner.workspace.spec(name, ratio=pruned['removal_ratio']).name}`.")

            st.subheader("Fine-tune", anchor=False)
            f1, f2, f3, f4 = st.columns([1, 1, 1, 1], vertical_alignment="bottom")
            epochs = f1.number_input("Epochs", 1, 10, 1, key="ft_epochs")
            lr = f2.number_input("Learning rate", 0.0001, 1.0, 0.01, format="%.4f", key="ft_lr")
            batches = f3.number_input("Batches of 128 per epoch", 1, 79, 10, key="ft_batches",
                                      help="From the bundled 10,000 training images.")
            ft_name = f"finetune:{name}"
            ft_job = registry.get(token, ft_name)
            if f4.button("Fine-tune", key="ft_run", disabled=ft_job is not None and ft_job.running):
                from uif_explorer.torch.finetune import fine_tune

                def tune(job: jobs.Job, model=copy.deepcopy(pruned["model"]),
                         teacher=copy.deepcopy(loaded.model), epochs=int(epochs), lr=float(lr),
                         batches=int(batches), images=pruned["images"]):
                    loader = data.torch_loader("train", batch_size=128, limit=batches * 128)
                    history = fine_tune(model, loader, epochs=epochs, lr=lr, teacher=teacher,
                                        max_batches=batches, progress=job.progress)
                    return {"model": model, "accuracy": app_logic.accuracy(model, images),
                            "history": history, "epochs": epochs, "lr": lr}

                ft_job = registry.start(token, ft_name, tune, label="Fine-tuning")

            def ft_live() -> None:
                job = registry.get(token, ft_name)
                _progress_block(job, "Fine-tuning")
                if job is not None and job.status == jobs.DONE:
                    res = job.result
                    cur = workspace.pruned()
                    if cur is not None and cur.get("finetune_serial") != job.serial:
                        kept = {k: v for k, v in cur.items() if k not in workspace.DERIVED}
                        workspace.set_pruned({**kept, "model": res["model"],
                                              "accuracy_before_ft": cur["accuracy"],
                                              "accuracy": res["accuracy"],
                                              "finetune_serial": job.serial,
                                              "source": cur["source"] + f", fine-tuned "
                                              f"{res['epochs']} epoch(s)"})
                    st.success(f"Accuracy after fine-tuning: {res['accuracy']:.2f} % "
                               f"({app_logic.data_source(pruned['images'])}).",
                               icon=":material/check:")
                _rerun_when_finished(job)

            if ft_job is not None and ft_job.running:
                st.fragment(ft_live, run_every=0.5)()
            else:
                if ft_job is not None:
                    st.session_state.setdefault("jobs_seen", {})[ft_job.name] = ft_job.serial
                ft_live()

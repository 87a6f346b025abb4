"""Sensitivity page: analyse each channel group in the background, pick a ratio of the MACs
or of this machine's predicted latency, prune, fine-tune. The analysis lives in the session's
workspace (``.sens``) and survives a reload.
Works on the current model of any source (PyTorch or Keras): the decisions and the pruning
live in ``services.analysis`` and ``services.pruning_jobs``; this page lays them out.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from uif_explorer.core.plan import PlanError
from uif_explorer.io.loading import LoadError
from uif_explorer.present import charts
from uif_explorer.services import analysis, latency_target, previews, pruning_jobs
from uif_explorer.ui import errors, jobs, loaders, workspace
from uif_explorer.ui import target as target_ui

st.title("Sensitivity", anchor=False)
st.markdown(
    "Each channel group is pruned alone at a few ratios and the model is scored: the curves "
    "show which groups can lose channels cheaply. Then pick how much to remove: a share of "
    "the MACs or of this machine's predicted latency."
)

PRESETS = {p.label: p for p in analysis.SENS_PRESETS}
BN_KEY = "sens_bn"  # the protocol switch: BN re-estimation before every score of this page


def _curves(sens: dict | None, score_source: str) -> None:
    if not sens:
        st.info("No analysis of this model in this workspace yet: press **Run analysis**.",
                icon=":material/info:")
        return
    done, total = analysis.sens_progress(sens)
    status = "finished" if sens.get("complete") else "unfinished"
    st.caption(f"{done} of {total} evaluations saved ({status}). Score: {score_source}. "
               "x: fraction of the group's channels removed.")
    st.plotly_chart(charts.sensitivity_figure(sens), key="sens_curves")


def _measured(token: str, runner, sens: dict, preview, pct: int, ev,
              proto: previews.Protocol, busy: bool, target: str) -> None:
    """The measured preview of the slider's plan: shown from the workspace when this plan was
    measured before, else measured in the background as soon as the slider settles (one job
    per model: a newer ratio waits for the current one, then the page asks again)."""
    job_name = f"measure:{runner.name}"
    label = f"Measuring the plan at {latency_target.removed_text(pct / 100, target)}"
    registry = jobs.registry()
    point = previews.cached_point(runner, sens, preview, ev, proto)
    mjob = registry.get(token, job_name)
    ours = mjob is not None and mjob.label == label and not mjob.running
    if point is None and ours and mjob.status == jobs.DONE:  # saved under other weights
        point = {"score": mjob.result.score, "images": mjob.result.images}
    failed = ours and mjob.status == jobs.FAILED
    if point is None and not busy and not failed and (mjob is None or not mjob.running):
        mjob = registry.start(token, job_name,
                              lambda job, p=preview: previews.measure(p, ev, proto), label=label)

    def live() -> None:
        job = registry.get(token, job_name)
        if point is not None:
            st.markdown(f"**{previews.measured_line(point, ev, proto)}**")
        elif failed:
            jobs.progress_block(job, label)
            if st.button("Measure again", key="sens_measure", icon=":material/straighten:"):
                registry.forget(token, job_name)
                st.rerun()
        elif busy:
            st.caption("The measured preview starts when the analysis has finished.")
        else:
            st.caption(f":material/hourglass_top: Measuring this plan on {ev.images} images "
                       f"({proto.text()}) in the background: the measured number appears here.")
        jobs.rerun_when_finished(job)

    jobs.poll(mjob, live)
    points = previews.page_points(runner, sens, ev, proto)
    if points:
        st.plotly_chart(charts.measured_figure(points, sens.get("baseline")),
                        key="sens_measured_chart")


with errors.guard("showing the sensitivity analysis"):
    token, loaded = workspace.page_model()
    name = loaded.name
    registry = jobs.registry()
    job_name = f"sensitivity:{name}"
    st.caption(f"Model: **{loaded.title}** (`{name}`, chosen on the Model page), "
               f"{loaded.summary.macs / 1e6:.2f} M MACs at input {loaded.summary.input_label}.")
    if errors.nothing_to_prune(loaded):
        st.stop()

    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    preset = PRESETS[c1.selectbox("Analysis setting", list(PRESETS), key="sens_preset",
                                  help="Images of the evaluation data used to score each step "
                                  "(the bundled Fashion-MNIST test subset unless you uploaded "
                                  "an .npz), and the channel ratios tried per group.")]
    runner = workspace.page_runner("iterative", token, loaded)
    sens_path = runner.workspace.sens(runner.name)
    try:
        run_ev = loaders.evaluator(loaded, preset.images)
    except LoadError as exc:
        run_ev = None
        st.warning(f"{exc}", icon=":material/dataset:")
    can_bn = previews.app_protocol(loaded.model, run_ev).calibrate
    bn_on = st.toggle(
        "Re-estimate BatchNorm statistics before each score", value=True, key=BN_KEY,
        disabled=not can_bn,
        help="Pruning shifts the statistics BatchNorm layers learned; re-estimating them on a "
        "few calibration batches (no labels needed) scores the pruned model as it will "
        "behave. Used by the analysis, the measured previews, Prune and Export alike "
        "(docs/app.md, 'How the app scores a model')." if can_bn else
        "This model has no BatchNorm layer (or no calibration images): nothing to re-estimate.")
    job = registry.get(token, job_name)
    if c2.button("Run analysis", type="primary", key="sens_run",
                 disabled=run_ev is None or (job is not None and job.running)):
        run_proto = previews.app_protocol(loaded.model, run_ev, bn_on)
        described = f"{run_ev.describe()}, {run_proto.text()}"  # a protocol change restarts
        forced = analysis.analysis_needs_restart(sens_path, preset.ratios, preset.images,
                                                 described)
        analysis.write_settings(sens_path, preset.images, preset.ratios, described)
        run_job = previews.page_job(run_ev, run_proto)

        def work(job: jobs.Job, sj=run_job, ratios=preset.ratios, forced=forced):
            return runner.ana(sj.eval_fn, args=sj.eval_args, ratios=ratios,
                              forced=bool(forced), calibration_fn=sj.calibration_fn,
                              calib_args=sj.calib_args, progress=job.progress)

        job = registry.start(token, job_name, work, label="Sensitivity analysis")

    def live() -> None:
        job = registry.get(token, job_name)
        jobs.progress_block(job, "Sensitivity analysis")
        _curves(analysis.read_sens(sens_path), analysis.score_source(sens_path))
        jobs.rerun_when_finished(job)

    jobs.poll(job, live)

    sens = analysis.read_sens(sens_path)
    known_images = analysis.read_settings(sens_path).get("images")  # None: made by the CLI
    images = int(known_images or 200)
    try:
        ev = loaders.evaluator(loaded, images)
    except LoadError:
        ev = None
    label_free = ev is not None and ev.label_free
    proto = previews.app_protocol(loaded.model, ev, bn_on)
    word = "score" if label_free else "accuracy"
    if sens and sens.get("complete"):
        st.subheader("Choose how much to prune", anchor=False)
        target = target_ui.choose("sens_target")
        if target == "latency" and not target_ui.latency_ready(token, runner):
            st.stop()
        pct = st.slider(latency_target.SLIDER_LABEL[target], min_value=5, max_value=80,
                        value=30, step=1, key="sens_macs_pct",
                        help=latency_target.ratio_help(target) + " The groups' ratios come "
                        "from the curves above.")
        try:
            preview, divisible = analysis.plan_preview(runner, pct / 100, target)
        except PlanError as exc:
            st.warning(f"{exc} Move the slider to a nearby value.", icon=":material/tune:")
            st.stop()
        metrics = analysis.preview_metrics(preview, images, label_free=label_free)
        cols = st.columns(len(metrics))
        for col, (label, value) in zip(cols, metrics.items(), strict=False):
            col.metric(label, value, border=True)
        st.markdown(previews.estimate_line(preview, label_free=label_free))
        st.caption(
            f"Computed from the pruning plan without building the model: MACs in millions at "
            f"input {loaded.summary.input_label} (batch 1), params in millions; the estimated "
            f"{word} adds up the curves' drops, corrected by the measured whole-model plans "
            f"({analysis.score_source(sens_path)}). Original: "
            f"{preview.original_macs:.3f} M MACs, {preview.original_params:.4f} M params."
            + (" Predicted latency: from this machine's latency table (ms, batch 1), not "
               "timed on the pruned model." if preview.latency_ms is not None else "")
        )
        made_with = (sens.get("protocol") or {}).get("bn_reestimation")
        if made_with is not None and bool(made_with) != proto.calibrate:
            st.info(f"The analysis was scored {previews.protocol_text(bool(made_with))}, the "
                    f"measured previews and Prune score {proto.text()}: run the analysis again "
                    "for an estimate made the same way.", icon=":material/info:")
        if ev is not None:
            _measured(token, runner, sens, preview, pct, ev, proto,
                      busy=job is not None and job.running, target=target)
        st.dataframe(preview.groups, hide_index=True, key="sens_plan_table",
                     column_config={"ratio": st.column_config.NumberColumn(
                         "Ratio removed", format="%.3f")})
        if ev is None:
            st.info("Upload evaluation data on the **Model** page to prune and score this "
                    "model.", icon=":material/dataset:")
        elif st.button("Prune", type="primary", key="sens_prune", icon=":material/content_cut:"):
            with st.spinner("Pruning and scoring..."):
                made = pruning_jobs.prune_from_analysis(runner, loaded.source, ev, pct / 100,
                                                        divisible, preview, proto.calibrate,
                                                        target)
            registry.forget(token, f"finetune:{name}")  # its result belongs to the old prune
            workspace.set_pruned(made)
        pruned = workspace.pruned()
        if pruned and pruned.model_name == name and pruned.from_sensitivity:
            shown = pruned.score_source
            title = "Pruned score" if pruned.label_free else "Pruned accuracy"
            st.metric(f"{title} ({pruned.source})", f"{pruned.accuracy:.2f} %",
                      delta=f"{pruned.accuracy - sens['baseline']:.2f} points vs unpruned",
                      border=True)
            st.markdown(previews.score_line(title, pruned.accuracy, pruned.images, shown,
                                            label_free=pruned.label_free))
            if not pruned.label_free:
                st.markdown(previews.versus_line(pruned.accuracy, pruned.images,
                                                 sens["baseline"], sens.get("images"),
                                                 "the unpruned model (analysis baseline)"))
            st.caption(f"Measured on the pruned (sparse) model: {shown}. Spec saved as "
                       f"`{Path(pruned.spec_path).name}`.")

            st.subheader("Fine-tune", anchor=False)
            backend = loaded.source.backend
            if not pruning_jobs.can_fine_tune(loaded.source, ev):
                st.info(
                    "Fine-tuning in the app uses the bundled Fashion-MNIST training images or "
                    "the fine-tuning split of labelled image folders uploaded on the Model "
                    "page. Otherwise fine-tune the sparse "
                    "model in your own training loop (Keras: `fit()`; the masks keep pruned "
                    "channels at zero), then export it.", icon=":material/info:")
            else:
                f1, f2, f3, f4 = st.columns([1, 1, 1, 1], vertical_alignment="bottom")
                epochs = f1.number_input("Epochs", 1, 10, 1, key="ft_epochs")
                lr = f2.number_input("Learning rate", 0.0001, 1.0, backend.finetune_lr,
                                     format="%.4f", key="ft_lr",
                                     help=f"{backend.finetune_help}.")
                batches = f3.number_input("Batches of 128 per epoch", 1, 79, 10,
                                          key="ft_batches",
                                          help="From "
                                          f"{pruning_jobs.fine_tune_data(ev)}.")
                ft_name = f"finetune:{name}"
                ft_job = registry.get(token, ft_name)
                if f4.button("Fine-tune", key="ft_run",
                             disabled=ft_job is not None and ft_job.running):
                    work = pruning_jobs.fine_tune_job(pruned, loaded.source, loaded.model,
                                                      runner, ev, epochs, lr, batches,
                                                      proto.calibrate)
                    ft_job = registry.start(token, ft_name, work, label="Fine-tuning")

                def ft_live() -> None:
                    job = registry.get(token, ft_name)
                    jobs.progress_block(job, "Fine-tuning")
                    if job is not None and job.status == jobs.DONE:
                        res = job.result
                        cur = workspace.pruned()
                        if cur is not None:
                            workspace.set_pruned(pruning_jobs.fine_tuned(cur, res, job.serial))
                        st.success(f"Accuracy after fine-tuning: {res['accuracy']:.2f} % "
                                   f"({res.get('score_source', shown)}).",
                                   icon=":material/check:")
                    jobs.rerun_when_finished(job)

                jobs.poll(ft_job, ft_live)

"""One-step page: sample many pruning candidates at one MACs ratio, score each with adaptive
BN (EagleEye), compare them, build one. Candidates live in the workspace's ``.search`` file."""

from __future__ import annotations

import streamlit as st

from uif_explorer import app_logic, charts
from uif_explorer.ui import errors, jobs, loaders, state, workspace

st.title("One-step", anchor=False)
st.markdown(
    "Sample candidate pruning strategies that all remove the same share of MACs, score each "
    "after re-estimating its BatchNorm statistics, and build the one you like."
)


def _progress_block(job: jobs.Job | None) -> None:
    if job is None:
        return
    if job.running:
        st.progress(job.fraction, text=f"Searching: {jobs.describe(job)}")
        if st.button("Cancel", key="search_cancel", icon=":material/stop:"):
            job.cancel()
    elif job.status == jobs.FAILED:
        errors.show(f"The search stopped: {job.error}. Scored candidates are kept; fix the "
                    "cause and press Run search again to resume.")
    elif job.status == jobs.CANCELLED:
        st.info(f"Search cancelled after {job.done} steps; press Run search to resume.",
                icon=":material/info:")


with errors.guard("showing the one-step search"):
    token = workspace.current_token()
    name = state.model_name()
    loaded = loaders.load_sample(name)
    runner = workspace.runner(token, name, "one_step", loaders.weights_stamp(name))
    registry = jobs.registry()
    st.caption(f"Model: **{loaded.sample.title}** (`{name}`, chosen on the Model page), "
               f"{loaded.summary.macs / 1e6:.2f} M MACs at input {loaded.summary.input_label}.")

    c1, c2, c3, c4 = st.columns([1, 1, 1, 1], vertical_alignment="bottom")
    num_subnet = int(c1.number_input("Candidates", 1, 500, 20, key="os_num",
                                     help="How many strategies to sample and score."))
    pct = int(c2.number_input("MACs to remove (%)", 5, 80, 30, key="os_pct"))
    images = int(c3.selectbox("Eval images", app_logic.IMAGE_CHOICES, index=1, key="os_images",
                              help="First images of the bundled Fashion-MNIST test subset."))
    ratio = pct / 100
    job_name = f"search:{name}:{ratio}"
    search_path = runner.workspace.search(runner.name, ratio)
    job = registry.get(token, job_name)
    if c4.button("Run search", type="primary", key="os_run",
                 disabled=job is not None and job.running):
        from uif_explorer.torch.evaluation import adaptive_bn_calibration, top1_accuracy

        existing = app_logic.read_search(search_path)
        forced = existing is not None and existing.get("images") not in (None, images)

        def work(job: jobs.Job, n=num_subnet, ratio=ratio, images=images, forced=forced):
            result = runner.search(
                calibration_fn=adaptive_bn_calibration, calib_args=(app_logic.calib_loader(),),
                eval_fn=top1_accuracy, eval_args=(app_logic.test_loader(images),),
                num_subnet=n, removal_ratio=ratio, forced=forced, progress=job.progress)
            return result

        app_logic.write_settings(search_path, images, [ratio])
        job = registry.start(token, job_name, work, label="One-step search")

    def live() -> None:
        job = registry.get(token, job_name)
        _progress_block(job)
        search = app_logic.read_search(search_path)
        if search and job is not None and job.running:
            scored = len(charts.scored_candidates(search))
            st.caption(f"{scored} candidates scored so far.")
        if job is not None and not job.running:
            seen = st.session_state.setdefault("jobs_seen", {})
            if seen.get(job.name) != job.serial:
                seen[job.name] = job.serial
                st.rerun()

    if job is not None and job.running:
        st.fragment(live, run_every=0.5)()
    else:
        if job is not None:
            st.session_state.setdefault("jobs_seen", {})[job.name] = job.serial
        live()

    search = app_logic.read_search(search_path)
    used = int(app_logic.read_settings(search_path).get("images") or images)
    if not search or not charts.scored_candidates(search):
        st.info(f"No scored candidates at {pct} % MACs removed in this workspace yet: press "
                "**Run search**.", icon=":material/info:")
    elif job is None or not job.running:
        best = charts.best_candidate_id(search)
        st.caption(f"Score: {app_logic.data_source(used)}, in %, after adaptive BN on "
                   f"{app_logic.CALIB_BATCHES * 64} training images. MACs in millions at input "
                   f"{loaded.summary.input_label} (batch 1). Click a point to compare it with "
                   "the best.")
        left, right = st.columns([3, 2])
        with left:
            event = st.plotly_chart(charts.candidates_figure(search), key="os_scatter",
                                    on_select="rerun", selection_mode="points")
        with right:
            st.dataframe(app_logic.candidates_table(search), hide_index=True, key="os_table",
                         height=min(38 + 35 * len(search["candidates"]), 420),
                         column_config={
                             "id": st.column_config.NumberColumn("Candidate"),
                             "macs_m": st.column_config.NumberColumn("MACs (M)"),
                             "params_m": st.column_config.NumberColumn("Params (M)"),
                             "removed_pct": st.column_config.NumberColumn("MACs removed (%)"),
                             "score": st.column_config.NumberColumn("Score (%)"),
                             "best": st.column_config.CheckboxColumn("Best"),
                         })
        points = (event or {}).get("selection", {}).get("points", []) if event else []
        chosen = None
        for point in points:
            custom = point.get("customdata")
            if custom:
                chosen = int(custom[0])
                break
        scored_ids = {c["id"] for c in charts.scored_candidates(search)}
        if chosen not in scored_ids:
            chosen = st.session_state.get("os_chosen", best)
        if chosen not in scored_ids:  # a choice from an earlier search
            chosen = best
        st.session_state["os_chosen"] = chosen
        ids = [best] if chosen == best else [chosen, best]
        st.subheader(f"Candidate {chosen}" + (" (the best)" if chosen == best else
                                              f" beside the best (candidate {best})"),
                     anchor=False)
        st.plotly_chart(charts.candidate_ratios_figure(search, ids), key="os_ratios")
        st.dataframe(app_logic.candidate_ratios_table(search, ids), hide_index=True,
                     key="os_ratio_table")
        if st.button(f"Build candidate {chosen}", type="primary", key="os_build",
                     icon=":material/build:"):
            with st.spinner("Building the slim model and scoring it..."):
                from uif_explorer.torch.evaluation import adaptive_bn_calibration

                model = runner.prune(removal_ratio=ratio, index=chosen)
                # scored like in the search: BatchNorm statistics re-estimated first
                adaptive_bn_calibration(model, app_logic.calib_loader())
                acc = app_logic.accuracy(model, used)
            cand = next(c for c in search["candidates"] if c["id"] == chosen)
            workspace.set_pruned({
                "model": model, "kind": "slim", "model_name": name,
                "source": f"One-step candidate {chosen} at {pct} % MACs removed",
                "removal_ratio": ratio, "candidate": chosen,
                "spec_path": str(runner.workspace.spec(name, ratio=ratio, candidate=str(chosen))),
                "accuracy": acc, "images": used, "macs_m": cand["macs"],
                "params_m": cand["params"],
            })
        pruned = workspace.pruned()
        if pruned and pruned["model_name"] == name and pruned.get("candidate") is not None:
            st.metric(f"Built: {pruned['source']}", f"{pruned['accuracy']:.2f} %",
                      help=app_logic.data_source(pruned["images"]), border=True)
            st.caption(f"Slim model, {pruned['macs_m']:.3f} M MACs, {pruned['params_m']:.4f} M "
                       f"params; accuracy: {app_logic.data_source(pruned['images'])}, after "
                       f"adaptive BN on {app_logic.CALIB_BATCHES * 64} training images as in "
                       "the search (no fine-tuning). Download it on the Export page.")

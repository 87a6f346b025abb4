"""One-step page: sample many pruning candidates at one MACs ratio, score each with adaptive
BN (EagleEye), compare them, build one. Candidates live in the workspace's ``.search`` file."""

from __future__ import annotations

import streamlit as st

from uif_explorer.io.loading import LoadError
from uif_explorer.present import charts, reports
from uif_explorer.services import analysis, eval_data, pruning_jobs
from uif_explorer.ui import errors, jobs, loaders, workspace

st.title("One-step", anchor=False)
st.markdown(
    "Sample candidate pruning strategies that all remove the same share of MACs, score each "
    "after re-estimating its BatchNorm statistics, and build the one you like."
)


with errors.guard("showing the one-step search"):
    token, loaded = workspace.page_model()
    name = loaded.name
    registry = jobs.registry()
    st.caption(f"Model: **{loaded.title}** (`{name}`, chosen on the Model page), "
               f"{loaded.summary.macs / 1e6:.2f} M MACs at input {loaded.summary.input_label}.")
    if errors.nothing_to_prune(loaded):
        st.stop()

    c1, c2, c3, c4 = st.columns([1, 1, 1, 1], vertical_alignment="bottom")
    num_subnet = int(c1.number_input("Candidates", 1, 500, 20, key="os_num",
                                     help="How many strategies to sample and score."))
    pct = int(c2.number_input("MACs to remove (%)", 5, 80, 30, key="os_pct"))
    images = int(c3.selectbox("Eval images", analysis.IMAGE_CHOICES, index=1, key="os_images",
                              help="First images of the evaluation data (the bundled "
                              "Fashion-MNIST test subset unless you uploaded an .npz)."))
    ratio = pct / 100
    job_name = f"search:{name}:{ratio}"
    runner = workspace.page_runner("one_step", token, loaded)
    search_path = runner.workspace.search(runner.name, ratio)
    job = registry.get(token, job_name)
    try:
        run_ev = loaders.evaluator(loaded, images)
    except LoadError as exc:
        run_ev = None
        st.warning(str(exc), icon=":material/dataset:")
    if c4.button("Run search", type="primary", key="os_run",
                 disabled=run_ev is None or (job is not None and job.running)):
        forced = analysis.search_needs_restart(search_path, images, run_ev.describe())

        def work(job: jobs.Job, n=num_subnet, ratio=ratio, ev=run_ev, forced=forced):
            return loaded.source.backend.search(runner, ev, n, ratio, bool(forced),
                                                job.progress)

        analysis.write_settings(search_path, images, [ratio], run_ev.describe())
        job = registry.start(token, job_name, work, label="One-step search")

    def live() -> None:
        job = registry.get(token, job_name)
        jobs.progress_block(job, "Search")
        search = analysis.read_search(search_path)
        if search and job is not None and job.running:
            scored = len(charts.scored_candidates(search))
            st.caption(f"{scored} candidates scored so far.")
        jobs.rerun_when_finished(job)

    jobs.poll(job, live)

    search = analysis.read_search(search_path)
    found = analysis.read_settings(search_path)
    used = int(found.get("images") or images)
    try:
        ev = loaders.evaluator(loaded, used)
    except LoadError:
        ev = None
    score_text = str(found.get("score") or (ev.describe() if ev is not None
                                             else eval_data.data_source(used)))
    calib_text = (f"{eval_data.CALIB_BATCHES * 64} training images" if ev is None or ev.bundled
                  else "the first 256 images of your data")
    if not search or not charts.scored_candidates(search):
        st.info(f"No scored candidates at {pct} % MACs removed in this workspace yet: press "
                "**Run search**.", icon=":material/info:")
    elif job is None or not job.running:
        best = charts.best_candidate_id(search)
        st.caption(f"Score: {score_text}, in %, after adaptive BN on {calib_text}. MACs in "
                   f"millions at input {loaded.summary.input_label} (batch 1). Click a point to "
                   "compare it with the best.")
        left, right = st.columns([3, 2])
        with left:
            event = st.plotly_chart(charts.candidates_figure(search), key="os_scatter",
                                    on_select="rerun", selection_mode="points")
        with right:
            st.dataframe(reports.candidates_table(search), hide_index=True, key="os_table",
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
        st.dataframe(reports.candidate_ratios_table(search, ids), hide_index=True,
                     key="os_ratio_table")
        if ev is None:
            st.info("Upload evaluation data on the **Model** page to build and score a "
                    "candidate.", icon=":material/dataset:")
        elif st.button(f"Build candidate {chosen}", type="primary", key="os_build",
                       icon=":material/build:"):
            with st.spinner("Building the slim model and scoring it..."):
                workspace.set_pruned(pruning_jobs.build_candidate(
                    runner, loaded.source, ev, ratio, chosen, search))
        pruned = workspace.pruned()
        if pruned and pruned.model_name == name and pruned.candidate is not None:
            shown = pruned.score_source
            st.metric(f"Built: {pruned.source}", f"{pruned.accuracy:.2f} %",
                      help=shown, border=True)
            model_kind = "Slim" if pruned.kind == "slim" else "Sparse (the exported " \
                "program's grouped convolutions cannot be sliced)"
            st.caption(f"{model_kind} model, {pruned.macs_m:.3f} M MACs, "
                       f"{pruned.params_m:.4f} M params; score: {shown}, after adaptive BN "
                       f"on {calib_text} as in the search (no fine-tuning). Download it on the "
                       "Export page.")

"""One-step page: sample many pruning candidates at one ratio of the MACs or of this machine's
predicted latency, score each with adaptive BN (EagleEye), compare them, build one. Candidates
live in the workspace's ``.search`` file (``_latency.search`` for a latency target)."""

from __future__ import annotations

import streamlit as st

from uif_explorer.io.loading import LoadError
from uif_explorer.present import charts, refinement_charts, reports
from uif_explorer.services import (
    analysis,
    eval_data,
    latency_target,
    pruning_jobs,
    refinement_jobs,
    score_lines,
)
from uif_explorer.ui import errors, jobs, loaders, workspace
from uif_explorer.ui import target as target_ui

PLAN_HELP = ("'sampled': a random per-layer plan (EagleEye); 'uniform L1': every layer pruned "
             "alike, which refinement always carries, so its pick can be the plain plan.")

st.title("One-step", anchor=False)
st.markdown(
    "Sample candidate pruning strategies that all remove the same share of the MACs (or of "
    "this machine's predicted latency), score each "
    "after re-estimating its BatchNorm statistics, and build the one you like. Optionally "
    "refine the top candidates: short fine-tunes that halve them until one is left."
)


def _refinement_section(search: dict, label_free: bool, protocol: str) -> int | None:
    """The stages of a refined search; the winner's id once refinement has finished."""
    view = refinement_jobs.refinement_view(search)
    if view is None:
        return None
    st.subheader("Refinement: successive halving with short fine-tunes", anchor=False)
    for line in refinement_jobs.stage_lines(view):
        st.markdown(f"- {line}")
    st.caption(f"Scores after each stage's fine-tune (from the pruned weights, on the bundled "
               f"training images). {protocol}.")
    st.plotly_chart(refinement_charts.refinement_figure(search), key="os_refine_chart")
    st.dataframe(reports.refinement_table(search), hide_index=True, key="os_refine_table",
                 column_config={
                     "candidate": st.column_config.NumberColumn("Candidate"),
                     "plan": st.column_config.TextColumn("Plan", help=PLAN_HELP),
                     "adaptive_bn": st.column_config.NumberColumn(
                         "Adaptive BN (%)", help="The search's score, before fine-tuning."),
                     "reached": st.column_config.NumberColumn("Last stage reached"),
                     "images": st.column_config.NumberColumn("Images"),
                     "winner": st.column_config.CheckboxColumn("Winner"),
                 })
    st.markdown(refinement_jobs.winner_text(view))
    return view.winner


with errors.guard("showing the one-step search"):
    token, loaded = workspace.page_model()
    name = loaded.name
    registry = jobs.registry()
    st.caption(f"Model: **{loaded.title}** (`{name}`, chosen on the Model page), "
               f"{loaded.summary.macs / 1e6:.2f} M MACs at input {loaded.summary.input_label}.")
    if errors.nothing_to_prune(loaded):
        st.stop()

    target = target_ui.choose("os_target")
    c1, c2, c3, c4 = st.columns([1, 1, 1, 1], vertical_alignment="bottom")
    num_subnet = int(c1.number_input("Candidates", 1, 500, 20, key="os_num",
                                     help="How many strategies to sample and score."))
    pct = int(c2.number_input(latency_target.SLIDER_LABEL[target], 5, 80, 30, key="os_pct",
                              help=latency_target.ratio_help(target)))
    images = int(c3.selectbox("Eval images", analysis.IMAGE_CHOICES, index=1, key="os_images",
                              help="First images of the evaluation data (the bundled "
                              "Fashion-MNIST test subset unless you uploaded an .npz)."))
    ratio = pct / 100
    r1, r2, r3 = st.columns([2, 1, 1], vertical_alignment="bottom")
    refine_on = r1.checkbox("Refine the top candidates", key="os_refine",
                            help="After the search, fine-tune the best candidates briefly on "
                            "the bundled training images, score them again and keep the better "
                            "half, with twice the budget, until one is left.")
    keep = int(r2.number_input("How many to refine", 2, 16, refinement_jobs.DEFAULT_KEEP,
                               key="os_keep", disabled=not refine_on))
    steps = int(r3.number_input("Fine-tuning batches (stage 1)", 1, 500,
                                refinement_jobs.DEFAULT_STEPS, key="os_steps",
                                disabled=not refine_on, help="Batches of 64 training images; "
                                "each later stage doubles it."))
    choice = refinement_jobs.RefineChoice(keep, steps) if refine_on else None
    if choice is not None:
        st.caption("Stages (candidates, fine-tuning batches): "
                   + ", ".join(f"({n}, {b})" for n, b in choice.stages(num_subnet))
                   + f"; {choice.fine_tunes(num_subnet)} short fine-tunes in all.")
    job_name = f"search:{name}:{ratio}" + (":latency" if target == "latency" else "")
    runner = workspace.page_runner("one_step", token, loaded)
    search_path = runner.workspace.search(runner.name, ratio, target)
    job = registry.get(token, job_name)
    try:
        run_ev = loaders.evaluator(loaded, images)
    except LoadError as exc:
        run_ev = None
        st.warning(str(exc), icon=":material/dataset:")
    if choice is not None and run_ev is not None and \
            not pruning_jobs.can_fine_tune(loaded.source, run_ev):
        st.warning("Refinement fine-tunes on the bundled training images: it needs a model "
                   "scored on the bundled data.", icon=":material/info:")
        choice = None
    if c4.button("Run search", type="primary", key="os_run",
                 disabled=run_ev is None or (job is not None and job.running)):
        forced = analysis.search_needs_restart(search_path, images, run_ev.describe())
        analysis.write_settings(search_path, images, [ratio], run_ev.describe())
        job = registry.start(token, job_name, refinement_jobs.search_job(
            runner, loaded.source, run_ev, num_subnet, ratio, bool(forced), choice, target),
            label="One-step search" + (" and refinement" if choice else ""))

    def live() -> None:
        job = registry.get(token, job_name)
        jobs.progress_block(job, job.label if job is not None else "Search")
        search = analysis.read_search(search_path)
        if search and job is not None and job.running:
            scored = len(charts.scored_candidates(search))
            st.caption(f"{scored} candidates scored so far.")
            view = refinement_jobs.refinement_view(search)
            if view is not None and not view.complete:
                st.caption(f"Refinement: {view.done} of {view.total} fine-tunes scored. "
                           + " ".join(refinement_jobs.stage_lines(view)))
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
    protocol = score_lines.evaluator_protocol(ev, (search or {}).get("protocol"), used)
    label_free = bool(ev is not None and ev.label_free)
    view = refinement_jobs.refinement_view(search)
    if view is not None and view.interrupted and view.choice is not None and ev is not None \
            and (job is None or not job.running):
        st.warning(f"The refinement of this search stopped after {view.done} of {view.total} "
                   "fine-tunes; the scored stages are saved.", icon=":material/pending:")
        if st.button("Resume refinement", key="os_resume", icon=":material/replay:"):
            job = registry.start(token, job_name, refinement_jobs.search_job(
                runner, loaded.source, ev, len(search["candidates"]), ratio, False,
                view.choice, target), label="One-step refinement")
            st.rerun()
    if not search or not charts.scored_candidates(search):
        st.info(f"No scored candidates at {latency_target.removed_text(ratio, target)} "
                "in this workspace yet: press **Run search**.", icon=":material/info:")
    elif job is None or not job.running:
        best = charts.best_candidate_id(search)
        st.caption(f"Score: {score_text}, in %. {protocol}. MACs in millions at input "
                   f"{loaded.summary.input_label} (batch 1). Click a point to compare it with "
                   "the best.")
        left, right = st.columns([3, 2])
        with left:
            event = st.plotly_chart(charts.candidates_figure(search), key="os_scatter",
                                    on_select="rerun", selection_mode="points")
        with right:
            st.dataframe(latency_target.with_predicted_latency(
                             reports.candidates_table(search), search), hide_index=True,
                         key="os_table",
                         height=min(38 + 35 * len(search["candidates"]), 420),
                         column_config={
                             "id": st.column_config.NumberColumn("Candidate"),
                             "plan": st.column_config.TextColumn("Plan", help=PLAN_HELP),
                             "macs_m": st.column_config.NumberColumn("MACs (M)"),
                             "params_m": st.column_config.NumberColumn("Params (M)"),
                             "removed_pct": st.column_config.NumberColumn(
                                 "Predicted latency removed (%)" if target == "latency"
                                 else "MACs removed (%)"),
                             "latency_ms": target_ui.predicted_column(),
                             "score": st.column_config.NumberColumn("Score (%)"),
                             "images": st.column_config.NumberColumn("Images"),
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
        st.markdown(score_lines.candidates_line(search, chosen, best, label_free))
        st.caption(protocol)
        st.plotly_chart(charts.candidate_ratios_figure(search, ids), key="os_ratios")
        st.dataframe(reports.candidate_ratios_table(search, ids), hide_index=True,
                     key="os_ratio_table")
        winner = _refinement_section(search, label_free, protocol)
        if ev is None:
            st.info("Upload evaluation data on the **Model** page to build and score a "
                    "candidate.", icon=":material/dataset:")
        else:
            b1, b2 = st.columns(2)
            build = chosen if b1.button(f"Build candidate {chosen}", type="primary",
                                        key="os_build", icon=":material/build:") else None
            if winner is not None and b2.button(f"Build the refined winner ({winner})",
                                                key="os_build_winner", icon=":material/star:"):
                build = winner
            if build is not None:
                with st.spinner("Building the slim model and scoring it..."):
                    workspace.set_pruned(pruning_jobs.build_candidate(
                        runner, loaded.source, ev, ratio, build, search))
        pruned = workspace.pruned()
        if pruned and pruned.model_name == name and pruned.candidate is not None:
            shown = pruned.score_source
            st.metric(f"Built: {pruned.source}", f"{pruned.accuracy:.2f} %",
                      help=shown, border=True)
            model_kind = "Slim" if pruned.kind == "slim" else "Sparse (the exported " \
                "program's grouped convolutions cannot be sliced)"
            st.caption(f"{model_kind} model, {pruned.macs_m:.3f} M MACs, "
                       f"{pruned.params_m:.4f} M params; score "
                       f"{score_lines.score_text(pruned.accuracy, pruned.images, label_free)}"
                       f" ({shown}). {protocol}, as in the search (no fine-tuning). Download "
                       "it on the Export page.")

"""OFA Pareto page: a trained supernet's evolutionary search (MACs vs accuracy, Pareto front),
compare subnets, use one as the session's pruned model; new searches and short supernet
trainings run in the background and are saved in the session's workspace."""

from __future__ import annotations

import copy
from pathlib import Path

import streamlit as st

from uif_explorer.present import charts
from uif_explorer.services import analysis, eval_data, latency_target, ofa_app, score_lines
from uif_explorer.ui import errors, jobs, loaders, state, workspace
from uif_explorer.ui import target as target_ui

st.title("OFA Pareto", anchor=False)
st.markdown(
    "A once-for-all **supernet** holds many subnets of different widths in one set of weights. "
    "An evolutionary search scored hundreds of them: pick a MACs range, click points to compare "
    "subnets layer by layer, and use one as your pruned model."
)

TRAIN_JOB = "ofa_train"
OFA_ENTRIES = ("net_id", "history")  # where a search's subnets and their ids are


def _apply_pending(key: str, options: list[str]) -> None:
    """Switch a selectbox to a value chosen by code (a new search or supernet) once it exists."""
    pending = st.session_state.get(f"{key}__pending")
    if pending is not None and pending in options:
        st.session_state[key] = pending
        del st.session_state[f"{key}__pending"]


def _supernet_caption(ref: ofa_app.SupernetRef) -> None:
    acc = ref.info.get("accuracy") or {}
    macs = ref.info.get("macs") or {}
    train = ref.info.get("training") or {}
    parts = [f"Made from the sample model `{ref.sample}` (its trained weights; widths "
             f"{ref.info.get('ofa_args', {}).get('expand_ratio')} of each group kept)."]
    if train:
        parts.append(f"Sandwich training: {train.get('epochs')} epoch(s) on "
                     f"{train.get('data', 'the bundled training subset')}, lr {train.get('lr')}.")
    if acc.get("max_subnet") is not None and macs.get("max_subnet") is not None:
        parts.append(f"Max subnet {acc['max_subnet']:.2f} % ({macs['max_subnet']:.3f} M MACs), "
                     f"min subnet {acc['min_subnet']:.2f} % ({macs['min_subnet']:.3f} M MACs): "
                     f"{acc.get('test_data', 'bundled test data')}, after BatchNorm "
                     f"calibration on {acc.get('bn_calibration', 'training batches')}.")
    st.caption(" ".join(parts))


def _search_live(token: str, job_name: str, ref: ofa_app.SupernetRef, folder: Path) -> None:
    job = jobs.registry().get(token, job_name)
    jobs.progress_block(job, "Evolutionary search")
    path = ofa_app.newest_search(ref, folder) if job is not None and job.running else None
    evo = ofa_app.read_search(path) if path is not None else None
    if evo and evo.get("history"):
        st.caption(f"{len(evo['history'])} subnets evaluated so far, saved after each one: a "
                   "reload resumes watching, and **Resume this search** continues it after a "
                   "restart of the app.")
        st.plotly_chart(charts.evolution_figure(evo), key="ofa_live_plot")
    jobs.rerun_when_finished(job)


def _train_live(token: str) -> None:
    job = jobs.registry().get(token, TRAIN_JOB)
    jobs.progress_block(job, "Supernet training")
    if job is not None and job.status == jobs.DONE and job.result is not None:
        st.success(f"Supernet saved in this workspace as `{Path(job.result).name}`; it is in "
                   "the **Supernet** list above.", icon=":material/check:")
    jobs.rerun_when_finished(job)


with errors.guard("showing the OFA search"):
    token = workspace.current_token()
    folder = workspace.folder_of(token)
    registry = jobs.registry()
    refs = {r.key: r for r in ofa_app.list_supernets(folder)}
    if not refs:
        st.info("No trained supernet found: train the bundled ones with `.venv/bin/python "
                "sample_models/train_supernet.py`, or train one below.", icon=":material/info:")

    if refs:
        current = f"bundled:{state.get(state.MODEL_NAME)}"
        if current in refs and "ofa_supernet" not in st.session_state:
            st.session_state["ofa_supernet"] = current  # the current sample model's supernet
        _apply_pending("ofa_supernet", list(refs))
        ref = refs[st.selectbox("Supernet", list(refs), format_func=lambda k: refs[k].label,
                                key="ofa_supernet",
                                help="Bundled supernets come with a precomputed search; "
                                "supernets trained below appear here too.")]
        _supernet_caption(ref)
        search_job = f"ofa_search:{ref.key}"
        searches = {s.key: s for s in ofa_app.list_searches(ref, folder)}
        search_key = f"ofa_search_{ref.key}"
        _apply_pending(search_key, list(searches))
        search = None
        if searches:
            search = searches[st.selectbox(
                "Search shown", list(searches), format_func=lambda k: searches[k].label,
                key=search_key, help="The bundled search, or one you ran below.")]
        span = ofa_app.recorded_span(ref)
        if span is None:
            span = ofa_app.supernet_span(loaders.supernet(ref))
        lo, hi, step = ofa_app.slider_bounds(span)
        macs_range = st.slider(
            "MACs range (millions)", min_value=lo, max_value=hi, value=(lo, hi), step=step,
            format="%.2f", key=f"ofa_macs_{ref.key}",
            help=f"Subnets of this supernet span {span[0]:.3f} to {span[1]:.3f} M MACs "
            f"(input {ofa_app.input_label(ref.sample)}, batch 1). The plot and the lists show "
            "this range; a new search below searches it.")

        if search is None:
            st.info("No search of this supernet yet: run one below.", icon=":material/info:")
        else:
            evo = ofa_app.read_search(search.path) or {}
            pick_key = f"ofa_picks_{search.key}"
            plot_key = f"ofa_plot_{search.key}"
            seen_key = f"ofa_plot_seen_{search.key}"
            recs = ofa_app.in_range(evo, macs_range)
            options = [r["net_id"] for r in sorted(recs, key=lambda r: float(r["macs"]))]
            picks = [p for p in st.session_state.get(pick_key, []) if p in options]
            # a plot selection made in the last run: merge it once into the comparison
            selection = ofa_app.selected_ids(st.session_state.get(plot_key))
            if selection and selection != st.session_state.get(seen_key):
                picks = [p for p in ofa_app.merge_selection(picks, selection) if p in options]
            st.session_state[seen_key] = selection
            st.session_state[pick_key] = picks

            front = ofa_app.front_ids(evo, macs_range)
            status = "" if search.complete else " (unfinished: resume it below)"
            st.caption(f"{len(recs)} of {len(ofa_app.scored(evo))} evaluated subnets in "
                       f"{macs_range[0]:.2f}-{macs_range[1]:.2f} M MACs, {len(front)} on the "
                       f"Pareto front{status}. Accuracy: {search.data_source}, in %. MACs in "
                       f"millions at input {ofa_app.input_label(ref.sample)} (batch 1). Click a "
                       "point to add it to the comparison (again to remove it); drag a box to "
                       "compare every point inside.")
            st.caption(f"{search.protocol}.")
            st.plotly_chart(charts.evolution_figure(evo, macs_range, highlight=picks),
                            key=plot_key, on_select="rerun", selection_mode=("points", "box"))
            metric = evo.get("metric", "acc1")
            by_id = {r["net_id"]: r for r in recs}
            st.multiselect(
                "Subnets to compare", options, key=pick_key,
                format_func=lambda n: ofa_app.subnet_label(by_id[n], metric)
                + (" · front" if n in front else ""),
                help="The same choice as clicking points on the plot; type to filter.")
            picks = list(st.session_state[pick_key])
            with st.expander(f"All {len(recs)} subnets in the range (table)"):
                st.dataframe(latency_target.with_predicted_latency(
                                 ofa_app.subnets_table(evo, macs_range), evo, *OFA_ENTRIES),
                             hide_index=True, key=f"ofa_table_{search.key}", column_config={
                                 "net_id": "Subnet", "macs_m": "MACs (M)",
                                 "latency_ms": target_ui.predicted_column(),
                                 "params_m": "Params (M)", "accuracy": "Accuracy (%)",
                                 "generation": "Generation",
                                 "front": st.column_config.CheckboxColumn("Pareto front")})

            if not picks:
                st.info("Click a point on the plot (or choose subnets above) to compare "
                        "subnets and use one.", icon=":material/info:")
            else:
                st.subheader(f"Comparing {len(picks)} subnet(s)", anchor=False)
                st.dataframe(latency_target.with_predicted_latency(
                                 ofa_app.compare_table(evo, picks, search.images), evo,
                                 *OFA_ENTRIES),
                             hide_index=True, key="ofa_compare", column_config={
                                 "net_id": "Subnet", "macs_m": "MACs (M)",
                                 "latency_ms": target_ui.predicted_column(),
                                 "params_m": "Params (M)",
                                 "accuracy": st.column_config.NumberColumn(
                                     "Accuracy (%)", help=search.data_source),
                                 "images": st.column_config.NumberColumn("Images"),
                                 "interval": "95 % interval",
                                 "vs_best": st.column_config.TextColumn(
                                     "vs the most accurate", help="'within noise': the 95 % "
                                     "intervals overlap, the difference may be chance."),
                                 "generation": "Generation", "origin": "Made by",
                                 "front": st.column_config.CheckboxColumn("Pareto front")})
                st.caption(f"Accuracy as scored by the search: {search.data_source}. "
                           f"{search.protocol}. Two subnets are 'within noise' when their "
                           "95 % intervals overlap. Widths per channel group (output "
                           "channels kept):")
                st.dataframe(ofa_app.widths_table(evo, picks), hide_index=True,
                             key="ofa_widths", column_config={
                                 "group": "Channel group (leading layer)",
                                 "channels": "All channels", "widths": "Choices"})
                ofa_model = loaders.supernet(ref)
                widths = ofa_app.layer_widths(  # an empty setting is the max subnet
                    ofa_model, {"full": [], **{p: by_id[p]["subnet_setting"] for p in picks}})
                full = widths.pop("full")
                st.plotly_chart(charts.subnet_widths_figure(full, widths), key="ofa_width_chart")

                st.subheader("Use a subnet", anchor=False)
                u1, u2, u3 = st.columns([2, 1, 1], vertical_alignment="bottom")
                chosen = u1.selectbox("Subnet", picks, index=len(picks) - 1, key="ofa_use_pick",
                                      format_func=lambda n: ofa_app.subnet_label(by_id[n],
                                                                                 metric))
                images = int(u2.selectbox(
                    "Test images", analysis.IMAGE_CHOICES, index=2, key="ofa_use_images",
                    help="First images of the bundled Fashion-MNIST test subset to measure "
                    "the built subnet on."))
                if u3.button("Use this subnet", type="primary", key="ofa_use",
                             icon=":material/check:"):
                    with st.spinner("Building the static subnet and scoring it..."):
                        built = ofa_app.build_subnet(ofa_model, by_id[chosen]["subnet_setting"],
                                                     images=images)
                        path = ofa_app.save_subnet(folder, ref.sample, chosen, str(ref.path),
                                                   built["config"])
                    workspace.set_pruned(ofa_app.pruned_entry(
                        built, sample=ref.sample, net_id=chosen, supernet=ref,
                        subnet_path=path, search_source=search.data_source))
                pruned = workspace.pruned()
                if pruned and pruned.kind == "ofa_subnet" and pruned.supernet == str(ref.path):
                    st.metric(f"Subnet {pruned.net_id}: measured accuracy",
                              f"{pruned.accuracy:.2f} %",
                              help=eval_data.data_source(pruned.images), border=True)
                    st.caption(
                        f"Static subnet (plain layers), {pruned.macs_m:.3f} M MACs, "
                        f"{pruned.params_m:.4f} M params; accuracy "
                        f"{score_lines.score_text(pruned.accuracy, pruned.images)}, "
                        f"{eval_data.data_source(pruned.images)}. "
                        f"{ofa_app.subnet_protocol(pruned.images)} (no fine-tuning). Its "
                        f"subnet_setting is saved as "
                        f"`{Path(pruned.spec_path).name}`; download the model on the "
                        "**Export** page.")

        # -- a new search -------------------------------------------------------------------
        st.subheader("Run a new search", anchor=False)
        target = target_ui.choose("ofa_target")
        s1, s2, s3, s4 = st.columns(4, vertical_alignment="bottom")
        population = int(s1.number_input("Population", 2, 64, 8, key="ofa_popu",
                                         help="parent_popu_size: the first generation, and "
                                         "how many parents each generation keeps."))
        iterations = int(s2.number_input("Generations", 0, 20, 2, key="ofa_iter",
                                         help="iteration: generations of mutations and "
                                         "crossovers after the first."))
        search_images = int(s3.selectbox("Eval images", analysis.IMAGE_CHOICES, index=1,
                                         key="ofa_search_images",
                                         help="First images of the bundled Fashion-MNIST "
                                         "test subset that score each subnet."))
        latency = target == "latency"  # range and bins in ms: the whole span, known once timed
        settings = ofa_app.search_settings(
            None if latency else macs_range[0], None if latency else macs_range[1],
            population=population, iterations=iterations, images=search_images, target=target)
        job = registry.get(token, search_job)
        running = job is not None and job.running
        if s4.button("Run search", type="primary", key="ofa_search_run", disabled=running):
            name = ofa_app.search_name(ref, settings)
            ofa_copy = copy.deepcopy(loaders.supernet(ref))  # shared when cached: a copy

            def work(job: jobs.Job, ofa=ofa_copy, ref=ref, settings=settings, name=name):
                return ofa_app.run_search(ofa, ref, folder, settings, name=name,
                                          progress=job.progress)

            job = registry.start(token, search_job, work, label="Evolutionary search")
            st.session_state[f"{search_key}__pending"] = f"workspace:{name}_evolution.json"
        where = ("the whole span of this machine's predicted latency (ms, from the supernet's "
                 "latency table, measured first in the search job), bins of ~1/20 of it"
                 if latency else f"{macs_range[0]:.2f}-{macs_range[1]:.2f} M MACs (the "
                 f"slider), bins of {settings['macs_step']:g} M MACs")
        st.caption(f"Searches {where}, at most {ofa_app.planned_evaluations(settings)} "
                   f"subnets; each subnet is BatchNorm-calibrated on "
                   f"{settings['calib_batches'] * 64} training images and scored on "
                   f"{search_images:,} test images. Saved in this workspace after every subnet.")
        if search is not None and not search.bundled and not search.complete and not running:
            evo = ofa_app.read_search(search.path) or {}
            meta = ofa_app.read_search_meta(search.path)
            if evo.get("settings") and st.button("Resume this search", key="ofa_search_resume",
                                                 icon=":material/replay:"):
                old = evo["settings"]
                again = ofa_app.search_settings(
                    old["min_macs"], old["max_macs"], population=old["parent_popu_size"],
                    iterations=old["iteration"], images=int(meta.get("images") or 200),
                    macs_step=old["macs_step"], mutate_size=old["mutate_size"],
                    crossover_size=old["crossover_size"],
                    calib_batches=int(meta.get("calib_batches") or eval_data.CALIB_BATCHES),
                    target=evo.get("target", "macs"))
                ofa_copy = copy.deepcopy(loaders.supernet(ref))

                def resume(job: jobs.Job, ofa=ofa_copy, ref=ref, settings=again,
                           name=evo["model"]):
                    return ofa_app.run_search(ofa, ref, folder, settings, name=name,
                                              progress=job.progress)

                job = registry.start(token, search_job, resume, label="Evolutionary search")
        jobs.poll(job, lambda: _search_live(token, search_job, ref, folder))

    # -- train a supernet ---------------------------------------------------------------------
    st.subheader("Train a supernet", anchor=False)
    st.markdown("A short sandwich-rule training (max, min and two random subnets per batch, "
                "distilled from the sample model) of a fresh supernet, saved in this workspace.")
    t1, t2, t3, t4, t5 = st.columns(5, vertical_alignment="bottom")
    base = t1.selectbox("Sample model", list(ofa_app.BUNDLED), key="ofa_train_sample")
    train_images = int(t2.selectbox("Training images", (256, 512, 1024, 2048), index=1,
                                    key="ofa_train_images",
                                    help="First images of the bundled Fashion-MNIST training "
                                    "subset, in batches of 64."))
    epochs = int(t3.number_input("Epochs", 1, 5, 1, key="ofa_train_epochs"))
    lr = float(t4.number_input("Learning rate", 0.001, 0.5, 0.02, format="%.3f",
                               key="ofa_train_lr", help="Low from trained weights (0.02)."))
    train_job = registry.get(token, TRAIN_JOB)
    if t5.button("Train supernet", key="ofa_train_run",
                 disabled=train_job is not None and train_job.running):
        def train_work(job: jobs.Job, sample=base, images=train_images, epochs=epochs, lr=lr):
            path = ofa_app.train_supernet(sample, folder, images=images, epochs=epochs, lr=lr,
                                          progress=job.progress)
            return path

        train_job = registry.start(token, TRAIN_JOB, train_work, label="Supernet training")
        stem = ofa_app.supernet_stem(base, ofa_app.train_settings(base, train_images, epochs,
                                                                  lr))
        st.session_state["ofa_supernet__pending"] = f"workspace:{stem}"
    st.caption(f"{-(-train_images // 64) * epochs} training steps; afterwards the max and min "
               "subnets are measured on the first 500 bundled test images.")
    jobs.poll(train_job, lambda: _train_live(token))

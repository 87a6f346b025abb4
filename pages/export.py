"""Export page: download the current pruned model (slim) in its backend's formats (PyTorch:
safetensors / TorchScript / torch.export / ONNX; Keras: a safe-mode ``.keras`` file), an int8
file checked against fp32 (ONNX Runtime QDQ or TFLite, ``Backend.quantize_int8``), a report,
and measure the latency of every variant on this machine (original and slim models, and the
slim model's fp32 and int8 files once made), each with what ran it. An OFA subnet (kind
``ofa_subnet``) exports its ``subnet_setting`` file instead of a spec. What is built and
reported comes from ``services.pruning_jobs`` and ``services.export_report``."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from uif_explorer import zoo
from uif_explorer.io.loading import LoadError
from uif_explorer.present import charts
from uif_explorer.services import (
    analysis,
    backends,
    eval_data,
    export_report,
    model_source,
    previews,
    pruning_jobs,
)
from uif_explorer.ui import errors, loaders, state, workspace

st.title("Export", anchor=False)
INT8_KEY = "export_int8"  # the int8 file made for the session's pruned model, and its report
INT8_IMAGES = (64, 200)
ORIGINAL_KEY = "export_original"  # the unpruned model's score per (model, images, protocol)


def _original(name: str):
    """The loaded model the pruned one was made from (the current one, or its sample)."""
    current = loaders.current()
    if current.name == name:
        return current
    if name in zoo.SAMPLE_MODELS:
        return loaders.load_sample(name)
    return None


def _original_score(token: str, loaded, images: int, calibrated: bool
                    ) -> tuple[float, int, str] | None:
    """(score, images, protocol in words) of the unpruned model, scored like the pruned one
    (same images, same protocol); once per session. None when no data scores the model."""
    try:
        ev = loaders.evaluator(loaded, images)
    except LoadError:
        return None
    proto = previews.app_protocol(loaded.model, ev, calibrated)
    cache = st.session_state.setdefault(ORIGINAL_KEY, {})
    key = (loaded.name, int(images), proto)
    if key not in cache:
        with st.spinner("Scoring the original model the same way..."):
            cache[key] = previews.score_original(
                workspace.runner(token, loaded, "iterative"), ev, proto)
    return cache[key], ev.images, f"{ev.describe()}, {proto.text()}"


with errors.guard("preparing the export"):
    token = workspace.current_token()
    folder = workspace.folder_of(token)
    pruned = workspace.pruned()
    if pruned is None:
        st.info("No pruned model in this session yet: prune one on the **Sensitivity** page "
                "or build a candidate on the **One-step** page, then come back.",
                icon=":material/info:")
        found = analysis.latest_spec(folder)
        current = loaders.current()
        if found is not None and found[1].get("model") == current.name:
            spec_file, spec = found
            st.markdown(f"This workspace holds the spec `{spec_file.name}` (the newest prune of "
                        f"`{current.name}`). It rebuilds the slim model from the original "
                        "weights; fine-tuning done before a reload is not in it.")
            if st.button("Rebuild from the saved spec", key="export_rebuild",
                         icon=":material/restore:"):
                with st.spinner("Rebuilding and scoring..."):
                    workspace.set_pruned(pruning_jobs.rebuild_from_spec(
                        workspace.runner(token, current, "iterative"), current.source,
                        loaders.evaluator(current, 200), spec_file, spec,
                        calibrate=st.session_state.get("sens_bn", True)))
                st.rerun()
        st.stop()
    name = pruned.model_name
    loaded = _original(name)
    if loaded is None:
        st.warning(f"The pruned model was made from `{name}`, which is no longer the current "
                   "model: make it current again on the **Model** page (or prune the current "
                   "one) to export.", icon=":material/info:")
        st.stop()
    backend = loaded.source.backend
    x = model_source.example_input(loaded.source)
    score_source = pruned.score_source
    spec_path = Path(pruned.spec_path or "")

    if pruned.slim is None:
        with st.spinner("Slimming the pruned model..."):
            slim, slim_error = pruning_jobs.slim_for_export(
                pruned, loaded.source, loaded.model,
                lambda: workspace.runner(token, loaded, "iterative"))
    else:
        slim, slim_error = pruned.slim, None
    if slim is None:
        errors.show(f"The slim (smaller) model cannot be built: "
                    f"{analysis.first_line(slim_error)}. Exported programs fix the group count "
                    "of grouped / depthwise convolutions in their graph; upload the "
                    "architecture with a state dict instead to get a slim model. The sparse "
                    "model's state dict (same shapes as the original, pruned channels zero) is "
                    "below.", slim_error)
        first = backend.export_formats[0]
        d1, _ = st.columns(2)
        d1.download_button(first.label.replace("Slim", "Sparse"),
                           data=lambda: backend.export_bytes(pruned.model, x, first.fmt, folder),
                           file_name=f"{name}_sparse{first.suffix}", mime=first.mime,
                           key="dl_sparse", on_click="ignore")
        st.stop()
    slim_macs, slim_params = pruning_jobs.slim_cost(slim, loaded.source, pruned)
    st.markdown(f"**{pruned.source}** of {loaded.title} (`{name}`).")
    cols = st.columns(3)
    cols[0].metric(pruned.score_title, f"{pruned.accuracy:.2f} %", help=score_source,
                   border=True)
    cols[1].metric("MACs", f"{slim_macs if slim_macs is not None else pruned.macs_m:.3f} M",
                   delta=f"{loaded.summary.macs / 1e6:.3f} M before", delta_color="off",
                   delta_arrow="off", border=True)
    cols[2].metric("Params", f"{slim_params:.4f} M",
                   delta=f"{loaded.summary.params / 1e6:.4f} M before", delta_color="off",
                   delta_arrow="off", border=True)
    st.markdown(previews.score_line(pruned.score_title, pruned.accuracy, pruned.images,
                                    export_report.pruned_protocol(pruned),
                                    label_free=pruned.label_free))
    original = _original_score(token, loaded, pruned.images,
                               export_report.calibrated_in(score_source))
    original_facts = None
    if original is not None:
        o_score, o_images, o_protocol = original
        original_facts = export_report.original_facts(o_score, o_images, o_protocol)
        st.markdown(previews.score_line(f"Original {pruned.score_title.lower()}", o_score,
                                        o_images, o_protocol, label_free=pruned.label_free))
        if not pruned.label_free:
            st.markdown("Pruned " + previews.versus_line(pruned.accuracy, pruned.images,
                                                         o_score, o_images, "the original"))
    st.caption("MACs and params in millions, counted on the slim model at input "
               f"{loaded.summary.input_label} (batch 1).")

    st.subheader("Downloads", anchor=False)
    ofa_subnet = pruned.kind == "ofa_subnet"
    base = f"{name}_ofa_subnet" if ofa_subnet else f"{name}_slim"
    files = [f for f in backend.export_formats if not f.on_demand]
    cells = iter(st.columns(3) + st.columns(3))

    def offer(fmt: backends.ExportFormat) -> None:
        next(cells).download_button(
            fmt.label, data=lambda: backend.export_bytes(slim, x, fmt.fmt, folder),
            file_name=f"{base}{fmt.suffix}", mime=fmt.mime, key=f"dl_{fmt.fmt}",
            icon=":material/download:", on_click="ignore")

    offer(files[0])
    spec_cell = next(cells)
    if spec_path.is_file() and ofa_subnet:
        spec_cell.download_button("Subnet setting (.json)", data=spec_path.read_bytes(),
                                  file_name=f"{name}_ofa_subnet.json", mime="application/json",
                                  key="dl_spec", icon=":material/download:", on_click="ignore",
                                  help="net id, subnet_setting, MACs, params and the ofa_args "
                                  "that rebuild the subnet (ofa_app.rebuild_subnet).")
    elif spec_path.is_file():
        spec_cell.download_button("Spec (.json)", data=spec_path.read_bytes(),
                                  file_name=f"{spec_path.stem}.spec.json",
                                  mime="application/json", key="dl_spec",
                                  icon=":material/download:", on_click="ignore")
    for fmt in files[1:]:
        offer(fmt)
    for fmt in (f for f in backend.export_formats if f.on_demand):
        cell = next(cells)
        if cell.button(str(fmt.make_label), key=f"export_{fmt.fmt}_make"):
            with st.spinner(f"Making {fmt.label} and checking it..."):
                try:
                    pruned.onnx = backend.export_checked(slim, x, fmt.fmt, folder)
                except Exception as exc:  # noqa: BLE001 - shown with a fix, traceback to log
                    errors.show(f"{fmt.label} export failed: {exc}. The other formats still "
                                "work; torch.export (.pt2) is the closest alternative.", exc)
        if pruned.onnx:
            cell.download_button(fmt.label, data=pruned.onnx["bytes"],
                                 file_name=f"{base}{fmt.suffix}", mime=fmt.mime,
                                 key=f"dl_{fmt.fmt}", icon=":material/download:",
                                 on_click="ignore")
            cell.caption(fmt.check_caption.format(error=pruned.onnx["error"]))
    st.caption(backend.export_note(ofa_subnet))

    st.subheader("int8 (quantized)", anchor=False)
    q8 = backend.int8_format
    data = state.current_data()
    data = data if data is not None and data.for_model == loaded.source.key else None
    st.caption(f"The slim model quantized by its runtime ({q8.label.removeprefix('int8 ')}), "
               "calibrated on the workspace's calibration images and checked against fp32 on "
               "the evaluation images before the file is written (docs/quantization.md).")
    q1, q2 = st.columns([1, 2])
    q8_images = q1.selectbox("Evaluation images for the check", INT8_IMAGES, index=1,
                             key="export_int8_images")
    if q2.button(str(q8.make_label), key="export_int8_make", icon=":material/compress:"):
        with st.spinner(f"Quantizing to {q8.label} and checking it against fp32..."):
            try:
                path = folder / "exports" / f"{base}{q8.suffix}"
                report = export_report.make_int8(backend, slim, loaded.source, data, folder,
                                                 int(q8_images), path)
                st.session_state[INT8_KEY] = {"facts": pruned.facts(), "report": report,
                                              "bytes": path.read_bytes()}
            except Exception as exc:  # noqa: BLE001 - shown with a fix, traceback to log
                errors.show(f"{q8.label} failed: {exc}. The fp32 downloads above still work.",
                            exc)
    made = st.session_state.get(INT8_KEY)
    made = made if made is not None and made["facts"] == pruned.facts() else None
    if made is not None:  # made for this pruned model
        q1.download_button(q8.label, data=made["bytes"], file_name=f"{base}{q8.suffix}",
                           mime=q8.mime, key=f"dl_{q8.fmt}", icon=":material/download:",
                           on_click="ignore")
        st.dataframe(export_report.int8_table(made["report"]), hide_index=True)
        for line in export_report.int8_lines(made["report"]):
            st.markdown(line)
        st.caption(f"{export_report.int8_tolerance(made['report'])} Evaluation images from "
                   f"{(data or eval_data.DataSource()).title}.")

    st.subheader("Report", anchor=False)
    before, after = backend.out_widths(loaded.model), backend.out_widths(slim)
    report_json, report_csv = export_report.table_reports(pruned, before, after, score_source,
                                                          original_facts)
    st.plotly_chart(charts.width_figure(before, after), key="export_widths")
    r1, r2, r3 = st.columns(3)
    r1.download_button("Report (.json)", data=report_json, file_name=f"{base}_report.json",
                       mime="application/json", key="dl_report_json", on_click="ignore")
    r2.download_button("Report (.csv)", data=report_csv, file_name=f"{base}_report.csv",
                       mime="text/csv", key="dl_report_csv", on_click="ignore")
    r3.download_button("Report with charts (.html)",
                       data=lambda: export_report.html_of(pruned, before, after, folder,
                                                          score_source, original_facts),
                       file_name=f"{base}_report.html", mime="text/html",
                       key="dl_report_html", on_click="ignore")

    st.subheader("Latency on this machine", anchor=False)
    files = export_report.int8_files(made["report"]) if made is not None else {}
    if st.button("Measure latency", key="export_latency", icon=":material/timer:"):
        with st.spinner("Timing every variant..."):
            pruned.latency = backends.measure_latency(
                backend, {export_report.ORIGINAL: backend.private_copy(loaded.model),
                          export_report.PRUNED: backend.private_copy(slim)}, x, files=files)
    lat = pruned.latency
    if lat:
        original, slimmed = lat[export_report.ORIGINAL], lat[export_report.PRUNED]
        l1, l2 = st.columns(2)
        l1.metric("Original", f"{original:.2f} ms", border=True)
        l2.metric("Pruned (slim)", f"{slimmed:.2f} ms",
                  delta=f"{original / max(slimmed, 1e-9):.2f}x faster", border=True)
        in_process = f"{backend.title} model, in this process"
        st.table(export_report.latency_table(lat, {
            **{k: backend.file_note() for k in lat}, export_report.ORIGINAL: in_process,
            export_report.PRUNED: in_process}))
        st.caption(f"Measured, not predicted: median of 10 forwards each, interleaved (every "
                   f"variant in turn, after 2 warm-up calls), batch 1 at input "
                   f"{loaded.summary.input_label}, on {backend.machine_note()}. Other jobs on "
                   "this machine add noise."
                   + ("" if files and set(files) <= set(lat) else " Make the int8 file "
                      "above, then measure again, to time the fp32 and int8 files too."))

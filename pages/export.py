"""Export page: download the current pruned model (slim) in several formats, a report, and
measure its latency against the original on this machine. PyTorch models export as
safetensors / TorchScript / torch.export / ONNX; Keras models as a safe-mode ``.keras`` file.
An OFA subnet (kind ``ofa_subnet``) exports its ``subnet_setting`` file instead of a spec."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from uif_explorer import zoo
from uif_explorer.present import charts
from uif_explorer.services import app_logic, model_source, ofa_app
from uif_explorer.ui import errors, loaders, workspace

st.title("Export", anchor=False)


def _original(name: str):
    """The loaded model the pruned one was made from (the current one, or its sample)."""
    current = loaders.current()
    if current.name == name:
        return current
    if name in zoo.SAMPLE_MODELS:
        return loaders.load_sample(name)
    return None


def _setting_file(path: Path) -> dict[str, Any]:
    """The saved subnet file (``ofa_app.save_subnet``), or {} when it is gone or unreadable."""
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _with_subnet_setting(report_json: str, report_csv: str, setting: list[dict[str, Any]],
                         ofa_args: dict[str, Any] | None) -> tuple[str, str]:
    """The reports plus what rebuilds an OFA subnet: the JSON gets ``subnet_setting`` (and
    ``ofa_args``); the CSV gets a ``subnet_setting`` column holding each group's (or kernel's)
    entry on its leading layer's row, extra rows for entries naming no listed layer."""
    doc = json.loads(report_json)
    doc["subnet_setting"] = setting
    if ofa_args is not None:
        doc["ofa_args"] = ofa_args
    table = pd.read_csv(io.StringIO(report_csv))
    by_layer: dict[str, list[dict[str, Any]]] = {}
    for entry in setting:
        by_layer.setdefault(str(entry.get("group") or entry.get("module")), []).append(entry)
    table["subnet_setting"] = [json.dumps(by_layer.pop(layer)) if layer in by_layer else ""
                               for layer in table["layer"]]
    extra = [{"layer": layer, "subnet_setting": json.dumps(entries)}
             for layer, entries in by_layer.items()]
    if extra:
        table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    return json.dumps(doc, indent=2), buf.getvalue()


def _subnet_search(folder: Path, pruned: dict[str, Any]) -> dict[str, Any] | None:
    """The search the OFA subnet was picked from (its supernet's search holding its net id with
    the same setting; else the first holding its net id), or None when none is left."""
    setting, net_id = pruned.get("subnet_setting"), pruned.get("net_id")
    fallback = None
    for ref in ofa_app.list_supernets(folder):
        if str(ref.path) != pruned.get("supernet"):
            continue
        for search in ofa_app.list_searches(ref, folder):
            evo = ofa_app.read_search(search.path)
            for rec in (evo or {}).get("history", []):
                if rec.get("net_id") == net_id:
                    if rec.get("subnet_setting") == setting:
                        return evo
                    fallback = fallback or evo
    return fallback


with errors.guard("preparing the export"):
    token = workspace.current_token()
    folder = workspace.folder_of(token)
    pruned = workspace.pruned()
    if pruned is None:
        st.info("No pruned model in this session yet: prune one on the **Sensitivity** page "
                "or build a candidate on the **One-step** page, then come back.",
                icon=":material/info:")
        found = app_logic.latest_spec(folder)
        current = loaders.current()
        if found is not None and found[1].get("model") == current.name:
            spec_file, spec = found
            st.markdown(f"This workspace holds the spec `{spec_file.name}` (the newest prune of "
                        f"`{current.name}`). It rebuilds the slim model from the original "
                        "weights; fine-tuning done before a reload is not in it.")
            if st.button("Rebuild from the saved spec", key="export_rebuild",
                         icon=":material/restore:"):
                with st.spinner("Rebuilding and scoring..."):
                    rebuilder = workspace.runner(token, current, "iterative")
                    model = rebuilder.prune(spec_path=spec_file, mode="slim")
                    ev = loaders.evaluator(current, 200)
                    acc = ev.score(model)
                workspace.set_pruned({
                    "model": model, "kind": "slim", "model_name": current.name,
                    "framework": current.framework,
                    "source": f"Rebuilt from {spec_file.name} (original weights)",
                    "removal_ratio": spec.get("removal_ratio"), "spec_path": str(spec_file),
                    "accuracy": acc, "images": ev.images, "score_source": ev.describe(),
                    "label_free": ev.label_free,
                    "macs_m": (spec.get("macs") or {}).get("pruned"),
                    "params_m": (spec.get("params") or {}).get("pruned"),
                })
                st.rerun()
        st.stop()
    name = pruned["model_name"]
    loaded = _original(name)
    if loaded is None:
        st.warning(f"The pruned model was made from `{name}`, which is no longer the current "
                   "model: make it current again on the **Model** page (or prune the current "
                   "one) to export.", icon=":material/info:")
        st.stop()
    keras_model = loaded.framework == "keras"
    x = model_source.example_input(loaded.source)
    score_source = pruned.get("score_source") or app_logic.data_source(pruned["images"])
    score_title = "Label-free score" if pruned.get("label_free") else "Accuracy"
    spec_path = Path(pruned.get("spec_path") or "")

    slim = pruned.get("slim")
    slim_error = None
    if slim is None:  # made once per pruned model, kept with it in this session only
        with st.spinner("Slimming the pruned model..."):
            try:
                if keras_model:
                    slim = (pruned["model"] if pruned["kind"] == "slim" else
                            app_logic.keras_slim_of(workspace.runner(token, loaded, "iterative"),
                                                    spec_path))
                else:
                    slim = app_logic.slim_of(copy.deepcopy(pruned["model"]), loaded.model)
            except Exception as exc:  # noqa: BLE001 - e.g. a .pt2 graph with grouped convs
                slim_error = exc
        if slim is not None:
            pruned["slim"] = slim
    if slim is None:
        errors.show(f"The slim (smaller) model cannot be built: {app_logic.first_line(slim_error)}"
                    ". Exported programs fix the group count of grouped / depthwise "
                    "convolutions in their graph; upload the architecture with a state dict "
                    "instead to get a slim model. The sparse model's state dict (same shapes as "
                    "the original, pruned channels zero) is below.", slim_error)
        d1, _ = st.columns(2)
        d1.download_button("Sparse state dict (.safetensors)",
                           data=lambda: app_logic.export_bytes(pruned["model"], x,
                                                               "safetensors", folder),
                           file_name=f"{name}_sparse.safetensors",
                           mime="application/octet-stream", key="dl_sparse",
                           on_click="ignore")
        st.stop()
    slim_macs = None
    try:
        if keras_model:
            from uif_explorer.keras.macs import count_macs, count_params

            slim_macs = count_macs(slim, tuple(loaded.source.input_shape)) / 1e6
            slim_params = count_params(slim) / 1e6
        else:
            from uif_explorer.torch.macs import model_cost

            slim_cost = model_cost(copy.deepcopy(slim), x)
            slim_macs, slim_params = slim_cost.macs / 1e6, slim_cost.params / 1e6
    except Exception:  # noqa: BLE001 - the counts are informative only
        slim_params = pruned.get("params_m")
    st.markdown(f"**{pruned['source']}** of {loaded.title} (`{name}`).")
    cols = st.columns(3)
    cols[0].metric(score_title, f"{pruned['accuracy']:.2f} %", help=score_source, border=True)
    cols[1].metric("MACs", f"{slim_macs if slim_macs is not None else pruned['macs_m']:.3f} M",
                   delta=f"{loaded.summary.macs / 1e6:.3f} M before", delta_color="off",
                   delta_arrow="off", border=True)
    cols[2].metric("Params", f"{slim_params:.4f} M",
                   delta=f"{loaded.summary.params / 1e6:.4f} M before", delta_color="off",
                   delta_arrow="off", border=True)
    st.caption(f"{score_title}: {score_source}. MACs and params in millions, counted on the "
               f"slim model at input {loaded.summary.input_label} (batch 1).")

    st.subheader("Downloads", anchor=False)
    ofa_subnet = pruned.get("kind") == "ofa_subnet"
    base = f"{name}_ofa_subnet" if ofa_subnet else f"{name}_slim"
    if keras_model:
        d1, d2 = st.columns(2)
        d1.download_button("Slim Keras model (.keras)",
                           data=lambda: app_logic.keras_export_bytes(slim, folder),
                           file_name=f"{base}.keras", mime="application/octet-stream",
                           key="dl_keras", icon=":material/download:", on_click="ignore")
        if spec_path.is_file():
            d2.download_button("Spec (.json)", data=spec_path.read_bytes(),
                               file_name=f"{spec_path.stem}.spec.json", mime="application/json",
                               key="dl_spec", icon=":material/download:", on_click="ignore")
        st.caption("The .keras file loads with keras.saving.load_model(path, safe_mode=True): "
                   "it holds only built-in Keras layers with fewer filters.")
    else:
        d1, d2, d3 = st.columns(3)
        d1.download_button("Slim state dict (.safetensors)",
                           data=lambda: app_logic.export_bytes(slim, x, "safetensors", folder),
                           file_name=f"{base}.safetensors", mime="application/octet-stream",
                           key="dl_safetensors", icon=":material/download:", on_click="ignore")
        if spec_path.is_file() and ofa_subnet:
            d2.download_button("Subnet setting (.json)", data=spec_path.read_bytes(),
                               file_name=f"{name}_ofa_subnet.json", mime="application/json",
                               key="dl_spec", icon=":material/download:", on_click="ignore",
                               help="net id, subnet_setting, MACs, params and the ofa_args "
                               "that rebuild the subnet (ofa_app.rebuild_subnet).")
        elif spec_path.is_file():
            d2.download_button("Spec (.json)", data=spec_path.read_bytes(),
                               file_name=f"{spec_path.stem}.spec.json", mime="application/json",
                               key="dl_spec", icon=":material/download:", on_click="ignore")
        d3.download_button("TorchScript (.pt)",
                           data=lambda: app_logic.export_bytes(slim, x, "torchscript", folder),
                           file_name=f"{base}.torchscript.pt", mime="application/octet-stream",
                           key="dl_torchscript", icon=":material/download:", on_click="ignore")
        e1, e2, e3 = st.columns(3)
        e1.download_button("torch.export program (.pt2)",
                           data=lambda: app_logic.export_bytes(slim, x, "pt2", folder),
                           file_name=f"{base}.pt2", mime="application/octet-stream",
                           key="dl_pt2", icon=":material/download:", on_click="ignore")
        if e2.button("Make ONNX (checked with ONNX Runtime)", key="export_onnx_make"):
            with st.spinner("Exporting to ONNX and running it in ONNX Runtime..."):
                try:
                    pruned["onnx"] = app_logic.onnx_checked(slim, x, folder)
                except Exception as exc:  # noqa: BLE001 - shown with a fix, traceback to log
                    errors.show(f"ONNX export failed: {exc}. The other formats still work; "
                                "torch.export (.pt2) is the closest alternative.", exc)
        onnx = pruned.get("onnx")
        if onnx:
            e2.download_button("ONNX (.onnx)", data=onnx["bytes"], file_name=f"{base}.onnx",
                               mime="application/octet-stream", key="dl_onnx",
                               icon=":material/download:", on_click="ignore")
            e2.caption(f"ONNX Runtime check passed: relative error {onnx['error']:.1e} "
                       "(at most 1e-4 allowed) on the example input.")
        rebuild = ("Rebuilds from the original architecture + `ofa_model(**ofa_args)` + "
                   "`get_static_subnet(subnet_setting)` + the state dict." if ofa_subnet else
                   "The slim model rebuilds from the original architecture + the spec + the "
                   "slim state dict.")
        st.caption(f"{rebuild} ONNX files are verified with ONNX Runtime when they are made.")

    st.subheader("Report", anchor=False)
    if keras_model:
        before, after = app_logic.keras_out_widths(loaded.model), app_logic.keras_out_widths(slim)
    else:
        before, after = app_logic.out_widths(loaded.model), app_logic.out_widths(slim)
    report_json, report_csv = app_logic.report(
        {**{k: v for k, v in pruned.items() if k != "model"}, "data": score_source},
        before, after)
    if ofa_subnet:
        report_json, report_csv = _with_subnet_setting(
            report_json, report_csv, list(pruned.get("subnet_setting") or []),
            _setting_file(spec_path).get("ofa_args"))
    st.plotly_chart(charts.width_figure(before, after), key="export_widths")

    def report_html() -> str:
        from uif_explorer.io.workspace import Workspace

        figures = [charts.width_figure(before, after)]
        sens = app_logic.read_sens(Workspace(folder).sens(name))
        if sens and sens.get("groups"):
            figures.append(charts.sensitivity_figure(sens))
        if pruned.get("candidate") is not None:
            search = app_logic.read_search(Workspace(folder).search(name,
                                                                    pruned["removal_ratio"]))
            if search:
                figures.append(charts.candidates_figure(search))
        if ofa_subnet:
            evo = _subnet_search(folder, pruned)
            if evo:
                figures.append(charts.evolution_figure(evo, highlight=[pruned["net_id"]]))
        facts = {k: v for k, v in pruned.items()
                 if isinstance(v, (str, int, float)) and k != "finetune_serial"}
        if ofa_subnet:
            facts["subnet_setting"] = json.dumps(pruned.get("subnet_setting"))
        facts["score data"] = score_source
        return app_logic.html_report(f"UIF Explorer report: {name}", facts, figures)

    r1, r2, r3 = st.columns(3)
    r1.download_button("Report (.json)", data=report_json, file_name=f"{base}_report.json",
                       mime="application/json", key="dl_report_json", on_click="ignore")
    r2.download_button("Report (.csv)", data=report_csv, file_name=f"{base}_report.csv",
                       mime="text/csv", key="dl_report_csv", on_click="ignore")
    r3.download_button("Report with charts (.html)", data=report_html,
                       file_name=f"{base}_report.html", mime="text/html",
                       key="dl_report_html", on_click="ignore")

    st.subheader("Latency on this machine", anchor=False)
    if st.button("Measure latency", key="export_latency", icon=":material/timer:"):
        with st.spinner("Timing both models..."):
            if keras_model:
                pruned["latency"] = app_logic.measure_keras_latency(
                    {"original": loaded.model, "pruned": slim}, x)
            else:
                pruned["latency"] = app_logic.measure_latency(
                    {"original": copy.deepcopy(loaded.model), "pruned": copy.deepcopy(slim)}, x)
    lat = pruned.get("latency")
    if lat:
        l1, l2 = st.columns(2)
        l1.metric("Original", f"{lat['original']:.2f} ms", border=True)
        l2.metric("Pruned (slim)", f"{lat['pruned']:.2f} ms",
                  delta=f"{lat['original'] / max(lat['pruned'], 1e-9):.2f}x faster",
                  border=True)
        st.caption(f"Median of 10 forwards each, interleaved, batch 1 at input "
                   f"{loaded.summary.input_label}, measured on {app_logic.machine_note()}. "
                   "Other jobs on this machine add noise.")

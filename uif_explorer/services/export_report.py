"""The Export page's reports (JSON, CSV, HTML with charts) of a ``PrunedModel``, assembled
without streamlit: the page only offers them as downloads.

An OFA subnet's reports also carry what rebuilds it (``subnet_setting`` and ``ofa_args``), and
its HTML report plots the search it was picked from.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from uif_explorer.core.uncertainty import Measured, versus
from uif_explorer.services.pruned import OFA_SUBNET, PrunedModel


def report(facts: Mapping[str, Any], original_widths: Mapping[str, int],
           slim_widths: Mapping[str, int]) -> tuple[str, str]:
    """(JSON, CSV) report: the pruned model's numbers and per-layer widths / ratios."""
    rows = [{"layer": k, "channels_before": v, "channels_after": slim_widths.get(k, v),
             "ratio_removed": round(1 - slim_widths.get(k, v) / v, 4) if v else 0.0}
            for k, v in original_widths.items()]
    meta = {k: v for k, v in facts.items() if isinstance(v, (str, int, float, type(None)))}
    doc = {"format_version": 1, "kind": "uif-explorer-report", **meta, "layers": rows}
    buf = io.StringIO()
    pd.DataFrame(rows).to_csv(buf, index=False)
    return json.dumps(doc, indent=2), buf.getvalue()


def html_report(title: str, facts: Mapping[str, Any], figures: Sequence[Any]) -> str:
    """A self-contained HTML report: the facts as a table and the plotly figures (offline:
    plotly.js is embedded once)."""
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in facts.items())
    charts_html = "".join(
        fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title></head><body style='font-family:sans-serif'><h1>{html.escape(title)}</h1>"
            f"<table>{rows}</table>{charts_html}</body></html>")


def setting_file(path: Path) -> dict[str, Any]:
    """The saved subnet file (``ofa_app.save_subnet``), or {} when it is gone or unreadable."""
    try:
        return json.loads(Path(path).read_text()) if Path(path).is_file() else {}
    except (OSError, ValueError):
        return {}


def with_subnet_setting(report_json: str, report_csv: str, setting: list[dict[str, Any]],
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


def subnet_search(folder: Path, pruned: PrunedModel) -> dict[str, Any] | None:
    """The search an OFA subnet was picked from (its supernet's search holding its net id with
    the same setting; else the first holding its net id), or None when none is left."""
    from uif_explorer.services import ofa_app

    fallback = None
    for ref in ofa_app.list_supernets(folder):
        if str(ref.path) != pruned.supernet:
            continue
        for search in ofa_app.list_searches(ref, folder):
            evo = ofa_app.read_search(search.path)
            for rec in (evo or {}).get("history", []):
                if rec.get("net_id") == pruned.net_id:
                    if rec.get("subnet_setting") == pruned.subnet_setting:
                        return evo
                    fallback = fallback or evo
    return fallback


def table_reports(pruned: PrunedModel, before: Mapping[str, int], after: Mapping[str, int],
                  score_source: str, original: Mapping[str, Any] | None = None
                  ) -> tuple[str, str]:
    """The (JSON, CSV) reports of a pruned model whose layers went from ``before`` to
    ``after`` output channels (OFA subnets: with their setting); ``original``: the unpruned
    model's score with the same protocol (:func:`original_facts`)."""
    report_json, report_csv = report({**pruned.facts(), "data": score_source, **(original or {})},
                                     before, after)
    if pruned.kind == OFA_SUBNET:
        report_json, report_csv = with_subnet_setting(
            report_json, report_csv, list(pruned.subnet_setting or []),
            setting_file(Path(pruned.spec_path)).get("ofa_args"))
    return report_json, report_csv


def html_of(pruned: PrunedModel, before: Mapping[str, int], after: Mapping[str, int],
            folder: Path, score_source: str, original: Mapping[str, Any] | None = None) -> str:
    """The HTML report: facts, the widths chart, and the analysis / search behind the model."""
    from uif_explorer.io.workspace import Workspace
    from uif_explorer.present import charts
    from uif_explorer.services.analysis import read_search, read_sens

    name = pruned.model_name
    figures = [charts.width_figure(before, after)]
    sens = read_sens(Workspace(folder).sens(name))
    if sens and sens.get("groups"):
        figures.append(charts.sensitivity_figure(sens))
    if pruned.candidate is not None:
        search = read_search(Workspace(folder).search(name, pruned.removal_ratio))
        if search:
            figures.append(charts.candidates_figure(search))
    facts = {k: v for k, v in pruned.facts().items() if v is not None}
    if pruned.kind == OFA_SUBNET:
        evo = subnet_search(folder, pruned)
        if evo:
            figures.append(charts.evolution_figure(evo, highlight=[pruned.net_id]))
        facts["subnet_setting"] = json.dumps(pruned.subnet_setting)
    facts["score data"] = score_source
    facts.update(original or {})
    return html_report(f"UIF Explorer report: {name}", facts, figures)


# -- the protocol beside every score -------------------------------------------------------------
def calibrated_in(score_source: str) -> bool:
    """Whether a pruned model was scored after BatchNorm re-estimation: its protocol ends its
    ``score_source`` (``services.pruning_jobs``, the OFA page's calibration likewise)."""
    return any(w in score_source for w in ("after BN re-estimation", "after BatchNorm calib"))


def pruned_protocol(pruned: PrunedModel) -> str:
    """What the pruned model's score means, in words: its ``score_source`` (data and protocol;
    a fine-tune in the app scores the tuned model with the same protocol) and whether it was
    measured after that fine-tune."""
    if pruned.accuracy_before_ft is None:
        return pruned.score_source
    return f"{pruned.score_source}, measured after fine-tuning"


def original_facts(score: float, images: int, protocol: str) -> dict[str, Any]:
    """The unpruned model's score for the reports, with its protocol."""
    return {"original_accuracy": round(float(score), 4), "original_images": int(images),
            "original_protocol": protocol}


def int8_lines(report: Any) -> list[str]:
    """The int8 table's protocol, and fp32 vs int8 with what the noise says of it (when the
    check images have labels)."""
    a = report.agreement
    lines = [f"Protocol: both files scored as they are (no BN re-estimation: the statistics "
             f"are in the files) on the first {a.images} evaluation images."]
    if a.fp32_accuracy is not None and a.int8_accuracy is not None:
        int8 = Measured.of(a.int8_accuracy, a.images, percent=True)
        fp32 = Measured.of(a.fp32_accuracy, a.images, percent=True)
        lines.append(f"int8 top-1 {int8.text()}: {versus(int8, fp32, 'fp32')}.")
    return lines


def make_int8(backend: Any, model: Any, source: Any, ds: Any, folder: Path, images: int,
              path: Path) -> Any:
    """Quantize ``model`` (the slim one) to ``backend.int8_format`` at ``path``: calibrated on
    the workspace's calibration images, checked on the first ``images`` evaluation images
    (scored with their labels when there are some). Returns the ``QuantizationReport``."""
    from uif_explorer.services import eval_data

    if ds is None and not eval_data.bundled_fits(source):
        raise ValueError(f"Expected evaluation data that fits the model's input "
                         f"{source.input_label}. Received: none (the bundled 28x28 data does "
                         "not fit); add an .npz or image folders first.")
    if source.inputs:
        raise ValueError(f"Expected a model with one input for int8 (the quantizer feeds one "
                         f"tensor). Received: {len(source.inputs)} inputs; quantize the fp32 "
                         "ONNX file with your own calibration data reader.")
    calib = eval_data.calibration_images(folder, ds, source)
    x, y = eval_data.arrays(folder, ds or eval_data.DataSource(), source, images)
    return backend.quantize_int8(model, backend.example_input(source.input_shape), calib,
                                 Path(path), x, y)


def int8_table(report: Any) -> pd.DataFrame:
    """fp32 and int8 side by side (strings): file size, agreement with fp32 on the check
    images, and top-1 accuracy on them when the data has labels."""
    a = report.agreement
    rows = [("file size (MB)", f"{report.fp32_bytes / 1e6:.3f}",
             f"{report.int8_bytes / 1e6:.3f} ({report.size_ratio:.1f}x smaller)"),
            (f"same top-1 class as fp32 ({a.images} images)", "100.0 %",
             f"{a.top1_agreement * 100:.1f} %"),
            ("largest output difference from fp32", "0", f"{a.max_abs_diff:.3g}")]
    if a.fp32_accuracy is not None and a.int8_accuracy is not None:
        rows.append((f"top-1 accuracy on {a.images} evaluation images",
                     f"{a.fp32_accuracy:.2f} %", f"{a.int8_accuracy:.2f} %"))
    return pd.DataFrame(rows, columns=["", "fp32", "int8"])


def int8_tolerance(report: Any) -> str:
    """The tolerance the int8 file was checked against, and the verdict, in one sentence."""
    t = report.tolerance
    verdict = "passed" if report.passed else "FAILED: " + "; ".join(report.failures())
    return (f"Checked before writing: int8 must pick fp32's top-1 class on at least "
            f"{t.min_top1_agreement:.0%} of the images and, with labels, lose at most "
            f"{t.max_accuracy_drop:g} accuracy points ({verdict}). The fp32 size is that of the "
            f"fp32 {'ONNX' if report.runtime == 'onnxruntime' else 'TFLite'} file.")


# -- the latency table ----------------------------------------------------------------------------
ORIGINAL, PRUNED = "original", "pruned (slim)"


def int8_files(report: Any) -> dict[str, Path]:
    """The files of an int8 handoff the Export page times beside the models: the slim
    model's fp32 export (when kept) and its int8 file."""
    named = {"pruned, fp32 file": report.fp32_path, "pruned, int8 file": report.int8_path}
    return {k: Path(v) for k, v in named.items() if v and Path(v).is_file()}


def latency_table(lat: Mapping[str, float], runs_in: Mapping[str, str]) -> pd.DataFrame:
    """Every timed variant: what ran it, its median ms (batch 1), the speed-up over the
    original model."""
    base = lat.get(ORIGINAL)
    rows = [(name, runs_in.get(name, ""), f"{ms:.3f}",
             f"{base / max(ms, 1e-9):.2f}x" if base else "") for name, ms in lat.items()]
    return pd.DataFrame(rows, columns=["variant", "runs in", "median ms", "vs original"])

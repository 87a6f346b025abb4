"""What the app's pages compute, without streamlit: data presets, evaluation, reading the
workspace files, slim conversion, reports and latency. Pages call these; tests call them too.
"""

from __future__ import annotations

import copy
import io
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from uif_explorer import data
from uif_explorer.core.runner import SEARCH_KIND
from uif_explorer.core.sensitivity import SENS_KIND
from uif_explorer.io.workspace import WorkspaceError, read_json


@dataclass(frozen=True)
class Preset:
    """A sensitivity setting the page offers: evaluation images and channel ratios."""

    label: str
    images: int
    ratios: tuple[float, ...]


SENS_PRESETS = (
    Preset("quick: 200 images, ratios 0.3/0.6", 200, (0.3, 0.6)),
    Preset("standard: 500 images, ratios 0.2/0.4/0.6/0.8", 500, (0.2, 0.4, 0.6, 0.8)),
    Preset("full: 2,000 images, ratios 0.1 ... 0.9", 2000,
           (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)),
)
IMAGE_CHOICES = (64, 200, 500, 1000, 2000)
CALIB_BATCHES = 4  # adaptive-BN batches of 64 training images per candidate


def data_source(images: int) -> str:
    """Where an accuracy comes from, for the page's captions."""
    return f"top-1 on the first {images:,} images of the bundled Fashion-MNIST test subset"


def test_loader(images: int, batch_size: int = 256):
    return data.torch_loader("test", limit=int(images), batch_size=batch_size)


def calib_loader(batch_size: int = 64):
    return data.torch_loader("train", limit=CALIB_BATCHES * batch_size, batch_size=batch_size,
                             shuffle=False)


def accuracy(model: nn.Module, images: int) -> float:
    """Top-1 accuracy (%) of ``model`` on the first ``images`` bundled test images."""
    from uif_explorer.torch.evaluation import top1_accuracy

    return float(top1_accuracy(model, test_loader(images)))


# -- workspace files -----------------------------------------------------------------------
def read_sens(path: Path) -> dict[str, Any] | None:
    """A ``.sens`` file (complete or not), or None when absent or unreadable."""
    try:
        return read_json(Path(path), kind=SENS_KIND) if Path(path).exists() else None
    except (WorkspaceError, OSError, ValueError):
        return None


def read_search(path: Path) -> dict[str, Any] | None:
    try:
        return read_json(Path(path), kind=SEARCH_KIND) if Path(path).exists() else None
    except (WorkspaceError, OSError, ValueError):
        return None


def sens_progress(sens: dict[str, Any] | None) -> tuple[int, int]:
    """(evaluations saved, evaluations in all) of an analysis file, baseline included."""
    if not sens:
        return 0, 0
    prunable = [g for g in sens["groups"] if g.get("prunable", True)]
    total = len(prunable) * len(sens["ratios"]) + 1
    done = sum(len(g["curve"]) for g in prunable) + (sens.get("baseline") is not None)
    return done, total


def candidates_table(search: dict[str, Any]) -> pd.DataFrame:
    """One row per candidate: id, MACs (M), params (M), MACs removed (%), score."""
    best = search.get("ranking", [None])[0] if search.get("ranking") else None
    rows = [{
        "id": int(c["id"]),
        "macs_m": round(float(c["macs"]), 4),
        "params_m": round(float(c["params"]), 4),
        "removed_pct": round(100 * float(c.get("removal", 0.0)), 2),
        "score": None if c.get("score") is None else round(float(c["score"]), 3),
        "best": c["id"] == best,
    } for c in search.get("candidates", [])]
    return pd.DataFrame(rows, columns=["id", "macs_m", "params_m", "removed_pct", "score",
                                       "best"])


def candidate_ratios_table(search: dict[str, Any], ids: Sequence[int]) -> pd.DataFrame:
    """Per prunable group (rows) the fraction of channels removed by each chosen candidate."""
    by_id = {int(c["id"]): c for c in search.get("candidates", [])}
    rows = []
    for g in search.get("groups", []):
        if not g.get("prunable", True):
            continue
        row = {"group": g["id"], "name": g["name"], "channels": g["num_channels"]}
        for cid in ids:
            c = by_id.get(int(cid))
            if c is not None:
                row[f"candidate {cid}"] = float(c.get("ratios", {}).get(str(g["id"]), 0.0))
        rows.append(row)
    return pd.DataFrame(rows)


# -- models ------------------------------------------------------------------------------------
def is_sparse(model: nn.Module) -> bool:
    from uif_explorer.torch.apply import MASK_SUFFIX

    return any(name.endswith(MASK_SUFFIX) for name, _ in model.named_buffers())


def slim_of(model: nn.Module, original: nn.Module) -> nn.Module:
    """The slim version of a pruned model (a sparse one is sliced; a slim one returned)."""
    if not is_sparse(model):
        return model
    from uif_explorer.torch.apply import make_slim, slim_state_dict

    slim = make_slim(original, model.uif_capture, model.uif_plan)
    slim.load_state_dict(slim_state_dict(model))
    return slim.eval()


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def export_bytes(model: nn.Module, inputs: Any, fmt: str, workdir: Path) -> bytes:
    """The file ``export_torch`` writes, as bytes (written under ``workdir/exports``)."""
    from uif_explorer.torch.export import export_torch

    suffix = {"state_dict": ".pth", "safetensors": ".safetensors", "pt2": ".pt2",
              "onnx": ".onnx", "torchscript": ".torchscript.pt"}[fmt]
    path = Path(workdir) / "exports" / f"slim{suffix}"
    export_torch(copy.deepcopy(model), inputs, fmt, path)
    return path.read_bytes()


def out_widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv and linear layer, by module name."""
    widths = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            widths[name] = int(m.weight.shape[1] if m.transposed else m.weight.shape[0])
        elif isinstance(m, nn.Linear):
            widths[name] = int(m.weight.shape[0])
    return widths


def report(pruned: dict[str, Any], original_widths: dict[str, int],
           slim_widths: dict[str, int]) -> tuple[str, str]:
    """(JSON, CSV) report: the pruned model's numbers and per-layer widths / ratios."""
    rows = [{"layer": k, "channels_before": v, "channels_after": slim_widths.get(k, v),
             "ratio_removed": round(1 - slim_widths.get(k, v) / v, 4) if v else 0.0}
            for k, v in original_widths.items()]
    meta = {k: v for k, v in pruned.items() if isinstance(v, (str, int, float, type(None)))}
    doc = {"format_version": 1, "kind": "uif-explorer-report", **meta, "layers": rows}
    buf = io.StringIO()
    pd.DataFrame(rows).to_csv(buf, index=False)
    return json.dumps(doc, indent=2), buf.getvalue()


# -- latency -----------------------------------------------------------------------------------
def machine_note() -> str:
    cpu = platform.processor() or platform.machine()
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, batch 1, CPU")


def measure_latency(models: dict[str, nn.Module], inputs: torch.Tensor, repeats: int = 10,
                    warmup: int = 2, clock: Callable[[], float] = time.perf_counter
                    ) -> dict[str, float]:
    """Median milliseconds per forward of each model, runs interleaved (batch 1)."""
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for m in models.values():
                m.eval()(inputs)
        for _ in range(repeats):
            for name, m in models.items():
                start = clock()
                m(inputs)
                times[name].append((clock() - start) * 1000.0)
    return {name: statistics.median(v) for name, v in times.items()}


# -- formatted numbers shown by the pages (one place, so tests compare the same strings) -----
def preview_metrics(preview: Any, images: int | None,
                    label_free: bool = False) -> dict[str, str]:
    """Metric label -> value of a ``runner.plan`` preview, with units (a label-free score is
    called a score, never an accuracy)."""
    out = {
        "MACs after pruning": f"{preview.macs:.3f} M",
        "Params after pruning": f"{preview.params:.4f} M",
        "MACs removed": f"{100 * preview.achieved_removal:.1f} %",
    }
    if preview.predicted_score is not None:
        label = "Predicted label-free score" if label_free else "Predicted accuracy"
        out[label] = f"{preview.predicted_score:.2f} %"
    return out


def settings_path(sens_path: Path) -> Path:
    """Sidecar of an analysis started by the app: the images it is scored on."""
    return Path(sens_path).with_suffix(".sens-settings.json")


def write_settings(sens_path: Path, images: int, ratios: Sequence[float],
                   score: str | None = None) -> None:
    """Record the images and ratios of a run started by the app and, when given, what its
    score is (``Evaluator.describe()``: top-1 on which data, or the label-free score)."""
    from uif_explorer.io.workspace import atomic_write_json

    doc: dict[str, Any] = {"format_version": 1, "images": int(images),
                           "ratios": [float(r) for r in ratios]}
    if score:
        doc["score"] = str(score)
    atomic_write_json(settings_path(sens_path), doc)


def read_settings(sens_path: Path) -> dict[str, Any]:
    try:
        return json.loads(settings_path(sens_path).read_text())
    except (OSError, ValueError):
        return {}


def onnx_checked(model: nn.Module, inputs: Any, workdir: Path) -> dict[str, Any]:
    """ONNX bytes of ``model`` and ONNX Runtime's relative error vs PyTorch (checked <= 1e-4)."""
    from uif_explorer.torch.export import check_onnx

    blob = export_bytes(model, inputs, "onnx", workdir)
    path = Path(workdir) / "exports" / "slim.onnx"
    return {"bytes": blob, "error": check_onnx(path, copy.deepcopy(model).eval(), inputs)}


def latest_spec(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The workspace's newest spec (``latest_spec``) and its contents, or None."""
    from uif_explorer.io.workspace import Workspace

    try:
        path = Workspace(folder).latest_spec()
        return path, read_json(path, kind="uif-explorer-spec")
    except (WorkspaceError, OSError, ValueError):
        return None


def html_report(title: str, facts: dict[str, Any], figures: Sequence[Any]) -> str:
    """A self-contained HTML report: the facts as a table and the plotly figures (offline:
    plotly.js is embedded once)."""
    import html

    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in facts.items())
    charts_html = "".join(
        fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title></head><body style='font-family:sans-serif'><h1>{html.escape(title)}</h1>"
            f"<table>{rows}</table>{charts_html}</body></html>")


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (pages show it; the traceback goes to the log)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else "no details"


# -- Keras counterparts of the export helpers (Keras is imported only when called) ------------
def keras_export_bytes(model: Any, workdir: Path) -> bytes:
    """The ``.keras`` file of ``model`` (``uif_explorer.keras.export_keras``), as bytes."""
    from uif_explorer.keras.export import export_keras

    path = export_keras(model, Path(workdir) / "exports" / "slim.keras")
    return path.read_bytes()


def keras_out_widths(model: Any) -> dict[str, int]:
    """Output channels of every Conv / Dense layer of a Keras model, by layer name."""
    widths = {}
    for layer in model.layers:
        config = layer.get_config()
        for key in ("filters", "units"):
            if isinstance(config.get(key), int):
                widths[layer.name] = int(config[key])
    return widths


def keras_slim_of(runner: Any, spec_path: str | Path) -> Any:
    """The slim Keras model of a spec (the runner's model with fewer filters)."""
    return runner.prune(spec_path=spec_path, mode="slim")


def measure_keras_latency(models: dict[str, Any], inputs: Any, repeats: int = 10,
                          warmup: int = 2, clock: Callable[[], float] = time.perf_counter
                          ) -> dict[str, float]:
    """Median milliseconds per ``model(x, training=False)`` of each Keras model, interleaved."""
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(warmup):
        for m in models.values():
            m(inputs, training=False)
    for _ in range(repeats):
        for name, m in models.items():
            start = clock()
            m(inputs, training=False)
            times[name].append((clock() - start) * 1000.0)
    return {name: statistics.median(v) for name, v in times.items()}


def plan_preview(runner: Any, ratio: float) -> tuple[Any, int]:
    """``runner.plan(ratio)`` and the channel rounding it used: 2 (the runners' default), or 1
    when rounding to pairs of channels cannot land within 1 point (small models, few groups).
    Raises ``PlanError`` when neither lands; pages show its message."""
    from uif_explorer.core.plan import PlanError

    try:
        return runner.plan(ratio), 2
    except PlanError:
        return runner.plan(ratio, channel_divisible=1), 1


# -- fine-tuning jobs (run by the Sensitivity page in the background) ---------------------------
def torch_finetune_job(pruned: nn.Module, original: nn.Module, ev: Any, epochs: int, lr: float,
                       batches: int) -> Callable[[Any], dict[str, Any]]:
    """A job fine-tuning a private copy of ``pruned`` on the bundled training images with
    distillation from ``original``; returns the tuned model and its score on ``ev``."""
    model, teacher = copy.deepcopy(pruned), copy.deepcopy(original)

    def work(job: Any) -> dict[str, Any]:
        from uif_explorer.torch.finetune import fine_tune

        loader = data.torch_loader("train", batch_size=128, limit=batches * 128)
        history = fine_tune(model, loader, epochs=epochs, lr=lr, teacher=teacher,
                            max_batches=batches, progress=job.progress)
        return {"model": model, "accuracy": ev.score(model), "history": history,
                "epochs": epochs, "lr": lr}

    return work


def keras_finetune_job(runner: Any, spec_path: str, ev: Any, epochs: int, lr: float,
                       batches: int) -> Callable[[Any], dict[str, Any]]:
    """The same for a Keras model: a fresh sparse copy rebuilt from the spec (Keras models do
    not deep-copy reliably), trained with ``fit()`` (its masks keep pruned channels at zero)."""

    def work(job: Any) -> dict[str, Any]:
        from uif_explorer.keras.finetune import fine_tune

        model = runner.prune(spec_path=spec_path, mode="sparse")
        x, y = data.numpy_dataset("train", limit=batches * 128)
        history = fine_tune(model, x, y, epochs=epochs, lr=lr, batch_size=128,
                            max_batches=batches, progress=job.progress)
        return {"model": model, "accuracy": ev.score(model), "history": history,
                "epochs": epochs, "lr": lr}

    return work

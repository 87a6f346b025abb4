"""The Sensitivity and One-step pages' decisions, without streamlit: presets, reading the
workspace files, the settings sidecar, when a run must start afresh, and the plan preview."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uif_explorer.core.runner import SEARCH_KIND
from uif_explorer.core.sensitivity import SENS_KIND
from uif_explorer.io.workspace import WorkspaceError, atomic_write_json, read_json


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


# -- workspace files -----------------------------------------------------------------------
def _read(path: Path, kind: str) -> dict[str, Any] | None:
    try:
        return read_json(Path(path), kind=kind) if Path(path).exists() else None
    except (WorkspaceError, OSError, ValueError):
        return None


def read_sens(path: Path) -> dict[str, Any] | None:
    """A ``.sens`` file (complete or not), or None when absent or unreadable."""
    return _read(path, SENS_KIND)


def read_search(path: Path) -> dict[str, Any] | None:
    """A ``.search`` file (complete or not), or None when absent or unreadable."""
    return _read(path, SEARCH_KIND)


def sens_progress(sens: Mapping[str, Any] | None) -> tuple[int, int]:
    """(evaluations saved, evaluations in all) of an analysis file, baseline included."""
    if not sens:
        return 0, 0
    prunable = [g for g in sens["groups"] if g.get("prunable", True)]
    total = len(prunable) * len(sens["ratios"]) + 1
    done = sum(len(g["curve"]) for g in prunable) + (sens.get("baseline") is not None)
    return done, total


def latest_spec(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The workspace's newest spec (``latest_spec``) and its contents, or None."""
    from uif_explorer.io.workspace import Workspace

    try:
        path = Workspace(folder).latest_spec()
        return path, read_json(path, kind="uif-explorer-spec")
    except (WorkspaceError, OSError, ValueError):
        return None


# -- the settings sidecar of a run started by the app ----------------------------------------
def settings_path(sens_path: Path) -> Path:
    """Sidecar of an analysis (or search) started by the app: the images it is scored on."""
    return Path(sens_path).with_suffix(".sens-settings.json")


def write_settings(sens_path: Path, images: int, ratios: Sequence[float],
                   score: str | None = None) -> None:
    """Record the images and ratios of a run started by the app and, when given, what its
    score is (``Evaluator.describe()``: top-1 on which data, or the label-free score)."""
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


def score_source(sens_path: Path) -> str:
    """What the scores of a run are, from its sidecar (a run made outside the app has none)."""
    from uif_explorer.services.eval_data import data_source

    found = read_settings(sens_path)
    if found.get("score"):
        return str(found["score"])
    if found.get("images"):
        return data_source(int(found["images"])) + ", in %"
    return "the data the analysis was run with (outside the app)"


# -- when a press of "Run" must start afresh instead of resuming ---------------------------
def analysis_needs_restart(sens_path: Path, ratios: Sequence[float], images: int,
                           score: str) -> bool:
    """Whether **Run analysis** must start afresh: the saved analysis is finished, or it was
    made with other ratios, images or scores (mixing them would give curves of two runs)."""
    existing = read_sens(sens_path)
    if existing is None:
        return False
    settings = read_settings(sens_path)
    return bool(existing.get("complete")
                or sorted(existing["ratios"]) != sorted(ratios)
                or settings.get("images") != images
                or settings.get("score", score) != score)


def search_needs_restart(search_path: Path, images: int, score: str) -> bool:
    """Whether **Run search** must start afresh: the saved candidates were scored on other
    images or another score (a finished search with the same ones is resumed: a no-op)."""
    existing = read_search(search_path)
    if existing is None:
        return False
    old = read_settings(search_path)
    return (existing.get("images") not in (None, images)
            or old.get("images") not in (None, images)
            or old.get("score", score) != score)


# -- the plan preview -----------------------------------------------------------------------
def plan_preview(runner: Any, ratio: float, target: str = "macs") -> tuple[Any, int]:
    """``runner.plan(ratio, target=target)`` and the channel rounding it used: the first of
    ``latency_target.divisors(target)`` that lands within 1 point (MACs: 2, the runners'
    default, then 1 for small models with few groups; latency: this CPU's vector width
    first). Raises ``PlanError`` when none lands; pages show its message."""
    from uif_explorer.core.plan import PlanError
    from uif_explorer.services.latency_target import divisors

    *coarse, last = divisors(target)
    for divisible in coarse:
        try:
            return runner.plan(ratio, channel_divisible=divisible, target=target), divisible
        except PlanError:
            continue
    return runner.plan(ratio, channel_divisible=last, target=target), last


def preview_metrics(preview: Any, images: int | None,
                    label_free: bool = False) -> dict[str, str]:
    """Metric label -> value of a ``runner.plan`` preview, with units (a label-free score is
    called a score, never an accuracy; the score is the corrected estimate, labelled so)."""
    out = {
        "MACs after pruning": f"{preview.macs:.3f} M",
        "Params after pruning": f"{preview.params:.4f} M",
        "MACs removed": f"{100 * preview.achieved_removal:.1f} %",
    }
    from uif_explorer.services.latency_target import latency_metric

    out.update(latency_metric(preview))  # beside MACs, when the target is latency
    value = preview.estimate if preview.estimate is not None else preview.predicted_score
    if value is not None:  # an estimate, never a prediction: the page says how far off it is
        label = "Estimated label-free score" if label_free else "Estimated accuracy"
        out[label] = f"{value:.1f} %"
    return out


def first_line(exc: BaseException | None, limit: int = 300) -> str:
    """The first line of an exception's message (pages show it; the traceback goes to the log)."""
    lines = str(exc).strip().splitlines() if exc is not None else []
    return lines[0][:limit] if lines else "no details"

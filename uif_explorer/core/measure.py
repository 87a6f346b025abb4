"""Measured previews: the actual plan scored on a private copy, cached per ratio.

``runner.plan(0.4)`` only *estimates* the score; ``runner.plan(0.4).measure(eval_fn, ...)``
applies the same plan to a copy (sparse: masked weights, no slim build needed), scores it
through the runner's own scoring hook with the given protocol, and caches the point in
``<workdir>/<model>.measured.json``. A later call with the same plan, weights and protocol is
instant, so a slider can ask again and the "MACs removed vs score" curve fills in.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from uif_explorer.core.estimate import pending_whole_model, record_whole_model
from uif_explorer.core.plan import PlanError, PruningPlan
from uif_explorer.core.scores import ScoreJob
from uif_explorer.core.sensitivity import predicted_score
from uif_explorer.core.uncertainty import Measured, take_images
from uif_explorer.io.workspace import (
    Workspace,
    atomic_write_json,
    format_ratio,
    read_json,
    sanitize_name,
)

if TYPE_CHECKING:  # the runner imports this module; only type names are needed here
    from uif_explorer.core.pruner import BasePruner
    from uif_explorer.core.runner import RunnerBase
    from uif_explorer.core.runner_files import PlanPreview

MEASURED_KIND = "uif-explorer-measured"


def measured_path(workspace: Workspace, model: str) -> Path:
    """``<workdir>/<model>.measured.json``: every measured plan of one model."""
    return workspace.root / f"{sanitize_name(model)}.measured.json"


def plan_digest(plan: PruningPlan) -> str:
    """Which channels the plan keeps, as 12 hex digits (two equal plans share it)."""
    kept = {str(g): [int(i) for i in k] for g, k in sorted(plan.kept.items())}
    return hashlib.sha1(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


def data_key(*args: Any) -> str:
    """Which images a score was measured on, as 12 hex digits: arrays and tensors by shape and
    contents (first and last 256 kB, also inside a loader's dataset), loaders by batch size,
    other objects by type and length. Two calls on other images (or other calibration
    batches) get other keys, so a cached point is never shown for data it was not made on."""
    h = hashlib.sha1()

    def feed(obj: Any, depth: int = 0) -> None:
        if hasattr(obj, "detach"):  # a torch tensor
            obj = obj.detach().cpu().numpy()
        elif hasattr(obj, "numpy") and not isinstance(obj, np.ndarray):  # a tf tensor
            obj = np.asarray(obj.numpy())
        if isinstance(obj, np.ndarray):
            raw = np.ascontiguousarray(obj).view(np.uint8).reshape(-1)
            h.update(f"{obj.shape}{obj.dtype}".encode() + raw[:1 << 18].tobytes()
                     + raw[-(1 << 18):].tobytes())
            return
        if isinstance(obj, (str, int, float, bool, type(None))):
            h.update(repr(obj).encode())
            return
        size = obj.__len__() if hasattr(obj, "__len__") else None
        h.update(f"{type(obj).__name__}:{size}:{getattr(obj, 'batch_size', '')}".encode())
        inner = [getattr(obj, a) for a in ("dataset", "tensors") if hasattr(obj, a)]
        if isinstance(obj, (tuple, list)) and len(obj) <= 16:
            inner += list(obj)
        for item in inner if depth < 4 else ():
            feed(item, depth + 1)

    feed(args)
    return h.hexdigest()[:12]


def point_protocol(job: ScoreJob) -> dict[str, Any]:
    """A measured point's protocol: the functions (``job.protocol``) and the images they ran
    on (:func:`data_key` of the evaluation and calibration arguments)."""
    calib = job.calib_args if job.calibration_fn is not None else ()
    return {**job.protocol, "data": data_key(job.eval_args, calib)}


def _same(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> bool:
    return a is not None and json.loads(json.dumps(a)) == json.loads(json.dumps(b))


@dataclass(frozen=True)
class MeasuredPreview:
    """One plan, measured: the score with its image count, 95 % interval and protocol."""

    removal_ratio: float
    achieved_removal: float
    score: float
    images: int | None
    protocol: dict[str, Any]
    estimate: float | None = None  # the instant estimate shown beside it, for comparison
    cached: bool = False
    path: Path | None = field(default=None, compare=False)

    @property
    def measured(self) -> Measured:
        return Measured.of(self.score, self.images)

    @property
    def interval(self) -> tuple[float, float] | None:
        """The Wilson 95 % interval on a known number of images, in the score's scale
        (0..100 or 0..1, :func:`uncertainty.is_percent`)."""
        return self.measured.interval

    def text(self) -> str:
        return f"measured {self.measured.text()}"


def read_points(path: Path) -> list[dict[str, Any]]:
    """The measured points saved in ``path`` (none when it does not exist)."""
    if not path.exists():
        return []
    return list(read_json(path, kind=MEASURED_KIND).get("points", []))


def _covers(point: Mapping[str, Any] | None, protocol: Mapping[str, Any]) -> bool:
    """Whether a point's protocol agrees with every entry of ``protocol`` (an analysis'
    protocol names the functions only; a point's also names its images)."""
    if point is None:
        return False
    point, protocol = json.loads(json.dumps(point)), json.loads(json.dumps(protocol))
    return all(point.get(k) == v for k, v in protocol.items())


def matching_points(path: Path, weights: str, protocol: Mapping[str, Any] | None = None
                    ) -> list[dict[str, Any]]:
    """Points made on ``weights`` (and with ``protocol`` when given): comparable scores."""
    return [p for p in read_points(path) if p.get("weights_digest") == weights
            and (protocol is None or _covers(p.get("protocol"), protocol))]


def find_point(path: Path, weights: str, protocol: Mapping[str, Any], removal_ratio: float,
               digest: str) -> dict[str, Any] | None:
    """The saved point of this plan (ratio and kept channels), weights and protocol, if any:
    what a page shows at once instead of measuring again."""
    key = format_ratio(removal_ratio)
    return next((p for p in matching_points(path, weights, protocol)
                 if p.get("ratio_key") == key and p.get("plan_digest") == digest), None)


def _save_point(path: Path, model: str, point: dict[str, Any]) -> None:
    """Add (or replace) one point; the file is rewritten atomically."""
    data = (read_json(path, kind=MEASURED_KIND) if path.exists() else
            {"format_version": 1, "kind": MEASURED_KIND, "model": model, "points": []})
    key = (point["ratio_key"], point["plan_digest"], point["weights_digest"])
    data["points"] = [p for p in data["points"]
                      if (p.get("ratio_key"), p.get("plan_digest"), p.get("weights_digest"))
                      != key or not _same(p.get("protocol"), point["protocol"])] + [point]
    atomic_write_json(path, data)


def measure_plan(runner: RunnerBase, pr: BasePruner, preview: PlanPreview, job: ScoreJob
                 ) -> MeasuredPreview:
    """Score ``preview.plan`` on a sparse copy with ``job``'s protocol; cached per ratio and
    plan. The additive prediction is saved beside the score: it is what
    :mod:`uif_explorer.core.estimate` corrects."""
    plan, removal_ratio = preview.plan, preview.removal_ratio
    achieved_removal, estimate = preview.achieved_removal, preview.estimate
    path = measured_path(runner.workspace, runner.name)
    weights, digest = pr.weights_digest(), plan_digest(plan)
    protocol = point_protocol(job)
    found = find_point(path, weights, protocol, removal_ratio, digest)
    if found is not None:
        return MeasuredPreview(removal_ratio, found["achieved_removal"], found["score"],
                               found.get("images"), protocol, estimate, True, path)
    what = f"the plan at {removal_ratio:.0%} removed"
    take_images()
    score = next(s for _, s, _ in runner._score_plans(pr, [(plan, what)], job))
    images = take_images()  # known when scored in this process by a scorer that says so
    measured = Measured.of(score, images)
    _save_point(path, runner.name, {
        "ratio_key": format_ratio(removal_ratio), "removal_ratio": float(removal_ratio),
        "achieved_removal": float(achieved_removal), "plan_digest": digest,
        "weights_digest": weights, "protocol": protocol, "score": float(score),
        "images": images, "interval": list(measured.interval) if measured.interval else None,
        "additive": preview.predicted_score,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    return MeasuredPreview(removal_ratio, achieved_removal, score, images, protocol, estimate,
                           False, path)


def measure_whole_model(runner: RunnerBase, pr: BasePruner, sens: dict[str, Any], path: Path,
                        job: ScoreJob, executor: object = None,
                        progress: Callable[[int, int, dict], None] | None = None) -> None:
    """The analysis' last steps: a few whole-model plans (``sens['whole_model']``) allocated
    from the finished curves and scored with the analysis' own protocol, so the instant
    estimate can be corrected and its error stated. Saved after each one (resumable).

    Skipped for a reused file made on other weights or with another protocol: its curves
    describe other scores than this call would measure.
    """
    pending = pending_whole_model(sens)
    if not pending or not sens.get("complete") or runner._stale(sens, pr.weights_digest(),
                                                                 job.protocol):
        return
    items, made = [], []
    for ratio in pending:
        try:
            with warnings.catch_warnings():  # a ratio the curves cannot reach: closest plan
                warnings.simplefilter("ignore")
                plan = runner._allocate(pr, sens, ratio, 2, strict=False)
        except PlanError as exc:
            record_whole_model(sens, ratio, 0.0, None, None, None, error=str(exc))
            continue
        gids = pr.graph.groups
        ratios = {gid: 1 - len(k) / gids[gid].num_channels for gid, k in plan.kept.items()}
        made.append((ratio, pr.removal(plan), predicted_score(sens, ratios)))
        items.append((plan, f"the whole-model plan at {ratio:.0%} removed"))
    atomic_write_json(path, sens)

    def record(index: int, score: float, _pid: int | None) -> dict[str, Any]:
        ratio, achieved, additive = made[index]
        images = take_images() or sens.get("images")  # the baseline's count, same images
        record_whole_model(sens, ratio, achieved, additive, score, images)
        atomic_write_json(path, sens)
        return {"whole_model": ratio, "achieved_removal": achieved, "score": score}

    runner._run(pr, items, job, executor, progress, record)

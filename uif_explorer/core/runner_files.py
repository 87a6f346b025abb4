"""What every runner keeps between calls: its name, workspace files and plan helpers.

:class:`RunnerFiles` is the state half of :class:`~uif_explorer.core.runner.RunnerBase`:
naming, loading and checking ``.sens`` / ``.search`` files (architecture, weights and scoring
protocol), turning an analysis into a plan, previews and specs. Its parts: the search file's
candidates (:mod:`uif_explorer.core.search_files`) and the tables and reprs
(:mod:`uif_explorer.core.runner_views`). The loop that fills the files is in
:mod:`uif_explorer.core.runner`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from uif_explorer.core.allocation import (
    MAX_GROUP_RATIO,
    bisect_plan,
    check_landing,
)
from uif_explorer.core.estimate import estimate, measured_points, sens_points
from uif_explorer.core.latency import LatencyModel, bisect_latency
from uif_explorer.core.measure import (
    MeasuredPreview,
    matching_points,
    measure_plan,
    measured_path,
)
from uif_explorer.core.plan import PlanError, PruningPlan
from uif_explorer.core.pruner import BasePruner
from uif_explorer.core.runner_views import Progress as Progress  # re-exported
from uif_explorer.core.runner_views import RunnerViews
from uif_explorer.core.scores import ScoreJob
from uif_explorer.core.search_files import SEARCH_KIND, SearchFiles
from uif_explorer.core.sensitivity import (
    SENS_KIND,
    max_drop,
    predicted_score,
    ratios_for_threshold,
)
from uif_explorer.io.workspace import Workspace, WorkspaceError, atomic_write_json, read_json

MAX_SUBNETS = 100_000
TARGETS = ("macs", "latency")


def check_target(target: object) -> str:
    """``'macs'`` (the ratio is a fraction of the MACs) or ``'latency'`` (of the latency
    predicted by this machine's measured table, :mod:`uif_explorer.core.latency`)."""
    if target not in TARGETS:
        raise ValueError(f"Expected target in {TARGETS}. Received: target={target!r}")
    return str(target)


def say(msg: str) -> None:
    print(f"[uif-explorer] {msg}", file=sys.stderr, flush=True)


def kept_lists(plan: PruningPlan) -> dict[int, list[int]]:
    return {int(g): [int(i) for i in k] for g, k in plan.kept.items()}


def check_num_subnet(num_subnet: object) -> None:
    if isinstance(num_subnet, bool) or not isinstance(num_subnet, (int, np.integer)) \
            or not 1 <= num_subnet <= MAX_SUBNETS:
        raise ValueError(f"Expected num_subnet, the number of candidates, between 1 and "
                         f"{MAX_SUBNETS:,}. Received: num_subnet={num_subnet!r}")


def check_threshold(threshold: object) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not threshold >= 0:
        raise ValueError("Expected a threshold >= 0 (relative score drop). "
                         f"Received: threshold={threshold!r}")


def check_divisible(channel_divisible: object) -> None:
    if isinstance(channel_divisible, bool) or not isinstance(channel_divisible,
                                                             (int, np.integer)) \
            or channel_divisible < 1:
        raise ValueError("Expected channel_divisible, the multiple kept channel counts round "
                         f"to, an integer >= 1. Received: channel_divisible={channel_divisible!r}")


def _calibration(protocol: Mapping[str, Any]) -> tuple:
    return protocol.get("calibration"), bool(protocol.get("bn_reestimation"))


def describe_protocol(protocol: Mapping[str, Any]) -> str:
    calib = protocol.get("calibration")
    return (f"score {protocol.get('score')}, "
            + (f"calibration {calib}" if calib else "no calibration"))


@dataclass
class PlanPreview:
    """What a prune would do, computed without building anything (for sliders)."""

    removal_ratio: float
    achieved_removal: float
    macs: float  # millions
    params: float  # millions
    original_macs: float
    original_params: float
    predicted_score: float | None
    baseline: float | None
    groups: pd.DataFrame
    plan: PruningPlan
    # the additive prediction corrected by measured whole-model plans (core/estimate.py)
    estimate: float | None = None
    estimate_error: float | None = None  # its leave-one-out error on this model, in points
    estimate_label: str = "estimate"
    _measure: Callable | None = field(default=None, repr=False, compare=False)
    target: str = "macs"
    latency_ms: float | None = None  # predicted by the latency table (target='latency')
    original_latency_ms: float | None = None

    @property
    def ratio(self) -> float:
        """The Keras guide's name for ``removal_ratio``."""
        return self.removal_ratio

    def measure(self, eval_fn: Callable, args: tuple = (), calibration_fn: Callable | None = None,
                calib_args: tuple = ()) -> MeasuredPreview:
        """Score this very plan on a private sparse copy with the given protocol: the
        measured number (image count, 95 % interval) beside the estimate. Cached in
        ``<workdir>/<model>.measured.json`` per ratio, plan, weights and protocol."""
        if self._measure is None:
            raise PlanError("Expected a preview made by runner.plan(...); this one has no "
                            "runner to measure it with.")
        return self._measure(self, ScoreJob.of(eval_fn, args, calibration_fn, calib_args))


class RunnerFiles(RunnerViews, SearchFiles):
    """Workspace bookkeeping shared by every runner; ``pruner`` is a :class:`BasePruner`."""

    pruner: BasePruner
    name: str
    workspace: Workspace
    excludes: list
    criterion: str
    higher_is_better: bool

    def _init_common(self, pruner: BasePruner, model: Any, workdir: str | os.PathLike,
                     name: str | None, excludes: list, higher_is_better: bool,
                     criterion: str) -> None:
        """``name`` defaults to the architecture (class and graph digest), so a runner on
        fine-tuned weights or on the sparse model ``prune()`` returned finds its files."""
        self.pruner = pruner
        self.excludes = excludes
        self.higher_is_better = bool(higher_is_better)
        self.criterion = criterion
        self.name = name or f"{type(model).__name__}-{pruner.graph.graph_digest()[:6]}"
        self.workspace = Workspace(workdir)
        self._pruners: dict[tuple, BasePruner] = {}

    def _make_pruner(self, excludes: list) -> BasePruner:
        raise NotImplementedError

    latency_runtime = "eager"  # the runtime target='latency' is timed in (backend's choice)

    def _latency_model(self, pr: BasePruner) -> LatencyModel:
        """This machine's latency model of ``pr``'s graph: measured on first use (seconds to a
        minute), then read from the workspace; one per pruner and runtime."""
        cache = self.__dict__.setdefault("_latency_models", {})
        key = (id(pr), self.latency_runtime)
        if key not in cache:
            path = self.workspace.latency(self.name, self.latency_runtime)
            if not path.exists():
                say(f"measuring {self.name}'s layers in {self.latency_runtime} on this machine "
                    f"for target='latency' (once; saved in {path})")
            cache[key] = self._measure_latency(pr, path)
        return cache[key]

    def latency_table(self, remeasure: bool = False) -> LatencyModel:
        """This machine's latency model of the model (what ``target='latency'`` plans with):
        measured now when the workspace has none for this machine (or ``remeasure``: a table
        timed while the machine was busy), else read back. The app calls it in a background
        job so that its plan previews never time layers."""
        if remeasure:
            self.__dict__.pop("_latency_models", None)
            self.workspace.latency(self.name, self.latency_runtime).unlink(missing_ok=True)
        return self._latency_model(self.pruner)

    def _measure_latency(self, pr: BasePruner, path: Path) -> LatencyModel:
        """The backend's latency table of ``pr``, cached at ``path``."""
        raise PlanError(f"Expected target='macs': the {type(self).__name__} does not measure "
                        "latency. Received: target='latency'")

    def _pruner_for(self, excludes: Iterable[object] | None) -> BasePruner:
        if excludes is None or list(excludes) == self.excludes:
            return self.pruner
        key = tuple(e if isinstance(e, str) else id(e) for e in excludes)
        if key not in self._pruners:
            self._pruners[key] = self._make_pruner(list(excludes))
        return self._pruners[key]

    # -- files: which ones may be resumed or reused ---------------------------------------
    @staticmethod
    def _stale(data: Mapping[str, Any], weights: str, protocol: Mapping[str, Any]) -> list[str]:
        """Why ``data`` does not match this call: other weights, another calibration.

        The score function's name alone does not count (a lambda, or the function fixed and
        renamed after an error, as the resume hint invites): :meth:`_load_file` notes it.
        Files written before protocols were recorded match any protocol.
        """
        reasons = []
        if data.get("weights_digest") != weights:
            reasons.append("other weights")
        old = data.get("protocol")
        if old is not None and _calibration(old) != _calibration(protocol):
            reasons.append(f"another scoring protocol ({describe_protocol(old)}; this call: "
                           f"{describe_protocol(protocol)})")
        return reasons

    def _load_file(self, pr: BasePruner, path: Path, what: str, forced: bool, weights: str,
                   protocol: Mapping[str, Any]) -> dict | None:
        """The ``.sens`` / ``.search`` file to resume or reuse, or None to start afresh.

        A finished file made on other weights or with another protocol is reused with a
        note (the guide's iterative loop); an unfinished one is refused: resuming it would mix
        scores made two ways.
        """
        if forced or not path.exists():
            return None
        data = read_json(path, kind=SENS_KIND if what == "analysis" else SEARCH_KIND)
        if data.get("graph_digest") != pr.graph.graph_digest():
            raise WorkspaceError(
                f"{path} was made for another architecture or input signature (graph digest "
                f"{data.get('graph_digest')} != {pr.graph.graph_digest()}); pass forced=True "
                f"to redo the {what} for this model, or use another name= / workdir=."
            )
        reasons = self._stale(data, weights, protocol)
        if reasons and not data.get("complete"):
            raise WorkspaceError(
                f"{path} holds an unfinished {what} of {' and '.join(reasons)}; it cannot be "
                "resumed by this call. Pass forced=True to restart it."
            )
        if reasons:
            say(f"reusing the finished {what} {path}, made with {' and '.join(reasons)}; "
                "forced=True redoes it")
        old = (data.get("protocol") or {}).get("score")
        if old is not None and old != protocol.get("score"):
            say(f"{path} was scored by {old}, this call by {protocol.get('score')}; if they "
                "measure different things, forced=True starts afresh")
        return data

    def sensitivity(self, quiet: bool = False) -> dict[str, Any]:
        """The finished analysis of this architecture (a note when made on other weights)."""
        path = self.workspace.sens(self.name)
        if not path.exists():
            raise WorkspaceError(f"No analysis at {path}: run runner.ana(eval_fn, ...) first.")
        sens = read_json(path, kind=SENS_KIND)
        if sens.get("graph_digest") != self.pruner.graph.graph_digest():
            raise WorkspaceError(f"{path} was made for another architecture; run ana again "
                                 "with forced=True.")
        if not sens.get("complete"):
            raise WorkspaceError(f"The analysis in {path} is unfinished: run runner.ana(...) "
                                 "again to resume it.")
        if not quiet and sens.get("weights_digest") != self.pruner.weights_digest():
            say(f"reusing the finished analysis {path}, made on other weights of this "
                "architecture (the guide's iterative loop); channels are ranked by the "
                "current weights, so channels already zeroed are pruned first")
        return sens

    # -- plans --------------------------------------------------------------------------------
    def _allocate(self, pr: BasePruner, sens: dict, removal_ratio: float,
                  channel_divisible: int, strict: bool = True,
                  argument: str = "removal_ratio", target: str = "macs") -> PruningPlan:
        """Bisect the drop threshold so the sensitivity-allocated plan hits the MACs target
        (or, with ``strict=False``, comes as close as channel rounding allows); with
        ``target='latency'`` the predicted latency, at this machine's fast widths."""
        excluded = {g.id for g in pr.graph.groups if not g.prunable}
        worst = max(max_drop(sens), 1e-6)

        def ratios_at(t: float) -> dict[int, float]:
            return {gid: min(MAX_GROUP_RATIO, r)
                    for gid, r in ratios_for_threshold(sens, t, excluded).items()}

        if check_target(target) == "latency":
            return bisect_latency(pr, self._latency_model(pr), ratios_at, worst * 1.0001 + 1e-9,
                                  removal_ratio, criterion=self.criterion,
                                  channel_divisible=channel_divisible, strict=strict,
                                  argument=argument)
        plan = bisect_plan(
            pr.cost, ratios_at, lambda r: pr.plan(r, self.criterion, channel_divisible),
            removal_ratio, hi=worst * 1.0001 + 1e-9, quantum=pr.quantum(channel_divisible),
            counts_of=lambda r: pr.counts(r, channel_divisible), strict=False,
        )
        check_landing(pr.removal(plan), removal_ratio, channel_divisible=channel_divisible,
                      strict=strict, argument=argument)
        return plan

    def _threshold_plan(self, pr: BasePruner, sens: dict, threshold: float,
                        channel_divisible: int) -> PruningPlan:
        excluded = {g.id for g in pr.graph.groups if not g.prunable}
        ratios = {gid: min(MAX_GROUP_RATIO, r)
                  for gid, r in ratios_for_threshold(sens, threshold, excluded).items()}
        return pr.plan(ratios, self.criterion, channel_divisible)

    def _preview(self, pr: BasePruner, sens: dict | None, plan: PruningPlan,
                 removal_ratio: float, target: str = "macs") -> PlanPreview:
        rows = []
        for g in pr.graph.groups:
            kept = len(plan.kept[g.id]) if g.id in plan.kept else g.num_channels
            rows.append({"group": g.id, "name": g.name, "channels": g.num_channels,
                         "kept": kept, "ratio": round(1 - kept / g.num_channels, 4),
                         "prunable": g.prunable})
        ratios = {gid: 1 - len(k) / pr.graph.groups[gid].num_channels
                  for gid, k in plan.kept.items()}
        return PlanPreview(
            removal_ratio=removal_ratio,
            achieved_removal=pr.removal(plan),
            macs=pr.macs(plan) / 1e6,
            params=pr.params(plan) / 1e6,
            original_macs=pr.original_macs / 1e6,
            original_params=pr.original_params / 1e6,
            predicted_score=predicted_score(sens, ratios) if sens else None,
            baseline=sens["baseline"] if sens else None,
            groups=pd.DataFrame(rows),
            plan=plan,
            **self._estimate_fields(pr, sens, ratios, plan),
            **self._latency_fields(pr, plan, target),
        )

    def _latency_fields(self, pr: BasePruner, plan: PruningPlan, target: str) -> dict[str, Any]:
        if target != "latency":
            return {}
        lat = self._latency_model(pr)
        return {"target": target, "latency_ms": lat.latency(plan) * 1e3,
                "original_latency_ms": lat.original * 1e3}

    def _estimate_fields(self, pr: BasePruner, sens: dict | None, ratios: dict[int, float],
                         plan: PruningPlan) -> dict[str, Any]:
        """The corrected estimate: the analysis' whole-model plans and the measured previews
        of the same weights and protocol (core/estimate.py); a measure hook for the preview."""
        hook = {"_measure": partial(measure_plan, self, pr)}
        if not sens:
            return hook
        found = matching_points(measured_path(self.workspace, self.name),
                                sens.get("weights_digest", ""), sens.get("protocol"))
        est = estimate(predicted_score(sens, ratios), pr.removal(plan),
                       sens_points(sens) + measured_points(found))
        return {**hook, "estimate": est.value, "estimate_error": est.error,
                "estimate_label": est.label}

    # -- specs and models -----------------------------------------------------------------
    def _write_spec(self, pr: BasePruner, plan: PruningPlan, path: Path, **meta) -> None:
        spec = pr.to_spec(plan, model=self.name, criterion=self.criterion, **meta)
        atomic_write_json(path, spec)
        self.workspace.write_latest_spec(path)

    def _build(self, pr: BasePruner, plan: PruningPlan, mode: str) -> Any:
        if mode not in ("sparse", "slim"):
            raise ValueError(f"Expected mode 'sparse' or 'slim'. Received: mode={mode!r}")
        return pr.sparse_model(plan) if mode == "sparse" else pr.slim_model(plan)

    def _spec_plan(self, pr: BasePruner, spec_path: str | os.PathLike) -> PruningPlan:
        spec = read_json(Path(spec_path), kind="uif-explorer-spec")
        return pr.plan_from_spec(spec)

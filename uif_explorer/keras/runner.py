"""The guide's TensorFlow/Keras pruning API (``tf_nndct``'s ``IterativePruningRunner``) over the
framework-neutral core, plus a one-step (EagleEye) search the reference lacks for Keras.

Same files as the PyTorch runners (``.sens``, ``.spec``, ``.search``, ``latest_spec``), the same
groups, allocation and rounding; ``ratio`` is the fraction of the original dense
architecture's MACs removed, landing within 1 point.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from uif_explorer.core.allocation import (
    MAX_GROUP_RATIO,
    TARGET_TOLERANCE,
    bisect_plan,
    check_removal_ratio,
    sample_plan,
)
from uif_explorer.core.importance import group_scores
from uif_explorer.core.plan import (
    CostModel,
    PlanError,
    PruningPlan,
    importance_order,
    plan_from_counts,
    plan_from_scores,
)
from uif_explorer.core.sensitivity import (
    DEFAULT_RATIOS,
    SENS_KIND,
    max_drop,
    new_sensitivity,
    pending_steps,
    predicted_score,
    ratios_for_threshold,
    record_step,
)
from uif_explorer.core.spec import plan_from_spec, plan_to_spec
from uif_explorer.keras.apply import MaskedCopy, make_slim, make_sparse
from uif_explorer.keras.evaluation import check_score
from uif_explorer.keras.graph import (
    KerasCapture,
    capture,
    digest_weights,
    resolve_layer,
    weight_items,
)
from uif_explorer.workspace import Workspace, WorkspaceError, atomic_write_json, read_json

SEARCH_KIND = "uif-explorer-search"
MAX_SUBNETS = 100_000
Progress = Callable[[int, int, dict], None]


class AnalysisError(RuntimeError):
    """The analysis or search cannot run or continue (bad eval_fn, stale files...)."""


def _say(msg: str) -> None:
    print(f"[uif-explorer] {msg}", file=sys.stderr, flush=True)


def _check_callable(fn: object, name: str) -> None:
    if not callable(fn):
        raise TypeError(f"Expected {name} to be a function taking the model first. "
                        f"Received: {name}={fn!r}")


def slice_stats(model: keras.Model, cap: KerasCapture) -> list[dict[str, np.ndarray] | None]:
    """Per slice of the graph: L1 and L2 magnitude of each position along its channel axis."""
    values: dict[str, np.ndarray] = {}
    for key, (path, wname) in cap.weight_keys.items():
        for name, v in weight_items(resolve_layer(model, path)):
            if name == wname:
                values[key] = np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float64)
    out: list[dict[str, np.ndarray] | None] = []
    for sl in cap.graph.slices:
        t = values.get(sl.param)
        if t is None:
            out.append(None)
            continue
        axes = tuple(d for d in range(t.ndim) if d != sl.dim)
        out.append({"l1": np.abs(t).sum(axis=axes), "l2": np.sqrt((t * t).sum(axis=axes))})
    return out


class KerasPruner:
    """Capture a Keras model once; offer plans, costs, sparse and slim models."""

    def __init__(self, model: keras.Model, input_spec: Any,
                 excludes: Iterable[object] | None = None) -> None:
        self.model = model
        self.input_spec = input_spec
        self.capture = capture(model, input_spec, excludes)
        self.graph = self.capture.graph
        self.cost = CostModel(self.graph)
        self._cache: dict[str, dict[int, np.ndarray]] = {}

    @property
    def original_macs(self) -> int:
        return self.cost.original_macs

    @property
    def original_params(self) -> int:
        return self.cost.original_params

    def groups_table(self) -> Any:
        import pandas as pd

        rows = [{"group": g.id, "name": g.name, "channels": g.num_channels,
                 "prunable": g.prunable, "layers": ", ".join(g.modules),
                 "reason": g.excluded_reason or ""} for g in self.graph.groups]
        return pd.DataFrame(rows, columns=["group", "name", "channels", "prunable", "layers",
                                           "reason"])

    def scores(self, criterion: str = "l1") -> dict[int, np.ndarray]:
        if criterion not in self._cache:
            stats = slice_stats(self.model, self.capture)
            self._cache[criterion] = group_scores(self.graph, stats, criterion)
        return self._cache[criterion]

    def orders(self, criterion: str = "l1") -> dict[int, np.ndarray]:
        key = "order:" + criterion
        if key not in self._cache:
            scores = self.scores(criterion)
            self._cache[key] = {g.id: importance_order(g, scores[g.id])
                                for g in self.graph.groups}
        return self._cache[key]

    def weights_digest(self) -> str:
        return digest_weights(self.model)

    def plan(self, ratios: float | Mapping[int, float], criterion: str = "l1",
             channel_divisible: int = 2) -> PruningPlan:
        if isinstance(ratios, (int, float)):
            ratios = {g.id: float(ratios) for g in self.graph.prunable_groups}
        return plan_from_scores(self.graph, ratios, self.scores(criterion), channel_divisible,
                                orders=self.orders(criterion))

    def plan_from_counts(self, counts: Mapping[int, int], criterion: str = "l1") -> PruningPlan:
        return plan_from_counts(self.graph, counts, self.orders(criterion))

    def plan_for_removal(self, ratio: float, criterion: str = "l1",
                         channel_divisible: int = 2) -> PruningPlan:
        """Uniform group ratios bisected so that MACs drop by ``ratio`` (no analysis)."""
        check_removal_ratio(ratio, "ratio")
        prunable = [g.id for g in self.graph.prunable_groups]
        if not prunable:
            raise PlanError("No channel group of this model can be pruned (see runner.groups).")
        quantum = {g.id: max(channel_divisible, g.blocks) / g.num_channels
                   for g in self.graph.prunable_groups}
        return bisect_plan(
            self.cost, lambda s: {gid: min(MAX_GROUP_RATIO, s) for gid in prunable},
            lambda r: self.plan(r, criterion, channel_divisible), ratio, hi=MAX_GROUP_RATIO,
            tolerance=TARGET_TOLERANCE, quantum=quantum,
        )

    def macs(self, plan: PruningPlan | None) -> int:
        return self.cost.macs(plan)

    def params(self, plan: PruningPlan | None) -> int:
        return self.cost.params(plan)

    def removal(self, plan: PruningPlan) -> float:
        return 1.0 - self.macs(plan) / max(1, self.original_macs)

    def sparse_model(self, plan: PruningPlan) -> keras.Model:
        return make_sparse(self.model, self.capture, plan)

    def slim_model(self, plan: PruningPlan) -> keras.Model:
        return make_slim(self.model, self.capture, plan)

    def to_spec(self, plan: PruningPlan, **meta: object) -> dict:
        return plan_to_spec(
            self.graph, plan, framework="keras", weights_digest=self.weights_digest(),
            macs={"original": self.original_macs / 1e6, "pruned": self.macs(plan) / 1e6},
            params={"original": self.original_params / 1e6,
                    "pruned": self.params(plan) / 1e6},
            **meta,
        )

    def plan_from_spec(self, spec: dict) -> PruningPlan:
        return plan_from_spec(self.graph, spec)


@dataclass
class PlanPreview:
    """What a prune would do, computed without building anything."""

    ratio: float
    achieved_removal: float
    macs: float  # millions
    params: float  # millions
    original_macs: float
    original_params: float
    predicted_score: float | None
    baseline: float | None
    plan: PruningPlan


def _kept_lists(plan: PruningPlan) -> dict[int, list[int]]:
    return {int(g): [int(i) for i in k] for g, k in plan.kept.items()}


class IterativePruningRunner:
    """The guide's Keras runner: ``ana`` once, ``prune(ratio)`` to a sparse model, repeat after
    fine-tuning, then ``get_slim_model()``; plus ``search`` / ``prune_candidate`` (one-step).

    Args:
        model: a Functional or Sequential ``keras.Model`` (never mutated).
        input_spec: ``tf.TensorSpec((1, 28, 28, 1), tf.float32)`` or a shape tuple; MACs are
            counted at this shape (batch included).
        workdir: the workspace folder for ``.sens`` / ``.spec`` / ``.search`` files.
        name: file-name stem; default ``<ModelClass>-<6 hex of the graph digest>``.
        higher_is_better: whether a larger ``eval_fn`` result is better.
        criterion: channel importance, ``"l1"`` (default) or ``"l2"``, over the whole group.
        excludes: layer names or layers whose channels are never pruned.
    """

    def __init__(self, model: keras.Model, input_spec: Any, workdir: str | os.PathLike = ".vai",
                 name: str | None = None, higher_is_better: bool = True,
                 criterion: str = "l1", excludes: Iterable[object] | None = None) -> None:
        self.model = model
        self.input_spec = input_spec
        self.excludes = list(excludes) if excludes else []
        self.higher_is_better = bool(higher_is_better)
        self.criterion = criterion
        self.pruner = KerasPruner(model, input_spec, self.excludes)
        digest = self.pruner.graph.graph_digest()
        self.name = name or f"{type(model).__name__}-{digest[:6]}"
        self.workspace = Workspace(workdir)
        self._pruners: dict[tuple, KerasPruner] = {}

    # -- facts ---------------------------------------------------------------------------
    @property
    def groups(self) -> Any:
        """The channel groups as a DataFrame (prunable or not, and why)."""
        return self.pruner.groups_table()

    @property
    def original_macs(self) -> float:
        """MACs of the model at ``input_spec``, in millions."""
        return self.pruner.original_macs / 1e6

    def _pruner_for(self, excludes: Iterable[object] | None) -> KerasPruner:
        if excludes is None or list(excludes) == self.excludes:
            return self.pruner
        key = tuple(id(e) if not isinstance(e, str) else e for e in excludes)
        if key not in self._pruners:
            self._pruners[key] = KerasPruner(self.model, self.input_spec, list(excludes))
        return self._pruners[key]

    def _progress(self, total: int, progress: Progress | None):
        bar = None
        if progress is None and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total, desc=self.name, unit="eval")

        def step(done: int, info: dict) -> None:
            if progress is not None:
                progress(done, total, info)
            if bar is not None:
                bar.update(1)

        return step, bar

    @staticmethod
    def _score(fn: Callable, model: keras.Model, args: tuple, what: str) -> float:
        try:
            value = fn(model, *args)
        except Exception as exc:
            raise AnalysisError(
                f"{what} raised {type(exc).__name__}: {exc}. Results saved so far are kept; "
                "fix it and run again to resume."
            ) from exc
        return check_score(value, what)

    # -- analysis ------------------------------------------------------------------------
    def _load_sens(self, pr: KerasPruner, forced: bool, weights: str) -> dict | None:
        path = self.workspace.sens(self.name)
        if forced or not path.exists():
            return None
        sens = read_json(path, kind=SENS_KIND)
        if sens.get("graph_digest") != pr.graph.graph_digest():
            raise WorkspaceError(
                f"{path} was made for another architecture or input signature (graph digest "
                f"{sens.get('graph_digest')} != {pr.graph.graph_digest()}); pass forced=True "
                "to analyse this model afresh, or use another name= / workdir=."
            )
        if not sens.get("complete") and sens.get("weights_digest") != weights:
            raise WorkspaceError(
                f"{path} holds an unfinished analysis of other weights; it cannot be resumed "
                "for this model. Pass forced=True to restart it."
            )
        return sens

    def ana(self, eval_fn: Callable, excludes: Iterable[object] | None = None,
            forced: bool = False, *, args: Sequence[Any] = (),
            ratios: Sequence[float] = DEFAULT_RATIOS,
            progress: Progress | None = None) -> dict[str, Any]:
        """Score the model with each group pruned alone at each ratio; resumable ``.sens``.

        ``eval_fn(model, *args)`` gets a masked *copy* (never the user's model) and returns a
        number. The file is written atomically after every evaluation, so an interrupted
        analysis resumes where it stopped; a finished one is reused (``forced=True`` redoes).
        """
        _check_callable(eval_fn, "eval_fn")
        ratios = [float(r) for r in ratios]
        if not ratios or any(not 0 < r < 1 for r in ratios):
            raise ValueError(f"Expected sensitivity ratios in (0, 1). Received: ratios={ratios}")
        pr = self._pruner_for(excludes)
        weights = pr.weights_digest()
        path = self.workspace.sens(self.name)
        sens = self._load_sens(pr, forced, weights)
        if sens is not None and sens.get("complete"):
            if sens.get("weights_digest") != weights:
                _say(f"reusing the finished analysis {path} (made on earlier weights of this "
                     "architecture, as the guide's iterative loop does); forced=True redoes it")
            return sens
        if sens is None:
            groups = [{"id": g.id, "name": g.name, "modules": g.modules,
                       "num_channels": g.num_channels, "prunable": g.prunable,
                       "excluded_reason": g.excluded_reason} for g in pr.graph.groups]
            sens = new_sensitivity(
                model=self.name, graph_digest=pr.graph.graph_digest(), weights_digest=weights,
                groups=groups, ratios=ratios, criterion=self.criterion,
                higher_is_better=self.higher_is_better,
            )
        steps = pending_steps(sens)
        total = len(steps) + (sens["baseline"] is None)
        n_groups = sum(1 for g in sens["groups"] if g.get("prunable", True))
        _say(f"sensitivity analysis of {self.name}: {total} evaluations to run "
             f"({n_groups} groups x {len(sens['ratios'])} ratios + baseline; "
             f"{sum(len(g['curve']) for g in sens['groups'])} already saved in {path})")
        work = MaskedCopy(self.model, pr.capture)
        step, bar = self._progress(total, progress)
        done = 0
        try:
            if sens["baseline"] is None:
                sens["baseline"] = self._score(eval_fn, work.apply(None), tuple(args),
                                               "eval_fn")
                sens["complete"] = not steps
                atomic_write_json(path, sens)
                done += 1
                step(done, {"step": "baseline", "score": sens["baseline"]})
            for gid, ratio in steps:
                plan = pr.plan({gid: ratio}, self.criterion, channel_divisible=1)
                score = self._score(eval_fn, work.apply(plan), tuple(args), "eval_fn")
                record_step(sens, gid, ratio, score)
                atomic_write_json(path, sens)
                done += 1
                step(done, {"group": gid, "ratio": ratio, "score": score})
        finally:
            if bar is not None:
                bar.close()
        return sens

    def sensitivity(self, quiet: bool = False) -> dict[str, Any]:
        """The finished analysis of this architecture (a note when made on other weights)."""
        path = self.workspace.sens(self.name)
        if not path.exists():
            raise WorkspaceError(f"No analysis at {path}: run runner.ana(eval_fn) first.")
        sens = read_json(path, kind=SENS_KIND)
        if sens.get("graph_digest") != self.pruner.graph.graph_digest():
            raise WorkspaceError(f"{path} was made for another architecture; run ana again "
                                 "with forced=True.")
        if not sens.get("complete"):
            raise WorkspaceError(f"The analysis in {path} is unfinished: run runner.ana(...) "
                                 "again to resume it.")
        if not quiet and sens.get("weights_digest") != self.pruner.weights_digest():
            _say(f"reusing the finished analysis {path}, made on earlier weights of this "
                 "architecture (the guide's iterative loop); channels are ranked by the "
                 "current weights, so channels already zeroed are pruned first")
        return sens

    # -- allocation ----------------------------------------------------------------------
    def _allocate(self, pr: KerasPruner, sens: dict, ratio: float,
                  channel_divisible: int) -> PruningPlan:
        excluded = {g.id for g in pr.graph.groups if not g.prunable}
        worst = max(max_drop(sens), 1e-6)

        def ratios_at(t: float) -> dict[int, float]:
            return {gid: min(MAX_GROUP_RATIO, r)
                    for gid, r in ratios_for_threshold(sens, t, excluded).items()}

        quantum = {g.id: max(channel_divisible, g.blocks) / g.num_channels
                   for g in pr.graph.prunable_groups}
        return bisect_plan(
            pr.cost, ratios_at, lambda r: pr.plan(r, self.criterion, channel_divisible),
            ratio, hi=worst * 1.0001 + 1e-9, quantum=quantum,
        )

    def plan(self, ratio: float, channel_divisible: int = 2,
             excludes: Iterable[object] | None = None) -> PlanPreview:
        """Preview ``prune(ratio)``: MACs, params and predicted score, building nothing."""
        ratio = check_removal_ratio(ratio, "ratio")
        pr = self._pruner_for(excludes)
        sens = self.sensitivity(quiet=True)
        plan = self._allocate(pr, sens, ratio, channel_divisible)
        return self._preview(pr, sens, plan, ratio)

    def _preview(self, pr: KerasPruner, sens: dict | None, plan: PruningPlan,
                 ratio: float) -> PlanPreview:
        ratios = {gid: 1 - len(k) / pr.graph.groups[gid].num_channels
                  for gid, k in plan.kept.items()}
        return PlanPreview(
            ratio=ratio, achieved_removal=pr.removal(plan), macs=pr.macs(plan) / 1e6,
            params=pr.params(plan) / 1e6, original_macs=pr.original_macs / 1e6,
            original_params=pr.original_params / 1e6,
            predicted_score=predicted_score(sens, ratios) if sens else None,
            baseline=sens["baseline"] if sens else None, plan=plan,
        )

    def _write_spec(self, pr: KerasPruner, plan: PruningPlan, path: Path, **meta) -> None:
        spec = pr.to_spec(plan, model=self.name, criterion=self.criterion, **meta)
        atomic_write_json(path, spec)
        self.workspace.write_latest_spec(path)

    def _build(self, pr: KerasPruner, plan: PruningPlan, mode: str) -> keras.Model:
        if mode not in ("sparse", "slim"):
            raise ValueError(f"Expected mode 'sparse' or 'slim'. Received: mode={mode!r}")
        return pr.sparse_model(plan) if mode == "sparse" else pr.slim_model(plan)

    def _spec_plan(self, pr: KerasPruner, spec_path: str | os.PathLike) -> PruningPlan:
        spec = read_json(Path(spec_path), kind="uif-explorer-spec")
        return pr.plan_from_spec(spec)

    def prune(self, ratio: float | None = None, threshold: float | None = None,
              spec_path: str | os.PathLike | None = None,
              excludes: Iterable[object] | None = None, mode: str = "sparse",
              channel_divisible: int = 2, *, removal_ratio: float | None = None
              ) -> keras.Model:
        """A copy with ``ratio`` of the original MACs removed (sparse: same shapes, pruned
        channels zero and kept at zero through ``fit()``; ``mode='slim'``: smaller layers).

        Exactly one of ``ratio`` (alias ``removal_ratio``), ``threshold`` (relative score drop
        per group) or ``spec_path``. Writes ``<model>_ratio_<r>.spec`` (or
        ``_threshold_<t>``) and ``latest_spec``.
        """
        if removal_ratio is not None:
            if ratio is not None:
                raise ValueError("Pass ratio or removal_ratio, not both.")
            ratio = removal_ratio
        given = [v is not None for v in (ratio, threshold, spec_path)]
        if sum(given) != 1:
            raise ValueError("Expected exactly one of ratio, threshold or spec_path. Received: "
                             f"ratio={ratio!r}, threshold={threshold!r}, "
                             f"spec_path={spec_path!r}")
        if mode not in ("sparse", "slim"):
            raise ValueError(f"Expected mode 'sparse' or 'slim'. Received: mode={mode!r}")
        pr = self._pruner_for(excludes)
        if spec_path is not None:
            return self._build(pr, self._spec_plan(pr, spec_path), mode)
        sens = self.sensitivity()
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
                    or not threshold >= 0:
                raise ValueError(f"Expected a threshold >= 0 (relative score drop). "
                                 f"Received: threshold={threshold!r}")
            excluded = {g.id for g in pr.graph.groups if not g.prunable}
            ratios = {gid: min(MAX_GROUP_RATIO, r)
                      for gid, r in ratios_for_threshold(sens, threshold, excluded).items()}
            plan = pr.plan(ratios, self.criterion, channel_divisible)
            path = self.workspace.spec(self.name, threshold=threshold)
            meta: dict[str, Any] = {"threshold": threshold}
        else:
            ratio = check_removal_ratio(ratio, "ratio")
            plan = self._allocate(pr, sens, ratio, channel_divisible)
            path = self.workspace.spec(self.name, ratio=ratio)
            meta = {"removal_ratio": ratio}
        preview = self._preview(pr, sens, plan, ratio or 0.0)
        self._write_spec(pr, plan, path, channel_divisible=channel_divisible,
                         predicted_score=preview.predicted_score, **meta)
        _say(f"{self.name}: MACs {preview.original_macs:.3f}M -> {preview.macs:.3f}M "
             f"({preview.achieved_removal:.1%} removed); spec {path}")
        return self._build(pr, plan, mode)

    def get_slim_model(self, spec_path: str | os.PathLike | None = None) -> keras.Model:
        """The runner's model rebuilt with fewer filters per the spec (``latest_spec`` by
        default), kept weights copied. Load the fine-tuned sparse weights into the model
        first (the guide's ``model.load_weights(...)``)."""
        path = Path(spec_path) if spec_path is not None else self.workspace.latest_spec()
        return self.pruner.slim_model(self._spec_plan(self.pruner, path))

    # -- one-step search -----------------------------------------------------------------
    def _sample_counts(self, pr: KerasPruner, ratio: float, seed: int, cid: int,
                       channel_divisible: int) -> tuple[dict[int, int], float]:
        groups = pr.graph.prunable_groups
        quantum = {g.id: max(channel_divisible, g.blocks) / g.num_channels for g in groups}
        plan = sample_plan(pr.cost, [g.id for g in groups],
                           lambda rr: pr.plan(rr, self.criterion, channel_divisible),
                           ratio, seed, cid, quantum)
        return {gid: len(k) for gid, k in plan.kept.items()}, pr.removal(plan)

    def _load_search(self, pr: KerasPruner, path: Path, forced: bool,
                     weights: str) -> dict | None:
        if forced or not path.exists():
            return None
        data = read_json(path, kind=SEARCH_KIND)
        if data.get("graph_digest") != pr.graph.graph_digest():
            raise WorkspaceError(f"{path} was made for another architecture or input signature;"
                                 " pass forced=True to search this model afresh.")
        if data.get("weights_digest") != weights:
            if data.get("complete"):
                _say(f"{path} was searched on earlier weights; reusing it (forced=True redoes)")
                return data
            raise WorkspaceError(f"{path} holds an unfinished search of other weights; pass "
                                 "forced=True to restart it.")
        return data

    def search(self, calibration_fn: Callable | None = None, calib_args: Sequence[Any] = (),
               eval_fn: Callable | None = None, eval_args: Sequence[Any] = (),
               num_subnet: int = 10, ratio: float = 0.5,
               excludes: Iterable[object] | None = None, forced: bool = False, *,
               seed: int = 0, channel_divisible: int = 2,
               progress: Progress | None = None) -> dict[str, Any]:
        """One-step pruning: sample ``num_subnet`` EagleEye candidates that each remove
        ``ratio`` of the MACs (within 1 point), score each after ``calibration_fn`` (e.g.
        :func:`adaptive_bn_calibration`), save ``<model>_ratio_<r>.search`` after every one.
        """
        _check_callable(eval_fn, "eval_fn")
        if calibration_fn is not None:
            _check_callable(calibration_fn, "calibration_fn")
        if isinstance(num_subnet, bool) or not isinstance(num_subnet, (int, np.integer)) \
                or not 1 <= num_subnet <= MAX_SUBNETS:
            raise ValueError(f"Expected num_subnet, the number of candidates, between 1 and "
                             f"{MAX_SUBNETS:,}. Received: num_subnet={num_subnet!r}")
        ratio = check_removal_ratio(ratio, "ratio")
        pr = self._pruner_for(excludes)
        weights = pr.weights_digest()
        path = self.workspace.search(self.name, ratio)
        data = self._load_search(pr, path, forced, weights)
        if data is None:
            data = {
                "format_version": 1, "kind": SEARCH_KIND, "model": self.name,
                "framework": "keras", "graph_digest": pr.graph.graph_digest(),
                "weights_digest": weights, "removal_ratio": ratio, "seed": seed,
                "criterion": self.criterion, "channel_divisible": channel_divisible,
                "higher_is_better": self.higher_is_better,
                "baseline": {"score": None, "macs": pr.original_macs / 1e6,
                             "params": pr.original_params / 1e6},
                "groups": [{"id": g.id, "name": g.name, "num_channels": g.num_channels,
                            "prunable": g.prunable} for g in pr.graph.groups],
                "num_subnet": num_subnet, "candidates": [], "complete": False,
            }
        elif data.get("weights_digest") != weights and data.get("complete"):
            return data
        seed, channel_divisible = data["seed"], data["channel_divisible"]
        data["num_subnet"] = max(int(num_subnet), len(data["candidates"]))
        for cid in range(len(data["candidates"]), num_subnet):
            counts, achieved = self._sample_counts(pr, ratio, seed, cid, channel_divisible)
            plan = pr.plan_from_counts(counts, self.criterion)
            data["candidates"].append({
                "id": cid, "kept_channels": {str(g): n for g, n in counts.items()},
                "ratios": {str(g): round(1 - n / pr.graph.groups[g].num_channels, 4)
                           for g, n in counts.items()},
                "macs": pr.macs(plan) / 1e6, "params": pr.params(plan) / 1e6,
                "removal": round(achieved, 6), "score": None,
            })
        pending = [c for c in data["candidates"][:num_subnet] if c["score"] is None]
        total = len(pending) + (data["baseline"]["score"] is None)
        _say(f"one-step search of {self.name} at {ratio:.0%} MACs removal: {total} "
             f"evaluations to run ({num_subnet} candidates + baseline; saved in {path})")
        data["complete"] = False
        atomic_write_json(path, data)
        work = MaskedCopy(self.model, pr.capture)
        step, bar = self._progress(total, progress)
        done = 0
        try:
            if data["baseline"]["score"] is None:
                data["baseline"]["score"] = self._score(eval_fn, work.apply(None),
                                                        tuple(eval_args), "eval_fn")
                atomic_write_json(path, data)
                done += 1
                step(done, {"step": "baseline", "score": data["baseline"]["score"]})
            for cand in pending:
                plan = pr.plan_from_counts({int(g): n for g, n in cand["kept_channels"].items()},
                                           self.criterion)
                model = work.apply(plan)  # masked copy: the same outputs as the slim model
                if calibration_fn is not None:
                    try:
                        calibration_fn(model, *calib_args)
                    except Exception as exc:
                        raise AnalysisError(
                            f"calibration_fn raised {type(exc).__name__}: {exc}. Results saved "
                            "so far are kept; fix it and run again to resume."
                        ) from exc
                cand["score"] = self._score(eval_fn, model, tuple(eval_args), "eval_fn")
                data["ranking"] = self._ranking(data)
                data["complete"] = all(c["score"] is not None for c in data["candidates"])
                atomic_write_json(path, data)
                done += 1
                step(done, {"candidate": cand["id"], "score": cand["score"]})
        finally:
            if bar is not None:
                bar.close()
        data["ranking"] = self._ranking(data)
        data["complete"] = all(c["score"] is not None for c in data["candidates"])
        atomic_write_json(path, data)
        return data

    def _ranking(self, data: dict) -> list[int]:
        scored = [c for c in data["candidates"] if c["score"] is not None]
        sign = -1.0 if data.get("higher_is_better", True) else 1.0
        return [c["id"] for c in sorted(scored, key=lambda c: (sign * c["score"], c["id"]))]

    def search_result(self, ratio: float) -> dict[str, Any]:
        path = self.workspace.search(self.name, check_removal_ratio(ratio, "ratio"))
        if not path.exists():
            raise WorkspaceError(f"No search at {path}: run runner.search(..., ratio={ratio}) "
                                 "first.")
        return read_json(path, kind=SEARCH_KIND)

    def prune_candidate(self, ratio: float, index: int | None = None,
                        excludes: Iterable[object] | None = None,
                        mode: str = "slim") -> keras.Model:
        """The best searched candidate (``index=None``) or candidate id ``index`` as a slim
        (default) or sparse model; writes ``<model>_ratio_<r>_<best|id>.spec``."""
        pr = self._pruner_for(excludes)
        data = self.search_result(ratio)
        if data.get("graph_digest") != pr.graph.graph_digest():
            raise WorkspaceError("The search was made for another architecture.")
        by_id = {c["id"]: c for c in data["candidates"]}
        if index is None:
            ranking = self._ranking(data)
            if not ranking:
                raise WorkspaceError("No candidate has a score yet: run search(...) to finish.")
            chosen, tag = by_id[ranking[0]], "best"
        else:
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
                    or index not in by_id:
                raise ValueError(f"Expected index to be a candidate id in 0..{len(by_id) - 1}. "
                                 f"Received: index={index!r}")
            chosen, tag = by_id[int(index)], str(int(index))
        plan = pr.plan_from_counts({int(g): n for g, n in chosen["kept_channels"].items()},
                                   self.criterion)
        path = self.workspace.spec(self.name, ratio=ratio, candidate=tag)
        self._write_spec(pr, plan, path, removal_ratio=ratio, candidate=chosen["id"],
                         score=chosen["score"], channel_divisible=data["channel_divisible"])
        return self._build(pr, plan, mode)

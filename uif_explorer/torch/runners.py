"""The guide's PyTorch coarse-grained pruning API: iterative (ana/prune) and one-step
(search/prune) runners over the pruning core, with resumable workspace files.

Differences from the reference, on purpose: ratios land within 1 point of the MACs target
(a bisection that cannot stall), ratios between the analysed steps are allowed, a large score
*improvement* never stops a group, candidates keep stable ids (``index=0`` is candidate 0), an
unreachable target or a bad argument is a clear error, and everything runs on the CPU.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from uif_explorer.core.allocation import (
    MAX_GROUP_RATIO,
    bisect_plan,
    check_removal_ratio,
    sample_plan,
)
from uif_explorer.core.plan import PruningPlan
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
from uif_explorer.executors import get_executor
from uif_explorer.torch.apply import make_slim, make_sparse
from uif_explorer.torch.capture import Capture
from uif_explorer.torch.evaluation import check_score
from uif_explorer.torch.pruner import ChannelPruner
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


@dataclass
class _EvalContext:
    """What a worker needs to score one plan (shipped once per worker)."""

    model: nn.Module
    capture: Capture
    mode: str  # "sparse" or "slim"
    eval_fn: Callable
    eval_args: tuple
    calibration_fn: Callable | None = None
    calib_args: tuple = ()
    gpus: tuple = ()


def _evaluate_plan(ctx: _EvalContext, kept: dict[int, list[int]]) -> tuple[float, int]:
    plan = PruningPlan(kept={int(g): np.asarray(v, dtype=np.int64) for g, v in kept.items()})
    build = make_sparse if ctx.mode == "sparse" else make_slim
    model = build(ctx.model, ctx.capture, plan)
    if ctx.gpus and torch.cuda.is_available():
        model = model.to(f"cuda:{ctx.gpus[os.getpid() % len(ctx.gpus)]}")
    if ctx.calibration_fn is not None:
        ctx.calibration_fn(model, *ctx.calib_args)
    try:
        value = ctx.eval_fn(model, *ctx.eval_args)
    except Exception as exc:
        raise AnalysisError(
            f"eval_fn raised {type(exc).__name__}: {exc}. Results saved so far are kept; fix "
            "eval_fn and run again to resume."
        ) from exc
    return check_score(value, "eval_fn"), os.getpid()


def _kept_lists(plan: PruningPlan) -> dict[int, list[int]]:
    return {int(g): [int(i) for i in k] for g, k in plan.kept.items()}


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


class _Runner:
    def __init__(
        self,
        model: nn.Module,
        input_signature: torch.Tensor | Sequence[torch.Tensor],
        *,
        workdir: str | os.PathLike = ".vai",
        name: str | None = None,
        excludes: Iterable[object] | None = None,
        higher_is_better: bool = True,
        criterion: str = "l1",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected a torch.nn.Module. Received: model={type(model).__name__}")
        self.model = model
        self.input_signature = input_signature
        self.excludes = list(excludes) if excludes else []
        self.higher_is_better = bool(higher_is_better)
        self.criterion = criterion
        self.pruner = ChannelPruner(model, input_signature, self.excludes)
        digest = self.pruner.graph.graph_digest()
        self.name = name or f"{type(model).__name__}-{digest[:6]}"
        self.workspace = Workspace(workdir)

    # -- helpers -------------------------------------------------------------------------
    def _pruner_for(self, excludes: Iterable[object] | None) -> ChannelPruner:
        if excludes is None or list(excludes) == self.excludes:
            return self.pruner
        return ChannelPruner(self.model, self.input_signature, list(excludes))

    @property
    def groups(self) -> pd.DataFrame:
        return self.pruner.groups_table()

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

    def _baseline(self, eval_fn: Callable, args: tuple) -> float:
        model = copy.deepcopy(self.model)
        try:
            value = eval_fn(model, *args)
        except Exception as exc:
            raise AnalysisError(f"eval_fn raised {type(exc).__name__} on the unpruned model: "
                                f"{exc}") from exc
        return check_score(value, "eval_fn")

    def _write_spec(self, pr: ChannelPruner, plan: PruningPlan, path: Path, **meta) -> None:
        spec = pr.to_spec(plan, model=self.name, criterion=self.criterion, **meta)
        atomic_write_json(path, spec)
        self.workspace.write_latest_spec(path)

    def _build(self, pr: ChannelPruner, plan: PruningPlan, mode: str) -> nn.Module:
        if mode not in ("sparse", "slim"):
            raise ValueError(f"Expected mode 'sparse' or 'slim'. Received: mode={mode!r}")
        return pr.sparse_model(plan) if mode == "sparse" else pr.slim_model(plan)

    def _spec_plan(self, pr: ChannelPruner, spec_path: str | os.PathLike) -> PruningPlan:
        spec = read_json(Path(spec_path), kind="uif-explorer-spec")
        return pr.plan_from_spec(spec)


class IterativePruningRunner(_Runner):
    """``ana`` once, then ``prune`` to any MACs ratio (sparse model for fine-tuning)."""

    # -- analysis ------------------------------------------------------------------------
    def _load_sens(self, pr: ChannelPruner, forced: bool, weights: str) -> dict | None:
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

    def ana(
        self,
        eval_fn: Callable,
        args: tuple = (),
        excludes: Iterable[object] | None = None,
        forced: bool = False,
        *,
        ratios: Sequence[float] = DEFAULT_RATIOS,
        executor: object = None,
        gpus: Sequence[str | int] | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Score the model with each group pruned alone at each ratio; resumable .sens."""
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
            groups = [
                {"id": g.id, "name": g.name, "modules": g.modules, "num_channels": g.num_channels,
                 "prunable": g.prunable, "excluded_reason": g.excluded_reason}
                for g in pr.graph.groups
            ]
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
        step, bar = self._progress(total, progress)
        done = 0
        try:
            if sens["baseline"] is None:
                sens["baseline"] = self._baseline(eval_fn, args)
                sens["complete"] = not steps
                atomic_write_json(path, sens)
                done += 1
                step(done, {"step": "baseline", "score": sens["baseline"]})
            items = []
            for gid, ratio in steps:
                plan = pr.plan({gid: ratio}, self.criterion, channel_divisible=1)
                items.append(_kept_lists(plan))
            ctx = _EvalContext(self.model, pr.capture, "sparse", eval_fn, tuple(args),
                               gpus=tuple(gpus or ()))
            for index, (score, _pid) in get_executor(executor, gpus=gpus).run(
                _evaluate_plan, ctx, items
            ):
                gid, ratio = steps[index]
                record_step(sens, gid, ratio, score)
                atomic_write_json(path, sens)
                done += 1
                step(done, {"group": gid, "ratio": ratio, "score": score})
        finally:
            if bar is not None:
                bar.close()
        return sens

    def sensitivity(self) -> dict[str, Any]:
        """The finished analysis of this architecture (raises if there is none yet)."""
        path = self.workspace.sens(self.name)
        if not path.exists():
            raise WorkspaceError(f"No analysis at {path}: run runner.ana(eval_fn, args) first.")
        sens = read_json(path, kind=SENS_KIND)
        if sens.get("graph_digest") != self.pruner.graph.graph_digest():
            raise WorkspaceError(f"{path} was made for another architecture; run ana again "
                                 "with forced=True.")
        if not sens.get("complete"):
            raise WorkspaceError(f"The analysis in {path} is unfinished: run runner.ana(...) "
                                 "again to resume it.")
        return sens

    # -- allocation ----------------------------------------------------------------------
    def _allocate(self, pr: ChannelPruner, sens: dict, removal_ratio: float,
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
            removal_ratio, hi=worst * 1.0001 + 1e-9, quantum=quantum,
            counts_of=lambda r: pr.counts(r, channel_divisible),
        )

    def plan(self, removal_ratio: float, channel_divisible: int = 2,
             excludes: Iterable[object] | None = None) -> PlanPreview:
        """Preview a prune: per-group ratios, MACs, params and the predicted score."""
        removal_ratio = check_removal_ratio(removal_ratio)
        pr = self._pruner_for(excludes)
        sens = self.sensitivity()
        plan = self._allocate(pr, sens, removal_ratio, channel_divisible)
        return self._preview(pr, sens, plan, removal_ratio)

    def _preview(self, pr: ChannelPruner, sens: dict | None, plan: PruningPlan,
                 removal_ratio: float) -> PlanPreview:
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
        )

    def prune(
        self,
        removal_ratio: float | None = None,
        threshold: float | None = None,
        spec_path: str | os.PathLike | None = None,
        excludes: Iterable[object] | None = None,
        mode: str = "sparse",
        channel_divisible: int = 2,
    ) -> nn.Module:
        """The model with ``removal_ratio`` of its MACs removed (sparse by default)."""
        given = [v is not None for v in (removal_ratio, threshold, spec_path)]
        if sum(given) != 1:
            raise ValueError("Expected exactly one of removal_ratio, threshold or spec_path. "
                             f"Received: removal_ratio={removal_ratio!r}, "
                             f"threshold={threshold!r}, spec_path={spec_path!r}")
        if mode not in ("sparse", "slim"):
            raise ValueError(f"Expected mode 'sparse' or 'slim'. Received: mode={mode!r}")
        pr = self._pruner_for(excludes)
        if spec_path is not None:
            plan = self._spec_plan(pr, spec_path)
            return self._build(pr, plan, mode)
        sens = self.sensitivity()
        if threshold is not None:
            if not isinstance(threshold, (int, float)) or not threshold >= 0:
                raise ValueError(f"Expected a threshold >= 0 (relative score drop). "
                                 f"Received: threshold={threshold!r}")
            excluded = {g.id for g in pr.graph.groups if not g.prunable}
            ratios = {gid: min(MAX_GROUP_RATIO, r)
                      for gid, r in ratios_for_threshold(sens, threshold, excluded).items()}
            plan = pr.plan(ratios, self.criterion, channel_divisible)
            path = self.workspace.spec(self.name, threshold=threshold)
            meta = {"threshold": threshold}
        else:
            removal_ratio = check_removal_ratio(removal_ratio)
            plan = self._allocate(pr, sens, removal_ratio, channel_divisible)
            path = self.workspace.spec(self.name, ratio=removal_ratio)
            meta = {"removal_ratio": removal_ratio}
        preview = self._preview(pr, sens, plan, removal_ratio or 0.0)
        self._write_spec(pr, plan, path, channel_divisible=channel_divisible,
                         predicted_score=preview.predicted_score, **meta)
        return self._build(pr, plan, mode)


class OneStepPruningRunner(_Runner):
    """``search`` many candidate strategies scored with adaptive BN, ``prune`` the best."""

    def _sample_counts(self, pr: ChannelPruner, removal_ratio: float, seed: int, cid: int,
                       channel_divisible: int) -> tuple[dict[int, int], float]:
        """EagleEye's per-group ratio distribution, rescaled so MACs hit the target."""
        groups = pr.graph.prunable_groups
        quantum = {g.id: max(channel_divisible, g.blocks) / g.num_channels for g in groups}
        plan = sample_plan(
            pr.cost, [g.id for g in groups],
            lambda rr: pr.plan(rr, self.criterion, channel_divisible),
            removal_ratio, seed, cid, quantum,
            counts_of=lambda r: pr.counts(r, channel_divisible),
        )
        return {gid: len(k) for gid, k in plan.kept.items()}, pr.removal(plan)

    def _load_search(
        self, pr: ChannelPruner, path: Path, forced: bool, weights: str
    ) -> dict | None:
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

    def search(
        self,
        gpus: Sequence[str | int] | None = None,
        calibration_fn: Callable | None = None,
        calib_args: tuple = (),
        eval_fn: Callable | None = None,
        eval_args: tuple = (),
        num_subnet: int = 10,
        removal_ratio: float = 0.5,
        excludes: Iterable[object] | None = None,
        forced: bool = False,
        executor: object = None,
        *,
        seed: int = 0,
        channel_divisible: int = 2,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Sample ``num_subnet`` candidates at ``removal_ratio``, score each; resumable."""
        _check_callable(eval_fn, "eval_fn")
        if calibration_fn is not None:
            _check_callable(calibration_fn, "calibration_fn")
        if isinstance(num_subnet, bool) or not isinstance(num_subnet, (int, np.integer)) \
                or not 1 <= num_subnet <= MAX_SUBNETS:
            raise ValueError(f"Expected num_subnet, the number of candidates, between 1 and "
                             f"{MAX_SUBNETS:,}. Received: num_subnet={num_subnet!r}")
        removal_ratio = check_removal_ratio(removal_ratio)
        pr = self._pruner_for(excludes)
        weights = pr.weights_digest()
        path = self.workspace.search(self.name, removal_ratio)
        data = self._load_search(pr, path, forced, weights)
        if data is None:
            data = {
                "format_version": 1, "kind": SEARCH_KIND, "model": self.name,
                "graph_digest": pr.graph.graph_digest(), "weights_digest": weights,
                "removal_ratio": removal_ratio, "seed": seed, "criterion": self.criterion,
                "channel_divisible": channel_divisible, "higher_is_better": self.higher_is_better,
                "baseline": {"score": None, "macs": pr.original_macs / 1e6,
                             "params": pr.original_params / 1e6},
                "groups": [{"id": g.id, "name": g.name, "num_channels": g.num_channels,
                            "prunable": g.prunable} for g in pr.graph.groups],
                "num_subnet": num_subnet, "candidates": [], "complete": False,
            }
        elif data.get("weights_digest") != weights and data.get("complete"):
            return data
        seed = data["seed"]
        channel_divisible = data["channel_divisible"]
        data["num_subnet"] = max(int(num_subnet), len(data["candidates"]))
        for cid in range(len(data["candidates"]), num_subnet):
            counts, achieved = self._sample_counts(pr, removal_ratio, seed, cid,
                                                   channel_divisible)
            plan = pr.plan_from_counts(counts, self.criterion)
            data["candidates"].append({
                "id": cid,
                "kept_channels": {str(g): n for g, n in counts.items()},
                "ratios": {str(g): round(1 - n / pr.graph.groups[g].num_channels, 4)
                           for g, n in counts.items()},
                "macs": pr.macs(plan) / 1e6,
                "params": pr.params(plan) / 1e6,
                "removal": round(achieved, 6),
                "score": None,
            })
        pending = [c for c in data["candidates"][:num_subnet] if c["score"] is None]
        total = len(pending) + (data["baseline"]["score"] is None)
        _say(f"one-step search of {self.name} at {removal_ratio:.0%} MACs removal: {total} "
             f"evaluations to run ({num_subnet} candidates + baseline; saved in {path})")
        data["complete"] = False
        atomic_write_json(path, data)
        step, bar = self._progress(total, progress)
        done = 0
        try:
            if data["baseline"]["score"] is None:
                data["baseline"]["score"] = self._baseline(eval_fn, eval_args)
                atomic_write_json(path, data)
                done += 1
                step(done, {"step": "baseline", "score": data["baseline"]["score"]})
            items = [_kept_lists(pr.plan_from_counts(
                {int(g): n for g, n in c["kept_channels"].items()}, self.criterion))
                for c in pending]
            ctx = _EvalContext(self.model, pr.capture, "slim", eval_fn, tuple(eval_args),
                               calibration_fn, tuple(calib_args), tuple(gpus or ()))
            for index, (score, pid) in get_executor(executor, gpus=gpus).run(
                _evaluate_plan, ctx, items
            ):
                pending[index]["score"] = score
                pending[index]["worker_pid"] = pid
                data["ranking"] = self._ranking(data)
                data["complete"] = all(c["score"] is not None for c in data["candidates"])
                atomic_write_json(path, data)
                done += 1
                step(done, {"candidate": pending[index]["id"], "score": score})
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

    def search_result(self, removal_ratio: float) -> dict[str, Any]:
        path = self.workspace.search(self.name, check_removal_ratio(removal_ratio))
        if not path.exists():
            raise WorkspaceError(f"No search at {path}: run runner.search(..., "
                                 f"removal_ratio={removal_ratio}) first.")
        return read_json(path, kind=SEARCH_KIND)

    def prune(
        self,
        removal_ratio: float | None = None,
        index: int | None = None,
        excludes: Iterable[object] | None = None,
        mode: str = "slim",
        spec_path: str | os.PathLike | None = None,
    ) -> nn.Module:
        """The best candidate (``index=None``) or candidate ``index`` as a slim model."""
        pr = self._pruner_for(excludes)
        if spec_path is not None:
            return self._build(pr, self._spec_plan(pr, spec_path), mode)
        data = self.search_result(removal_ratio)
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
        path = self.workspace.spec(self.name, ratio=removal_ratio, candidate=tag)
        self._write_spec(pr, plan, path, removal_ratio=removal_ratio, candidate=chosen["id"],
                         score=chosen["score"], channel_divisible=data["channel_divisible"])
        return self._build(pr, plan, mode)


def get_pruning_runner(
    model: nn.Module,
    input_signature: torch.Tensor | Sequence[torch.Tensor],
    method: str = "iterative",
    **kwargs: Any,
) -> IterativePruningRunner | OneStepPruningRunner:
    """The guide's entry point: ``'iterative'`` or ``'one_step'``."""
    if method == "iterative":
        return IterativePruningRunner(model, input_signature, **kwargs)
    if method in ("one_step", "one-step", "onestep"):
        return OneStepPruningRunner(model, input_signature, **kwargs)
    raise ValueError(f"Expected method 'iterative' or 'one_step'. Received: method={method!r}")

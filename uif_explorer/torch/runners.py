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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from uif_explorer.core.allocation import check_removal_ratio
from uif_explorer.core.plan import PruningPlan
from uif_explorer.core.runner import (
    MAX_SUBNETS,
    SEARCH_KIND,
    AnalysisError,
    PlanPreview,
    Progress,
    RunnerBase,
    check_callable,
    kept_lists,
    say,
)
from uif_explorer.core.sensitivity import (
    DEFAULT_RATIOS,
    new_sensitivity,
    pending_steps,
    record_step,
)
from uif_explorer.exec.executors import get_executor
from uif_explorer.io.workspace import WorkspaceError, atomic_write_json, read_json
from uif_explorer.torch.apply import make_slim, make_sparse
from uif_explorer.torch.capture import Capture
from uif_explorer.torch.evaluation import check_score
from uif_explorer.torch.pruner import ChannelPruner

__all__ = ["AnalysisError", "IterativePruningRunner", "OneStepPruningRunner", "PlanPreview",
           "get_pruning_runner"]


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


class _Runner(RunnerBase):
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
        excludes = list(excludes) if excludes else []
        self._init_common(ChannelPruner(model, input_signature, excludes), model, workdir, name,
                          excludes, higher_is_better, criterion)

    def _make_pruner(self, excludes: list) -> ChannelPruner:
        return ChannelPruner(self.model, self.input_signature, excludes)

    def _baseline(self, eval_fn: Callable, args: tuple) -> float:
        model = copy.deepcopy(self.model)
        try:
            value = eval_fn(model, *args)
        except Exception as exc:
            raise AnalysisError(f"eval_fn raised {type(exc).__name__} on the unpruned model: "
                                f"{exc}") from exc
        return check_score(value, "eval_fn")

class IterativePruningRunner(_Runner):
    """``ana`` once, then ``prune`` to any MACs ratio (sparse model for fine-tuning)."""

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
        check_callable(eval_fn, "eval_fn")
        ratios = [float(r) for r in ratios]
        if not ratios or any(not 0 < r < 1 for r in ratios):
            raise ValueError(f"Expected sensitivity ratios in (0, 1). Received: ratios={ratios}")
        pr = self._pruner_for(excludes)
        weights = pr.weights_digest()
        path = self.workspace.sens(self.name)
        sens = self._load_sens(pr, forced, weights)
        if sens is not None and sens.get("complete"):
            if sens.get("weights_digest") != weights:
                say(f"reusing the finished analysis {path} (made on earlier weights of this "
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
        say(f"sensitivity analysis of {self.name}: {total} evaluations to run "
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
                items.append(kept_lists(plan))
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

    def plan(self, removal_ratio: float, channel_divisible: int = 2,
             excludes: Iterable[object] | None = None) -> PlanPreview:
        """Preview a prune: per-group ratios, MACs, params and the predicted score."""
        removal_ratio = check_removal_ratio(removal_ratio)
        pr = self._pruner_for(excludes)
        sens = self.sensitivity()
        plan = self._allocate(pr, sens, removal_ratio, channel_divisible)
        return self._preview(pr, sens, plan, removal_ratio)

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
            plan = self._threshold_plan(pr, sens, threshold, channel_divisible)
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
        check_callable(eval_fn, "eval_fn")
        if calibration_fn is not None:
            check_callable(calibration_fn, "calibration_fn")
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
        say(f"one-step search of {self.name} at {removal_ratio:.0%} MACs removal: {total} "
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
            items = [kept_lists(pr.plan_from_counts(
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
        chosen, tag, plan = self._choose_candidate(pr, data, index)
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

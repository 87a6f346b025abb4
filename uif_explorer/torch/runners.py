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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from uif_explorer.core.latency import DEFAULT_POINTS, LatencyModel
from uif_explorer.core.plan import PruningPlan
from uif_explorer.core.refinement import Refinement, refine_after_search
from uif_explorer.core.runner import (
    AnalysisError,
    PlanPreview,
    Progress,
    RunnerBase,
    ScoreItem,
    ScoreJob,
    kept_lists,
)
from uif_explorer.core.sensitivity import DEFAULT_RATIOS
from uif_explorer.exec.executors import get_executor
from uif_explorer.torch.apply import make_slim, make_sparse
from uif_explorer.torch.capture import Capture
from uif_explorer.torch.device import to_job_device
from uif_explorer.torch.fastscore import fast_scores
from uif_explorer.torch.latency import latency_model
from uif_explorer.torch.pruner import ChannelPruner, example_inputs

__all__ = ["AnalysisError", "IterativePruningRunner", "OneStepPruningRunner", "PlanPreview",
           "get_pruning_runner"]


@dataclass
class _EvalContext:
    """What a worker needs to score one plan (shipped once per worker)."""

    model: nn.Module
    capture: Capture
    job: ScoreJob


def _evaluate_plan(ctx: _EvalContext, item: tuple[dict[int, list[int]] | None, str]
                   ) -> tuple[float, int]:
    """Score one plan (``None``: the unpruned model) on a fresh copy; (score, worker pid)."""
    kept, what = item
    if kept is None:
        model = copy.deepcopy(ctx.model)
    else:
        plan = PruningPlan(kept={int(g): np.asarray(v, dtype=np.int64) for g, v in kept.items()})
        build = make_sparse if ctx.job.mode == "sparse" else make_slim
        model = build(ctx.model, ctx.capture, plan)
    gpus = ctx.job.gpus
    if gpus and torch.cuda.is_available():
        model = model.to(f"cuda:{gpus[os.getpid() % len(gpus)]}")
    else:
        model = to_job_device(model)  # the app's / CLI's device choice (torch/device.py)
    return ctx.job.score(model, what), os.getpid()


class _Runner(RunnerBase):
    def __init__(
        self,
        model: nn.Module,
        input_signature: torch.Tensor | Sequence[torch.Tensor] | Sequence[int],
        *,
        workdir: str | os.PathLike = ".vai",
        name: str | None = None,
        excludes: Iterable[object] | None = None,
        higher_is_better: bool = True,
        criterion: str = "l1",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected a torch.nn.Module. Received: model={type(model).__name__}")
        self.input_signature = example_inputs(input_signature)
        excludes = list(excludes) if excludes else []
        pruner = ChannelPruner(model, self.input_signature, excludes)
        self.model = pruner.model  # a sparse model from prune() comes without its masks
        self._init_common(pruner, model, workdir, name, excludes, higher_is_better, criterion)

    reuse_activations = True  # ana(reuse_activations=False): every step evaluated in full

    def _make_pruner(self, excludes: list) -> ChannelPruner:
        return ChannelPruner(self.model, self.input_signature, excludes)

    latency_runtime = "eager"  # or "onnxruntime": the runtime target='latency' is timed in
    latency_points = DEFAULT_POINTS  # channel counts timed per layer and side
    latency_threads: int | None = None  # intra-op threads it is timed with (default: torch's)

    def _measure_latency(self, pr: ChannelPruner, path: Path) -> LatencyModel:
        return latency_model(pr, self.model, self.input_signature, path, self.latency_runtime,
                             self.latency_threads, max_points=self.latency_points)

    def _score_plans(self, pr: ChannelPruner, items: Sequence[ScoreItem], job: ScoreJob,
                     executor: object = None) -> Iterator[tuple[int, float, int | None]]:
        """The baseline here, on a copy; pruned models through the executor's workers
        (or, for a built-in scorer, reusing unchanged activations: torch/fastscore, whose
        ``costs`` weight the time estimate)."""
        fast = fast_scores(self.model, pr.capture, items, job, executor=executor,
                           enabled=self.reuse_activations)
        return fast if fast is not None else self._score_full(pr, items, job, executor)

    def _score_full(self, pr: ChannelPruner, items: Sequence[ScoreItem], job: ScoreJob,
                    executor: object = None) -> Iterator[tuple[int, float, int | None]]:
        ctx = _EvalContext(self.model, pr.capture, job)
        todo = []
        for index, (plan, what) in enumerate(items):
            if plan is None:
                yield index, *_evaluate_plan(ctx, (None, what))
            else:
                todo.append(index)
        work = [(kept_lists(items[i][0]), items[i][1]) for i in todo]
        for j, (score, pid) in get_executor(executor, gpus=job.gpus).run(
                _evaluate_plan, ctx, work):
            yield todo[j], score, pid


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
        calibration_fn: Callable | None = None,
        calib_args: tuple = (),
        executor: object = None,
        gpus: Sequence[str | int] | None = None,
        progress: Progress | None = None,
        reuse_activations: bool | str = True,
    ) -> dict[str, Any]:
        """Score the model with each group pruned alone at each ratio; resumable ``.sens``.

        ``eval_fn(model, *args)`` returns a number; ``calibration_fn(model, *calib_args)``,
        when given, re-estimates BatchNorm statistics of every scored model first (recorded
        as the file's ``protocol``). ``executor``: None (here), 'process', 'ray' or an object.
        With the built-in ``top1_accuracy`` and no executor, each step runs only the layers
        its group changes (same scores; ``reuse_activations=False`` evaluates in full;
        ``"fused"`` also folds those layers, docs/analysis-speed.md).
        """
        self.reuse_activations = reuse_activations
        return self._analyse(eval_fn, args, excludes, forced, ratios, calibration_fn,
                             calib_args, progress=progress, executor=executor, gpus=gpus)

    def plan(self, removal_ratio: float, channel_divisible: int = 2,
             excludes: Iterable[object] | None = None, *, strict: bool = True,
             target: str = "macs") -> PlanPreview:
        """Preview a prune: per-group ratios, MACs, params and the predicted score
        (off target by more than 1 point is an error unless ``strict=False``);
        ``target='latency'`` adds the predicted latency."""
        return self._plan_preview(removal_ratio, "removal_ratio", channel_divisible, excludes,
                                  strict, target)

    def prune(
        self,
        removal_ratio: float | None = None,
        threshold: float | None = None,
        spec_path: str | os.PathLike | None = None,
        excludes: Iterable[object] | None = None,
        mode: str = "sparse",
        channel_divisible: int = 2,
        *,
        strict: bool = False,
        target: str = "macs",
    ) -> nn.Module:
        """The model with ``removal_ratio`` of its MACs removed (sparse by default).

        The ratio is an approximate target: when channel rounding cannot land within 1
        point, the closest plan is returned with a warning (``strict=True``: an error).
        ``target='latency'``: the ratio is a fraction of this machine's predicted latency
        (``latency_runtime``; the table is measured once per machine and model).
        """
        return self._prune(removal_ratio, threshold, spec_path, excludes, mode,
                           channel_divisible, strict, "removal_ratio", target)


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
        target: str = "macs",
        refine: Refinement | None = None,
    ) -> dict[str, Any]:
        """Sample ``num_subnet`` candidates at ``removal_ratio``, score each slim model after
        ``calibration_fn``; resumable ``<model>_ratio_<r>.search``.

        ``refine=Refinement(finetune_args=(train_loader,), steps=20, keep=4)`` then fine-tunes
        the best ``keep`` briefly, scores them again and halves until two are left
        (successive halving, :mod:`uif_explorer.core.refinement`); ``prune()`` builds its pick.
        """
        job = ScoreJob.of(eval_fn, eval_args, calibration_fn, calib_args,
                          args_name="eval_args", mode="slim", gpus=gpus)
        data = self._search(removal_ratio, "removal_ratio", job, num_subnet, excludes, forced,
                            seed, channel_divisible, progress, executor, target)
        return refine_after_search(self, data, job, refine, excludes, progress)

    def search_result(self, removal_ratio: float, target: str = "macs") -> dict[str, Any]:
        return self._search_result(removal_ratio, "removal_ratio", target)

    def prune(
        self,
        removal_ratio: float | None = None,
        index: int | None = None,
        excludes: Iterable[object] | None = None,
        mode: str = "slim",
        spec_path: str | os.PathLike | None = None,
        *,
        target: str = "macs",
    ) -> nn.Module:
        """The best candidate (``index=None``) or candidate ``index`` as a slim model."""
        if spec_path is not None:
            pr = self._pruner_for(excludes)
            return self._build(pr, self._spec_plan(pr, spec_path), mode)
        return self._prune_candidate(removal_ratio, "removal_ratio", index, excludes, mode,
                                     target)


def get_pruning_runner(
    model: nn.Module,
    input_signature: torch.Tensor | Sequence[torch.Tensor] | Sequence[int],
    method: str = "iterative",
    **kwargs: Any,
) -> IterativePruningRunner | OneStepPruningRunner:
    """The guide's entry point: ``'iterative'`` or ``'one_step'``. ``input_signature`` is an
    example input (a tensor or a tuple of tensors) or, as Keras accepts, its shape."""
    if method == "iterative":
        return IterativePruningRunner(model, input_signature, **kwargs)
    if method in ("one_step", "one-step", "onestep"):
        return OneStepPruningRunner(model, input_signature, **kwargs)
    raise ValueError(f"Expected method 'iterative' or 'one_step'. Received: method={method!r}")

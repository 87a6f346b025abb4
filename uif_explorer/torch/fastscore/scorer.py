"""Score groups pruned one at a time by running only the layers each group changes.

WHY: the sensitivity analysis scores the model with ONE group pruned at a time, on the same
images. Everything upstream of the group's first masked layer is the same as in the original
model, yet full re-evaluation recomputes it for every step. Here the model is traced once
(``torch.fx``); per image batch the original model runs once and the values at the "frontier"
(unchanged nodes read by changed ones) are kept; each pruned model then runs only its changed
nodes, reading the frontier values.

Exactness: ``call_module`` nodes call the very modules of the (sparse) model and function or
method nodes the same torch calls with the same arguments, in the order eager ``model(x)``
runs them, so the logits are bit-identical (``torch.equal``) to full evaluation. This is
checked on the first batch before any score is given; an untraceable model, a scorer the engine
does not control, observable in-place mutations or any difference fall back to full evaluation.
Memory is bounded: the work is split into chunks of groups whose kept activations for one
batch fit ``budget_bytes`` (default a quarter of the available memory).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from uif_explorer.core.plan import PruningPlan
from uif_explorer.core.scores import RESUME_HINT, AnalysisError, ScoreJob
from uif_explorer.core.uncertainty import note_images
from uif_explorer.torch.apply import make_sparse, tensor_masks
from uif_explorer.torch.capture import Capture
from uif_explorer.torch.device import job_device
from uif_explorer.torch.evaluation import (
    _split_batch,
    _to_device,
    class_targets,
    logits_of,
    model_device,
    top1_accuracy,
)
from uif_explorer.torch.fastscore import fused as fold
from uif_explorer.torch.fastscore.fused import Folder, channels_last
from uif_explorer.torch.fastscore.graph import (
    ancestors,
    as_tuple,
    default_budget,
    downstream,
    fetch,
    hooked,
    mutation_safe,
    node_costs,
    program_of,
    seeds,
    trace,
)

__all__ = ["ReuseScorer", "reuse_scorer"]


@dataclass
class _Step:
    """One pruned plan: its changed nodes, their frontier and the sparse modules they call."""

    index: int
    group: object
    order: list[fx.Node]
    frontier: set[fx.Node]
    modules: dict[str, nn.Module]
    attrs: dict[str, Any]


class Scores:
    """Scores as they finish, with each item's relative ``costs`` (core/eta.py reads them)."""

    def __init__(self, scores: Iterator[tuple[int, float, None]],
                 costs: dict[int, float]) -> None:
        self._scores, self.costs = scores, costs

    def __iter__(self) -> Iterator[tuple[int, float, None]]:
        return self._scores


# -- the scorer --------------------------------------------------------------------------------
def _loader_and_options(job: ScoreJob) -> tuple[Iterable, torch.device | None, int | None] | None:
    """The loader, device and max_batches of a built-in ``top1_accuracy`` job, else None."""
    if job.eval_fn is not top1_accuracy or job.calibration_fn is not None or job.gpus:
        return None
    if job.mode != "sparse":
        return None  # slim candidates change the first layers: nothing to reuse
    try:
        bound = inspect.signature(top1_accuracy).bind(None, *job.eval_args)
    except TypeError:
        return None
    a = bound.arguments
    device = a.get("device")
    return a["dataloader"], (torch.device(device) if device is not None else None), \
        a.get("max_batches")


class ReuseScorer:
    """Top-1 accuracy of the baseline and of sparse plans, reusing unchanged activations."""

    def __init__(self, model: nn.Module, capture: Capture, gm: fx.GraphModule,
                 loader: Iterable, device: torch.device, max_batches: int | None,
                 budget_bytes: int, fused: bool = False) -> None:
        self.original = copy.deepcopy(model).eval().to(device)
        self.capture = capture
        self.program = program_of(gm, self.original)
        self.loader, self.device, self.max_batches = loader, device, max_batches
        self.budget = budget_bytes
        self._base_hooks = hooked(self.original)
        self.sizes: dict[fx.Node, int] = {}
        self.n_chunks = 0
        # attempt 2 (fused.py): changed layers folded and channels-last; None: exact
        self.folder = Folder(self.program.modules) if fused else None

    def step(self, index: int, plan: PruningPlan) -> _Step:
        sparse = make_sparse(self.original, self.capture, plan).eval()
        masked = set(tensor_masks(self.capture, plan))
        first = seeds(self.program.nodes, masked, hooked(sparse) - self._base_hooks)
        order = downstream(self.program.nodes, first)
        changed = set(order)
        frontier = {a for n in order for a in n.all_input_nodes if a not in changed}
        sparse_modules = dict(sparse.named_modules())
        modules = dict(self.program.modules)
        modules.update({str(n.target): sparse_modules[str(n.target)]
                        for n in first if n.op == "call_module"})
        attrs = {str(n.target): fetch(sparse, str(n.target)) for n in first if n.op == "get_attr"}
        group = tuple(sorted(plan.kept))
        if self.folder is not None:
            modules = self.folder.modules(order, modules)
        return _Step(index, group, order, frontier, modules, attrs)

    def _batches(self) -> Iterator[tuple[Any, Any]]:
        for i, batch in enumerate(self.loader):
            if self.max_batches is not None and i >= self.max_batches:
                return
            inputs, labels = _split_batch(batch, need_labels=True)
            yield _to_device(inputs, self.device), labels

    def _record(self, inputs: Any, keep: set[fx.Node], full: bool,
                sizes: dict[fx.Node, int] | None = None) -> tuple[dict, Any]:
        """Run the original model as far as needed; the kept values and the logits (full)."""
        p = self.program
        env: dict[fx.Node, Any] = dict(zip(p.placeholders, as_tuple(inputs), strict=True))
        order = p.nodes if full else ancestors(p.nodes, keep)
        out = p.run(order, env, p.modules, {}, keep=keep, sizes=sizes)
        return {n: env[n] for n in keep if n in env}, (logits_of(out) if full else None)

    def _changed_logits(self, step: _Step, cache: dict[fx.Node, Any]) -> torch.Tensor:
        env = {n: cache[n] if self.folder is None else channels_last(cache[n])
               for n in step.frontier}
        return logits_of(self.program.run(step.order, env, step.modules, step.attrs,
                                          frozen=step.frontier))

    def verify(self, inputs: Any, step: _Step | None, plan: PruningPlan | None) -> bool:
        """Bit-identical logits on the first batch for the baseline and the first plan?
        (The same run measures every node's bytes per batch, kept in ``self.sizes``.)"""
        with torch.no_grad():
            self.sizes = {}
            cache, logits = self._record(inputs, set(step.frontier) if step else set(), True,
                                         sizes=self.sizes)
            if not torch.equal(logits, logits_of(self.original(*as_tuple(inputs)))):
                return False
            if step is None or plan is None:
                return True
            expect = logits_of(make_sparse(self.original, self.capture, plan).eval()(
                *as_tuple(inputs)))
            changed = self._changed_logits(step, cache)
            return (torch.equal(changed, expect) if self.folder is None
                    else fold.close_enough(changed, expect))

    def _verified(self, inputs: Any, steps: list[_Step], items: Sequence, planned: list[int]
                  ) -> bool:
        return self.verify(inputs, steps[0] if steps else None,
                           items[planned[0]][0] if planned else None)

    def chunks(self, steps: list[_Step], per_batch: dict[fx.Node, int],
               n_batches: int) -> list[list[_Step]]:
        """Consecutive steps (graph order) whose kept activations for all batches fit the
        budget: the original model then runs once per chunk, and only up to its frontier."""
        parts: list[list[_Step]] = []
        kept: set[fx.Node] = set()
        for s in steps:
            grown = kept | s.frontier
            if parts and sum(per_batch.get(f, 0) for f in grown) * n_batches <= self.budget:
                parts[-1].append(s)
                kept = grown
            else:
                parts.append([s])
                kept = set(s.frontier)
        return parts

    def _count_batches(self) -> int:
        try:
            n = len(self.loader)  # type: ignore[arg-type]
        except TypeError:
            n = sum(1 for _ in self._batches())
        return n if self.max_batches is None else min(n, self.max_batches)

    def score(self, items: Sequence[tuple[PruningPlan | None, str]]) -> Scores | None:
        """Scores per item index (any order), or None: use full evaluation instead."""
        if iter(self.loader) is self.loader:  # a one-shot iterator cannot be read twice
            return None
        planned = [i for i, (plan, _) in enumerate(items) if plan is not None]
        baseline = [i for i, (plan, _) in enumerate(items) if plan is None]
        try:
            first = next(self._batches(), None)
            if first is None or not mutation_safe(self.program.nodes, self.program.inplace):
                return None
            steps = [self.step(i, items[i][0]) for i in planned]
            if self.folder is not None and not self._verified(first[0], steps, items, planned):
                self.folder = None  # folded suffix off the mark: the exact one instead
                steps = [self.step(i, items[i][0]) for i in planned]
            if not self._verified(first[0], steps, items, planned):
                return None
            sizes = self.sizes
            n_batches = self._count_batches()
        except Exception:  # anything the trace gets wrong: full evaluation decides
            return None
        if steps and max(sum(sizes.get(f, 0) for f in s.frontier)
                         for s in steps) * n_batches > self.budget:
            return None
        parts = self.chunks(steps, sizes, n_batches)
        self.n_chunks = len(parts)  # how often the original model runs over the data
        return Scores(_as_analysis_errors(self._scores(baseline, steps, parts)),
                      self.costs(baseline, parts))

    def costs(self, baseline: list[int], parts: list[list[_Step]]) -> dict[int, float]:
        """Each item's work for the time estimate: its changed nodes, plus its chunk's
        recording run for the step that runs first in the chunk (the baseline: everything)."""
        work = node_costs(self.program, self.sizes)
        out = {i: sum(work.values()) for i in baseline}
        for k, part in enumerate(parts):
            ordered = _spread(part)
            for s in ordered:
                out[s.index] = sum(work[n] for n in s.order)
            if ordered and not (baseline and k == 0):
                keep = set().union(*(s.frontier for s in part))
                out[ordered[0].index] += sum(work[n] for n in ancestors(self.program.nodes,
                                                                        keep))
        return out

    def _scores(self, baseline: list[int], steps: list[_Step], parts: list[list[_Step]]
                ) -> Iterator[tuple[int, float, None]]:
        """Per chunk: record the frontier of every batch once, then each step in turn (each
        finished score is yielded, so progress and the saved file advance step by step)."""
        for k, part in enumerate(parts or [[]]):
            keep = set().union(*(s.frontier for s in part)) if part else set()
            full = bool(baseline) and k == 0
            cached, labels = [], []
            correct = total = 0
            with torch.inference_mode():
                for inputs, batch_labels in self._batches():
                    cache, logits = self._record(inputs, keep, full=full)
                    if self.folder is not None:  # laid out once for the folded layers
                        cache = {n: channels_last(v) for n, v in cache.items()}
                    cached.append(cache)
                    labels.append(batch_labels)
                    if full:
                        c, n = _counts(logits, batch_labels)
                        correct, total = correct + c, total + n
            if full:
                for i in baseline:
                    note_images(total)  # the runner records the image count (core/uncertainty)
                    yield i, 100.0 * correct / total, None
            for s in _spread(part):
                correct = total = 0
                with torch.inference_mode():
                    for cache, batch_labels in zip(cached, labels, strict=True):
                        c, n = _counts(self._changed_logits(s, cache), batch_labels)
                        correct, total = correct + c, total + n
                note_images(total)
                yield s.index, 100.0 * correct / total, None


def _as_analysis_errors(scores: Iterator[tuple[int, float, None]]
                        ) -> Iterator[tuple[int, float, None]]:
    """A failure past the checked first batch reads as full evaluation's would."""
    try:
        yield from scores
    except Exception as exc:
        raise AnalysisError(f"eval_fn raised {type(exc).__name__} while scoring with reused "
                            f"activations: {exc}. {RESUME_HINT}") from exc


def _counts(logits: torch.Tensor, labels: Any) -> tuple[int, int]:
    """Correct predictions and predictions of one batch, as ``top1_accuracy`` counts them."""
    targets = class_targets(logits, labels)
    return int((logits.argmax(dim=1) == targets).sum()), targets.numel()


def _spread(steps: list[_Step]) -> list[_Step]:
    """Long and short steps alternated, so the time per step settles early (steady ETA)."""
    by_cost = sorted(steps, key=lambda s: len(s.order))
    out = []
    while by_cost:
        out.append(by_cost.pop())
        if by_cost:
            out.append(by_cost.pop(0))
    return out


def reuse_scorer(model: nn.Module, capture: Capture, job: ScoreJob,
                 budget_bytes: int | None = None, fused: bool = False) -> ReuseScorer | None:
    """A scorer reusing unchanged activations, or None when ``job`` is not one it can run
    exactly (a user's own eval_fn, calibration, slim models, GPUs, an untraceable model)."""
    options = _loader_and_options(job)
    if options is None:
        return None
    loader, device, max_batches = options
    gm = trace(model)
    if gm is None:
        return None
    device = device or job_device() or model_device(model)  # job_device: torch/device.py
    budget = default_budget() if budget_bytes is None else int(budget_bytes)
    return ReuseScorer(model, capture, gm, loader, device, max_batches, budget, fused)


def fast_scores(model: nn.Module, capture: Capture, items: Sequence[tuple[PruningPlan | None, str]],
                job: ScoreJob, *, enabled: bool | str = True, executor: object = None,
                budget_bytes: int | None = None) -> Scores | None:
    """The runner's hook: scores reusing activations, or None for the usual full evaluation
    (switched off, another executor, or a job :func:`reuse_scorer` cannot run exactly).
    ``enabled="fused"``: the changed layers folded and channels-last (fused.py)."""
    if not enabled or executor is not None:
        return None
    scorer = reuse_scorer(model, capture, job, budget_bytes, fused=enabled == "fused")
    return None if scorer is None else scorer.score(items)

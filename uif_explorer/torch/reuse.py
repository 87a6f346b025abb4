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
import operator
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from uif_explorer.core.plan import PruningPlan
from uif_explorer.core.scores import ScoreJob
from uif_explorer.torch.apply import make_sparse, tensor_masks
from uif_explorer.torch.capture import Capture
from uif_explorer.torch.evaluation import (
    _split_batch,
    _to_device,
    class_targets,
    logits_of,
    model_device,
    top1_accuracy,
)

__all__ = ["ReuseScorer", "available_bytes", "reuse_scorer", "suggest_batch_size"]

_INPLACE_OPS = {operator.iadd, operator.isub, operator.imul, operator.itruediv,
                operator.ifloordiv, operator.imod, operator.ipow, operator.iand,
                operator.ior, operator.ixor, operator.ilshift, operator.irshift,
                operator.imatmul}


def available_bytes() -> int:
    """Memory the OS reports as available (Linux ``MemAvailable``; else free pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_budget() -> int:
    """A quarter of the available memory: room for the kept activations of one batch."""
    return available_bytes() // 4


# -- graph helpers ---------------------------------------------------------------------------
def _trace(model: nn.Module) -> fx.GraphModule | None:
    try:
        return fx.symbolic_trace(model)
    except Exception:  # data-dependent control flow etc.: full evaluation instead
        return None


def _fetch(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _inplace(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Does ``node`` overwrite its first argument (``+=``, ``relu_``, ReLU(inplace=True))?"""
    if node.kwargs.get("inplace") is True:
        return True
    if node.op == "call_function":
        return node.target in _INPLACE_OPS or getattr(node.target, "__name__", "").endswith("_")
    if node.op == "call_method":
        return str(node.target).endswith("_")
    if node.op == "call_module":
        return getattr(modules[str(node.target)], "inplace", False) is True
    return False


def _mutation_safe(nodes: list[fx.Node], inplace: set[fx.Node]) -> bool:
    """False when a value is read after an in-place op overwrote it under an older name
    (then a kept copy from before the op would differ from what eager code reads)."""
    pos = {n: i for i, n in enumerate(nodes)}
    root: dict[fx.Node, fx.Node] = {}
    members: dict[fx.Node, list[fx.Node]] = {}
    for n in nodes:
        first = n.args[0] if n.args else None
        r = root.get(first, first) if n in inplace and isinstance(first, fx.Node) else n
        root[n] = r
        members.setdefault(r, []).append(n)
        if n in inplace:
            for m in members[r][:-1]:
                if any(pos[u] > pos[n] for u in m.users):
                    return False
    return True


def _seeds(graph_nodes: list[fx.Node], masked: set[str], hooked: set[str]) -> set[fx.Node]:
    """Nodes that read a pruned tensor (or a module the sparse model hooks) directly."""

    def hit(target: str, names: set[str]) -> bool:
        return any(t == target or t.startswith(target + ".") for t in names)

    owners = {name.rpartition(".")[0] for name in masked} | hooked
    out = set()
    for n in graph_nodes:
        if n.op == "call_module" and hit(str(n.target), owners):
            out.add(n)
        elif n.op == "get_attr" and hit(str(n.target), masked | hooked):
            out.add(n)
    return out


def _downstream(nodes: list[fx.Node], seeds: set[fx.Node]) -> list[fx.Node]:
    changed = set(seeds)
    for n in nodes:
        if n not in changed and any(a in changed for a in n.all_input_nodes):
            changed.add(n)
    return [n for n in nodes if n in changed]


def _hooked(model: nn.Module) -> set[str]:
    return {name for name, m in model.named_modules()
            if name and (m._forward_hooks or m._forward_pre_hooks)}


# -- running a list of nodes -----------------------------------------------------------------
@dataclass
class _Program:
    """The traced model and, per pruned plan, the nodes to run and the frontier they read."""

    nodes: list[fx.Node]
    modules: dict[str, nn.Module]
    root: nn.Module
    inplace: set[fx.Node]
    placeholders: list[fx.Node] = field(default_factory=list)

    def run(self, order: Sequence[fx.Node], env: dict[fx.Node, Any],
            modules: dict[str, nn.Module], attrs: dict[str, Any],
            keep: set[fx.Node] = frozenset(), frozen: set[fx.Node] = frozenset()) -> Any:
        """Run ``order`` reading ``env``; values in ``keep`` are copied into ``env`` as they
        are made (before later in-place ops); ``frozen`` values are never overwritten."""
        last: dict[fx.Node, int] = {}
        for i, n in enumerate(order):
            for a in n.all_input_nodes:
                last[a] = i
        result = None
        for i, n in enumerate(order):
            if n.op == "placeholder":
                continue
            args = fx.node.map_arg(n.args, env.__getitem__)
            kwargs = fx.node.map_arg(n.kwargs, env.__getitem__)
            if n in self.inplace and n.args and n.args[0] in frozen:
                args = (args[0].clone(), *args[1:])
            if n.op == "output":
                result = args[0]
                break
            if n.op == "call_module":
                value = modules[str(n.target)](*args, **kwargs)
            elif n.op == "call_function":
                value = n.target(*args, **kwargs)
            elif n.op == "call_method":
                value = getattr(args[0], str(n.target))(*args[1:], **kwargs)
            else:  # get_attr
                value = attrs[str(n.target)] if str(n.target) in attrs else _fetch(
                    self.root, str(n.target))
            env[n] = value.clone() if n in keep and isinstance(value, torch.Tensor) else value
            for a in n.all_input_nodes:
                if last.get(a) == i and a not in keep and a not in frozen:
                    env.pop(a, None)
        return result


def _ancestors(nodes: list[fx.Node], wanted: set[fx.Node]) -> list[fx.Node]:
    need = set(wanted)
    for n in reversed(nodes):
        if n in need:
            need.update(n.all_input_nodes)
    return [n for n in nodes if n in need]


@dataclass
class _Step:
    """One pruned plan: its changed nodes, their frontier and the sparse modules they call."""

    index: int
    group: object
    order: list[fx.Node]
    frontier: set[fx.Node]
    modules: dict[str, nn.Module]
    attrs: dict[str, Any]


def _bytes(value: Any) -> int:
    return value.numel() * value.element_size() if isinstance(value, torch.Tensor) else 0


def _sizes(program: _Program, inputs: Any) -> dict[fx.Node, int]:
    """Bytes of every node's value for one batch (one run of the original model)."""
    env = dict(zip(program.placeholders, _as_tuple(inputs), strict=True))
    keep = set(program.nodes)
    with torch.no_grad():
        program.run(program.nodes, env, program.modules, {}, keep=keep)
    return {n: _bytes(v) for n, v in env.items()}


def _as_tuple(inputs: Any) -> tuple:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def suggest_batch_size(model: nn.Module, example: torch.Tensor | Sequence[torch.Tensor],
                       budget_bytes: int | None = None, largest: int = 256) -> int:
    """The largest power of two (<= ``largest``) whose activations, all kept, fit the budget.

    WHY: bigger batches amortise per-call overhead, but a batch whose activations do not fit
    in memory swaps or fails; this sizes evaluation batches for the machine it runs on.
    """
    budget = default_budget() if budget_bytes is None else int(budget_bytes)
    gm = _trace(model)
    one = tuple(t[:1] for t in _as_tuple(example))
    if gm is None:
        per_image = sum(_bytes(t) for t in one) * 64  # a rough guess without a trace
    else:
        program = _program(gm, copy.deepcopy(model).eval())
        per_image = sum(_sizes(program, one).values())
    size = 1
    while size * 2 <= largest and size * 2 * per_image <= budget:
        size *= 2
    return size


def _program(gm: fx.GraphModule, model: nn.Module) -> _Program:
    modules = dict(model.named_modules())
    nodes = list(gm.graph.nodes)
    inplace = {n for n in nodes if _inplace(n, modules)}
    return _Program(nodes, modules, model, inplace,
                    [n for n in nodes if n.op == "placeholder"])


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
                 budget_bytes: int) -> None:
        self.original = copy.deepcopy(model).eval()
        self.capture = capture
        self.program = _program(gm, self.original)
        self.loader, self.device, self.max_batches = loader, device, max_batches
        self.budget = budget_bytes
        self._base_hooks = _hooked(self.original)
        self.sizes: dict[fx.Node, int] = {}

    def step(self, index: int, plan: PruningPlan) -> _Step:
        sparse = make_sparse(self.original, self.capture, plan).eval()
        masked = set(tensor_masks(self.capture, plan))
        seeds = _seeds(self.program.nodes, masked, _hooked(sparse) - self._base_hooks)
        order = _downstream(self.program.nodes, seeds)
        changed = set(order)
        frontier = {a for n in order for a in n.all_input_nodes if a not in changed}
        sparse_modules = dict(sparse.named_modules())
        modules = dict(self.program.modules)
        modules.update({str(n.target): sparse_modules[str(n.target)]
                        for n in seeds if n.op == "call_module"})
        attrs = {str(n.target): _fetch(sparse, str(n.target)) for n in seeds if n.op == "get_attr"}
        group = tuple(sorted(plan.kept))
        return _Step(index, group, order, frontier, modules, attrs)

    def _batches(self) -> Iterator[tuple[Any, Any]]:
        for i, batch in enumerate(self.loader):
            if self.max_batches is not None and i >= self.max_batches:
                return
            inputs, labels = _split_batch(batch, need_labels=True)
            yield _to_device(inputs, self.device), labels

    def _record(self, inputs: Any, keep: set[fx.Node], full: bool) -> tuple[dict, Any]:
        """Run the original model as far as needed; the kept values and the logits (full)."""
        p = self.program
        env: dict[fx.Node, Any] = dict(zip(p.placeholders, _as_tuple(inputs), strict=True))
        order = p.nodes if full else _ancestors(p.nodes, keep)
        out = p.run(order, env, p.modules, {}, keep=keep)
        return {n: env[n] for n in keep}, (logits_of(out) if full else None)

    def _changed_logits(self, step: _Step, cache: dict[fx.Node, Any]) -> torch.Tensor:
        env = {n: cache[n] for n in step.frontier}
        return logits_of(self.program.run(step.order, env, step.modules, step.attrs,
                                          frozen=step.frontier))

    def verify(self, inputs: Any, step: _Step | None, plan: PruningPlan | None) -> bool:
        """Bit-identical logits on the first batch for the baseline and the first plan?
        (The same run measures every node's bytes per batch, kept in ``self.sizes``.)"""
        with torch.no_grad():
            cache, logits = self._record(inputs, set(self.program.nodes), True)
            self.sizes = {n: _bytes(v) for n, v in cache.items()}
            if not torch.equal(logits, logits_of(self.original(*_as_tuple(inputs)))):
                return False
            if step is None or plan is None:
                return True
            expect = logits_of(make_sparse(self.original, self.capture, plan).eval()(
                *_as_tuple(inputs)))
            return torch.equal(self._changed_logits(step, cache), expect)

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

    def score(self, items: Sequence[tuple[PruningPlan | None, str]]
              ) -> Iterator[tuple[int, float, None]] | None:
        """Scores per item index (any order), or None: use full evaluation instead."""
        if iter(self.loader) is self.loader:  # a one-shot iterator cannot be read twice
            return None
        planned = [i for i, (plan, _) in enumerate(items) if plan is not None]
        baseline = [i for i, (plan, _) in enumerate(items) if plan is None]
        try:
            first = next(self._batches(), None)
            if first is None or not _mutation_safe(self.program.nodes, self.program.inplace):
                return None
            steps = [self.step(i, items[i][0]) for i in planned]
            if not self.verify(first[0], steps[0] if steps else None,
                               items[planned[0]][0] if planned else None):
                return None
            sizes = self.sizes
            n_batches = self._count_batches()
        except Exception:  # anything the trace gets wrong: full evaluation decides
            return None
        if steps and max(sum(sizes.get(f, 0) for f in s.frontier)
                         for s in steps) * n_batches > self.budget:
            return None
        return self._scores(baseline, steps, self.chunks(steps, sizes, n_batches))

    def _scores(self, baseline: list[int], steps: list[_Step], parts: list[list[_Step]]
                ) -> Iterator[tuple[int, float, None]]:
        """Per chunk: record the frontier of every batch once, then each step in turn (each
        finished score is yielded, so progress and the saved file advance step by step)."""
        for k, part in enumerate(parts or [[]]):
            keep = set().union(*(s.frontier for s in part)) if part else set()
            full = bool(baseline) and k == 0
            cached, labels = [], []
            correct = total = 0
            with torch.no_grad():
                for inputs, batch_labels in self._batches():
                    cache, logits = self._record(inputs, keep, full=full)
                    cached.append(cache)
                    labels.append(batch_labels)
                    if full:
                        c, n = _counts(logits, batch_labels)
                        correct, total = correct + c, total + n
            if full:
                for i in baseline:
                    yield i, 100.0 * correct / total, None
            for s in _spread(part):
                correct = total = 0
                with torch.no_grad():
                    for cache, batch_labels in zip(cached, labels, strict=True):
                        c, n = _counts(self._changed_logits(s, cache), batch_labels)
                        correct, total = correct + c, total + n
                yield s.index, 100.0 * correct / total, None


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
                 budget_bytes: int | None = None) -> ReuseScorer | None:
    """A scorer reusing unchanged activations, or None when ``job`` is not one it can run
    exactly (a user's own eval_fn, calibration, slim models, GPUs, an untraceable model)."""
    options = _loader_and_options(job)
    if options is None:
        return None
    loader, device, max_batches = options
    gm = _trace(model)
    if gm is None:
        return None
    device = model_device(model) if device is None else device
    budget = default_budget() if budget_bytes is None else int(budget_bytes)
    return ReuseScorer(model, capture, gm, loader, device, max_batches, budget)

"""The traced model as a list of nodes that can be run in part (for :mod:`.scorer`).

WHY a hand-written runner instead of ``GraphModule.forward``: it runs any subset of nodes from
given values, copies the values it must keep as they are made (before in-place ops overwrite
them), frees the rest after their last use, and takes the modules to call from a mapping, so
one trace serves the original model and every pruned variant (same modules, same calls, same
order as eager ``model(x)``).
"""

from __future__ import annotations

import copy
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

__all__ = ["Program", "available_bytes", "default_budget", "suggest_batch_size", "trace"]

_INPLACE_OPS = {operator.iadd, operator.isub, operator.imul, operator.itruediv,
                operator.ifloordiv, operator.imod, operator.ipow, operator.iand,
                operator.ior, operator.ixor, operator.ilshift, operator.irshift,
                operator.imatmul}
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


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
def trace(model: nn.Module) -> fx.GraphModule | None:
    try:
        return fx.symbolic_trace(model)
    except Exception:  # data-dependent control flow etc.: full evaluation instead
        return None


def fetch(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def is_inplace(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
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


def mutation_safe(nodes: list[fx.Node], inplace: set[fx.Node]) -> bool:
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


def seeds(graph_nodes: list[fx.Node], masked: set[str], hooked: set[str]) -> set[fx.Node]:
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


def downstream(nodes: list[fx.Node], seeds: set[fx.Node]) -> list[fx.Node]:
    changed = set(seeds)
    for n in nodes:
        if n not in changed and any(a in changed for a in n.all_input_nodes):
            changed.add(n)
    return [n for n in nodes if n in changed]


def hooked(model: nn.Module) -> set[str]:
    return {name for name, m in model.named_modules()
            if name and (m._forward_hooks or m._forward_pre_hooks)}


# -- running a list of nodes -----------------------------------------------------------------
@dataclass
class Program:
    """The traced model and, per pruned plan, the nodes to run and the frontier they read."""

    nodes: list[fx.Node]
    modules: dict[str, nn.Module]
    root: nn.Module
    inplace: set[fx.Node]
    placeholders: list[fx.Node] = field(default_factory=list)

    def run(self, order: Sequence[fx.Node], env: dict[fx.Node, Any],
            modules: dict[str, nn.Module], attrs: dict[str, Any],
            keep: set[fx.Node] = frozenset(), frozen: set[fx.Node] = frozenset(),
            sizes: dict[fx.Node, int] | None = None) -> Any:
        """Run ``order`` reading ``env``; values in ``keep`` are copied into ``env`` as they
        are made (before later in-place ops); ``frozen`` values are never overwritten;
        ``sizes`` (when given) receives every value's bytes."""
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
                value = attrs[str(n.target)] if str(n.target) in attrs else fetch(
                    self.root, str(n.target))
            env[n] = value.clone() if n in keep and isinstance(value, torch.Tensor) else value
            if sizes is not None:
                sizes[n] = nbytes(value)
            for a in n.all_input_nodes:
                if last.get(a) == i and a not in keep and a not in frozen:
                    env.pop(a, None)
        return result


def ancestors(nodes: list[fx.Node], wanted: set[fx.Node]) -> list[fx.Node]:
    need = set(wanted)
    for n in reversed(nodes):
        if n in need:
            need.update(n.all_input_nodes)
    return [n for n in nodes if n in need]


def nbytes(value: Any) -> int:
    return value.numel() * value.element_size() if isinstance(value, torch.Tensor) else 0


def node_sizes(program: Program, inputs: Any) -> dict[fx.Node, int]:
    """Bytes of every node's value for one batch (one run of the original model)."""
    env = dict(zip(program.placeholders, as_tuple(inputs), strict=True))
    sizes: dict[fx.Node, int] = {}
    with torch.no_grad():
        program.run(program.nodes, env, program.modules, {}, sizes=sizes)
    return sizes


def node_costs(program: Program, sizes: dict[fx.Node, int]) -> dict[fx.Node, float]:
    """Rough work per node for one batch: multiply-adds of convolutions and linear layers
    (output elements x weights per output), one per output element elsewhere. WHY: it
    weights the time estimate, as a step deep in the network runs far less than one early."""
    out = {}
    for n in program.nodes:
        m = program.modules.get(str(n.target)) if n.op == "call_module" else None
        w = getattr(m, "weight", None)
        per = w[0].numel() if isinstance(m, _WEIGHTED) and isinstance(w, torch.Tensor) else 1
        out[n] = sizes.get(n, 0) / 4 * per
    return out


def as_tuple(inputs: Any) -> tuple:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def suggest_batch_size(model: nn.Module, example: torch.Tensor | Sequence[torch.Tensor],
                       budget_bytes: int | None = None, largest: int = 256) -> int:
    """The largest power of two (<= ``largest``) whose activations, all kept, fit the budget.

    WHY: bigger batches amortise per-call overhead, but a batch whose activations do not fit
    in memory swaps or fails; this sizes evaluation batches for the machine it runs on.
    """
    budget = default_budget() if budget_bytes is None else int(budget_bytes)
    gm = trace(model)
    one = tuple(t[:1] for t in as_tuple(example))
    if gm is None:
        per_image = sum(nbytes(t) for t in one) * 64  # a rough guess without a trace
    else:
        program = program_of(gm, copy.deepcopy(model).eval())
        per_image = sum(node_sizes(program, one).values())
    size = 1
    while size * 2 <= largest and size * 2 * per_image <= budget:
        size *= 2
    return size


def program_of(gm: fx.GraphModule, model: nn.Module) -> Program:
    modules = dict(model.named_modules())
    nodes = list(gm.graph.nodes)
    inplace = {n for n in nodes if is_inplace(n, modules)}
    return Program(nodes, modules, model, inplace,
                    [n for n in nodes if n.op == "placeholder"])

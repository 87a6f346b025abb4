"""The OFA search space of one model: elastic groups and kernels, settings, costs, selections.

Built once by :func:`build_ofa_model` from a :class:`~uif_explorer.torch.pruner.ChannelPruner`
capture:

1. **Which groups are elastic.** A channel group (coupled layers share one width) is elastic
   when it is prunable, not split into conv/norm blocks, every tensor touching it belongs to a
   layer with a dynamic version (Conv2d, ConvTranspose2d, BatchNorm2d, Linear), it is not
   excluded, and it has more than one width candidate. Depthwise convs follow their producer
   through the groups (the "mobile" space of the reference comes out of the graph).
2. **Reordering by importance.** Every tensor axis that carries an elastic group's channels is
   permuted so that the group's most important channel comes first, wherever it appears
   (producer outputs, consumer inputs, BatchNorm statistics, the inputs of a layer after
   ``torch.cat``, flattened features, equal ``chunk`` halves). The positions of a group in one
   axis are split into *occurrence classes* (the t-th appearance of each channel: one class per
   concat segment, per spatial position after a flatten, per chunk, per depthwise multiplier
   copy) and each class is sorted by rank, which is exactly what permuting the producers does
   downstream. The full model computes the same function afterwards (tested).
3. **Selections.** A width choice keeps the top-k channels of a group, i.e. the first k
   positions of every occurrence class: one boolean keep-vector per tensor axis, turned into a
   prefix length (almost always) or an index tensor (after a concat). The same plan gives the
   static subnet through :func:`~uif_explorer.torch.apply.make_slim`, so static == dynamic.

The permuted capture (canonical order = importance order = physical order) is kept in the
space; MACs and params of a subnet come from its :class:`~uif_explorer.core.plan.CostModel`,
corrected for elastic kernels, and equal the FLOP counter on the static subnet (tested).
"""

from __future__ import annotations

import copy
import difflib
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from uif_explorer.core.channels import FIXED_OUTPUT
from uif_explorer.core.evolution import ChoiceSpace, Genome
from uif_explorer.core.plan import CostModel, PruningPlan, kept_count, kept_io
from uif_explorer.torch.apply import make_slim
from uif_explorer.torch.capture import Capture, resolve_excludes
from uif_explorer.torch.ofa.dynamic import (
    DYNAMIC_OF,
    SELECTABLE,
    is_dynamic,
    make_dynamic,
    make_plain,
)

SPACE_ATTR = "ofa_space"
DEFAULT_EXPAND_RATIO = (0.5, 0.75, 1.0)


class SubnetSettingError(ValueError):
    """A subnet_setting that does not fit this OFA model."""


@dataclass
class ElasticGroup:
    """A channel group whose width is searched; ``widths`` ascending."""

    id: int
    name: str
    channels: int
    widths: tuple[int, ...]
    modules: list[str]


@dataclass
class ElasticKernel:
    """A square odd conv kernel > 3 whose size is searched (centre crops), ``kernels`` ascending."""

    module: str
    max_kernel: int
    kernels: tuple[int, ...]


@dataclass
class _SliceInfo:
    module: str
    attr: str
    dim: int
    roots: np.ndarray


def _no_such(message: str, name: str, known: list[str]) -> SubnetSettingError:
    """``message: known`` and the closest names to ``name`` (a typo is the usual cause)."""
    close = difflib.get_close_matches(name, known, n=3)
    return SubnetSettingError(f"{message}: {known}" + (f"; did you mean {close}?" if close else ""))


def _option(options: tuple[int, ...], value: int, problem: str) -> int:
    """The gene index of ``value`` among a group's or kernel's ``options``, or ``problem``."""
    if value not in options:
        raise SubnetSettingError(f"{problem}. Expected one of {list(options)}")
    return options.index(value)


@dataclass
class OFASpace:
    """Everything an OFA model needs to switch subnets, build static ones and cost them."""

    capture: Capture  # the permuted capture: canonical order == physical order
    groups: list[ElasticGroup]
    kernels: list[ElasticKernel]
    fixed: list[dict[str, Any]]  # groups kept at full width, with the reason
    args: dict[str, Any]  # the ofa_model arguments (JSON-able)
    model_name: str
    dynamic_modules: list[str]
    depthwise: dict[str, tuple[bool, int]]  # module -> (transposed, channel multiplier)
    slices: list[_SliceInfo] = field(default_factory=list)
    active: Genome | None = None
    seed: int = 0
    steps: int = 0  # sandwich steps taken (seeds random subnets when no step is given)

    def __post_init__(self) -> None:
        graph = self.capture.graph
        self.cost_model = CostModel(graph)
        self.choice = ChoiceSpace(tuple(len(g.widths) for g in self.groups)
                                  + tuple(len(k.kernels) for k in self.kernels))
        self.rng = np.random.default_rng(self.seed)
        self._group_by_name = {g.name: g for g in self.groups}
        self._kernel_by_module = {k.module: k for k in self.kernels}
        self._fixed_by_name = {f["group"]: f for f in self.fixed}
        self._roots = {g.id: graph.groups[g.id].roots for g in self.groups}
        uf = graph.uf
        elastic_roots = np.zeros(len(uf.parent), dtype=bool)
        for roots in self._roots.values():
            elastic_roots[roots] = True
        seen: set[tuple[str, int]] = set()
        self.slices = []
        for sl in graph.slices:
            key = (sl.param, sl.dim)
            if key in seen:
                continue
            seen.add(key)
            roots = uf.roots(sl.classes)
            if elastic_roots[roots].any():
                module, _, attr = sl.param.rpartition(".")
                self.slices.append(_SliceInfo(module, attr, sl.dim, roots))
        # MAC ops and weight shapes of elastic-kernel convs (cost corrections)
        self._kernel_ops = []
        for op in graph.mac_ops:
            if op.name in self._kernel_by_module:
                in_roots = uf.roots(op.in_classes) if op.in_classes is not None else None
                out_roots = uf.roots(op.out_classes) if op.out_classes is not None else None
                n_in = len(op.in_classes) if op.in_classes is not None else 1
                n_out = len(op.out_classes) if op.out_classes is not None else 1
                in_pg = 1 if op.depthwise else n_in // max(1, op.groups)
                denom = max(1, in_pg * n_out)
                self._kernel_ops.append((op, in_roots, out_roots, op.full_macs // denom))
        self._weight_axes: dict[str, dict[int, np.ndarray]] = {}
        for s in self.slices:
            if s.module in self._kernel_by_module and s.attr == "weight":
                self._weight_axes.setdefault(s.module, {})[s.dim] = s.roots

    # -- genomes and settings ------------------------------------------------------------
    def genome_of(self, widths: Mapping[int, int], kernels: Mapping[str, int]) -> Genome:
        return tuple(g.widths.index(widths[g.id]) for g in self.groups) + tuple(
            k.kernels.index(kernels[k.module]) for k in self.kernels)

    def decode(self, genome: Genome) -> tuple[dict[int, int], dict[str, int]]:
        genome = tuple(int(i) for i in genome)
        if len(genome) != self.choice.num_genes or any(
                not 0 <= i < n for i, n in zip(genome, self.choice.sizes, strict=True)):
            raise SubnetSettingError(f"Expected a genome of {self.choice.num_genes} option "
                                     f"indices within {self.choice.sizes}. Received: {genome}")
        n = len(self.groups)
        widths = {g.id: g.widths[i] for g, i in zip(self.groups, genome[:n], strict=True)}
        kernels = {k.module: k.kernels[i] for k, i in zip(self.kernels, genome[n:], strict=True)}
        return widths, kernels

    def setting(self, genome: Genome) -> list[dict[str, Any]]:
        """The JSON subnet_setting of a genome: elastic groups, then elastic kernels."""
        widths, kernels = self.decode(genome)
        return [{"group": g.name, "width": widths[g.id]} for g in self.groups] + [
            {"module": k.module, "kernel_size": kernels[k.module]} for k in self.kernels]

    def parse(self, setting: object) -> Genome:
        """A genome from a subnet_setting (a list of entries, or a Pareto entry holding one).

        Groups or kernels the setting does not name run at their largest option.
        """
        if isinstance(setting, Mapping) and "subnet_setting" in setting:
            setting = setting["subnet_setting"]
        if isinstance(setting, (str, bytes)) or not isinstance(setting, Sequence):
            raise SubnetSettingError(
                "Expected subnet_setting to be a list of {'group': name, 'width': n} and "
                f"{{'module': name, 'kernel_size': k}} entries. Received: {_short(setting)}")
        genome = list(self.choice.largest())
        pos = {g.name: i for i, g in enumerate(self.groups)}
        kpos = {k.module: len(self.groups) + i for i, k in enumerate(self.kernels)}
        named: set[str] = set()
        for entry in setting:
            if not isinstance(entry, Mapping):
                raise SubnetSettingError(f"Expected each subnet_setting entry to be a dict. "
                                         f"Received: {_short(entry)}")
            keys = set(entry)
            if keys == {"group", "width"}:
                name, value = entry["group"], entry["width"]
                what = f"group {name!r}"
            elif keys == {"module", "kernel_size"}:
                name, value = entry["module"], entry["kernel_size"]
                what = f"kernel of module {name!r}"
            else:
                raise SubnetSettingError(
                    "Expected entries {'group': name, 'width': n} or {'module': name, "
                    f"'kernel_size': k}}. Received: {_short(entry)}")
            if not isinstance(name, str):
                raise SubnetSettingError(f"Expected a name string. Received: {_short(entry)}")
            if (what[0], name) in named:
                raise SubnetSettingError(f"The {what} appears twice in subnet_setting.")
            named.add((what[0], name))
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise SubnetSettingError(f"Expected an integer for the {what}. Received: "
                                         f"{_short(entry)}")
            value = int(value)
            if "width" in entry:
                self._parse_width(name, value, pos, genome)
            else:
                self._parse_kernel(name, value, kpos, genome)
        return tuple(genome)

    def _parse_width(self, name: str, value: int, pos: dict[str, int], genome: list) -> None:
        g = self._group_by_name.get(name)
        if g is None:
            fixed = self._fixed_by_name.get(name)
            if fixed is not None:
                if value != fixed["channels"]:
                    raise SubnetSettingError(
                        f"Group {name!r} is not elastic ({fixed['reason']}); its width is "
                        f"{fixed['channels']}. Received: width={value}")
                return
            raise _no_such(f"Unknown group {name!r} in subnet_setting. Elastic groups", name,
                           list(pos))
        genome[pos[name]] = _option(g.widths, value, f"Width {value} is not a candidate of "
                                    f"group {name!r} ({g.channels} channels)")

    def _parse_kernel(self, name: str, value: int, kpos: dict[str, int], genome: list) -> None:
        k = self._kernel_by_module.get(name)
        if k is None:
            raise _no_such(f"Module {name!r} has no elastic kernel. Elastic kernels", name,
                           list(kpos))
        genome[kpos[name]] = _option(k.kernels, value,
                                     f"Kernel size {value} is not a candidate of {name!r}")

    def sample(self, mode: str, rng: np.random.Generator | int | None = None) -> Genome:
        if mode == "max":
            return self.choice.largest()
        if mode == "min":
            return self.choice.smallest()
        if mode == "random":
            if rng is None:
                rng = self.rng
            elif not isinstance(rng, np.random.Generator):
                rng = np.random.default_rng(rng)
            return self.choice.random(rng)
        raise ValueError(f"Expected mode 'max', 'min' or 'random'. Received: mode={mode!r}")

    # -- plans and costs -----------------------------------------------------------------
    def removed(self, genome: Genome) -> np.ndarray:
        widths, _ = self.decode(genome)
        removed = np.zeros(len(self.capture.graph.uf.parent), dtype=bool)
        for gid, k in widths.items():
            removed[self._roots[gid][k:]] = True
        return removed

    def plan(self, genome: Genome) -> PruningPlan:
        widths, _ = self.decode(genome)
        plan = PruningPlan()
        for g in self.groups:
            k = widths[g.id]
            if k < g.channels:
                plan.kept[g.id] = np.arange(k, dtype=np.int64)
                plan.ratios[g.id] = 1.0 - k / g.channels
        return plan

    def cost(self, genome: Genome) -> tuple[int, int]:
        """Exact MACs and params of the subnet (integers)."""
        plan = self.plan(genome)
        macs = self.cost_model.macs(plan)
        params = self.cost_model.params(plan)
        _, kernels = self.decode(genome)
        if not any(kernels[k.module] < k.max_kernel for k in self.kernels):
            return macs, params
        removed = self.removed(genome)
        for op, in_roots, out_roots, factor in self._kernel_ops:
            spec = self._kernel_by_module[op.name]
            k, big = kernels[op.name], spec.max_kernel
            if k == big:
                continue
            inn, out = kept_io(op, in_roots, out_roots, removed)
            per_tap = factor // (big * big)
            macs -= per_tap * (big * big - k * k) * inn * out
        shapes = self.capture.graph.param_shapes
        for spec in self.kernels:
            k, big = kernels[spec.module], spec.max_kernel
            if k == big:
                continue
            dims = list(shapes[f"{spec.module}.weight"])
            for dim, roots in self._weight_axes.get(spec.module, {}).items():
                dims[dim] = len(roots) - int(removed[roots].sum())
            params -= dims[0] * dims[1] * (big * big - k * k)
        return macs, params

    def cost_m(self, genome: Genome) -> tuple[float, float]:
        """MACs and params in millions."""
        macs, params = self.cost(genome)
        return macs / 1e6, params / 1e6

    # -- selections ----------------------------------------------------------------------
    def selections(self, genome: Genome) -> dict[str, dict[str, tuple]]:
        """Per dynamic module: per tensor, the (axis, prefix length | index) it keeps."""
        removed = self.removed(genome)
        out: dict[str, dict[str, list]] = {}
        for s in self.slices:
            keep = ~removed[s.roots]
            n = int(keep.sum())
            if n == len(keep):
                continue
            sel: int | torch.Tensor = n if keep[:n].all() else torch.from_numpy(
                np.flatnonzero(keep).astype(np.int64))
            out.setdefault(s.module, {}).setdefault(s.attr, []).append((s.dim, sel))
        return {m: {a: tuple(v) for a, v in d.items()} for m, d in out.items()}

    def apply(self, model: nn.Module, genome: Genome) -> None:
        """Make ``genome`` the active subnet of ``model`` (an OFA model of this space)."""
        sels = self.selections(genome)
        _, kernels = self.decode(genome)
        for name in self.dynamic_modules:
            m = model.get_submodule(name)
            m.uif_sel = sels.get(name, {})
            spec = self._kernel_by_module.get(name)
            m.uif_kernel = kernels[name] if spec and kernels[name] != spec.max_kernel else None
            m.uif_groups = None
            dw = self.depthwise.get(name)
            if dw is not None and "weight" in m.uif_sel:
                transposed, mult = dw
                kept = _axis_len(m.weight, m.uif_sel["weight"], 0)
                m.uif_groups = kept if transposed else kept // mult
        self.active = tuple(genome)

    # -- static subnets ------------------------------------------------------------------
    def static(self, model: nn.Module, genome: Genome) -> nn.Module:
        """The subnet as a model of plain layers (a new object; ``model`` is untouched)."""
        plain = plain_copy(model)
        slim = make_slim(plain, self.capture, self.plan(genome))
        for attr in ("uif_plan", "uif_capture", "sparse_state_dict"):
            slim.__dict__.pop(attr, None)
        _, kernels = self.decode(genome)
        for spec in self.kernels:
            k = kernels[spec.module]
            if k == spec.max_kernel:
                continue
            conv = slim.get_submodule(spec.module)
            start = (spec.max_kernel - k) // 2
            with torch.no_grad():
                w = conv.weight[..., start : start + k, start : start + k].clone()
            conv.weight = nn.Parameter(w, requires_grad=conv.weight.requires_grad)
            conv.kernel_size = (k, k)
            if conv.padding != "same":
                conv.padding = (k // 2, k // 2)
                conv._reversed_padding_repeated_twice = [k // 2] * 4
        return slim


def _axis_len(t: torch.Tensor, axes: tuple, dim: int) -> int:
    for d, sel in axes:
        if d == dim:
            return sel if isinstance(sel, int) else int(sel.numel())
    return t.shape[dim]


def _short(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unwrap(model: nn.Module) -> nn.Module:
    """The OFA model inside a DistributedDataParallel / DataParallel wrapper."""
    inner = model
    while not hasattr(inner, SPACE_ATTR) and isinstance(getattr(inner, "module", None),
                                                         nn.Module):
        inner = inner.module
    return inner


def space_of(model: nn.Module) -> OFASpace:
    space = getattr(unwrap(model), SPACE_ATTR, None)
    if not isinstance(space, OFASpace):
        raise TypeError(
            "Expected an OFA model made by OFAPruner(model, inputs).ofa_model(...). Received: "
            f"{type(model).__name__} without an OFA search space")
    return space


def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy of an OFA model with plain layers and no search space attached."""
    inner = unwrap(model)
    space = getattr(inner, SPACE_ATTR, None)
    memo = {id(space): None} if space is not None else {}
    out = copy.deepcopy(inner, memo)
    out.__dict__.pop(SPACE_ATTR, None)
    for m in out.modules():
        if is_dynamic(m):
            make_plain(m)
    return out


# -- building the OFA model ----------------------------------------------------------------
def _check_expand_ratio(expand_ratio: object) -> tuple[float, ...]:
    if isinstance(expand_ratio, numbers.Real):
        expand_ratio = [expand_ratio]
    ok = isinstance(expand_ratio, Iterable) and not isinstance(expand_ratio, (str, bytes))
    values = list(expand_ratio) if ok else []
    if not values or any(isinstance(r, bool) or not isinstance(r, numbers.Real)
                         or not 0 < float(r) <= 1 or math.isnan(float(r)) for r in values):
        raise ValueError("Expected expand_ratio to be a list of fractions of channels kept, "
                         f"each in (0, 1] (the guide's [0.5, 0.75, 1]). Received: "
                         f"expand_ratio={_short(expand_ratio)}")
    return tuple(sorted({float(r) for r in values}))


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _occurrence_perm(roots: np.ndarray, rank: np.ndarray, group_of: np.ndarray,
                     bad: set[int]) -> np.ndarray | None:
    """New-from-old permutation of one axis (``new = old[perm]``), None when nothing moves.

    Positions of each elastic group are split into occurrence classes (the t-th time each
    channel appears); within a class, positions take the channels in rank order. A group whose
    channels do not all appear equally often here is added to ``bad``.
    """
    gids = group_of[roots]
    perm = np.arange(len(roots))
    moved = False
    for gid in np.unique(gids[gids >= 0]):
        pos = np.flatnonzero(gids == gid)
        r = roots[pos]
        uniq, counts = np.unique(r, return_counts=True)
        if len(set(counts.tolist())) != 1 or len(uniq) != int((group_of == gid).sum()):
            bad.add(int(gid))
            continue
        occ = np.zeros(len(pos), dtype=np.int64)
        seen: dict[int, int] = {}
        for i, root in enumerate(r.tolist()):
            occ[i] = seen.get(root, 0)
            seen[root] = occ[i] + 1
        for t in range(int(counts[0])):
            q = pos[occ == t]
            order = np.argsort(rank[roots[q]], kind="stable")
            perm[q] = q[order]
        moved = moved or not np.array_equal(perm[pos], pos)
    return perm if moved else None


def _module_type_ok(modules: dict[str, nn.Module], param: str) -> bool:
    owner, _, attr = param.rpartition(".")
    m = modules.get(owner)
    return m is not None and type(m) in SELECTABLE and attr in SELECTABLE[type(m)]


def _is_conv(m: nn.Module | None) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd)


def build_ofa_model(
    model: nn.Module,
    capture: Capture,
    orders: Mapping[int, np.ndarray],
    model_name: str,
    expand_ratio: Iterable[float] = DEFAULT_EXPAND_RATIO,
    channel_divisible: int = 8,
    excludes: Iterable[object] | None = None,
    auto_add_excludes: bool = True,
) -> nn.Module:
    """A reordered copy of ``model`` with dynamic layers and an :class:`OFASpace` attached."""
    ratios = _check_expand_ratio(expand_ratio)
    if isinstance(channel_divisible, bool) or not isinstance(channel_divisible, numbers.Integral) \
            or channel_divisible < 1:
        raise ValueError(f"Expected channel_divisible to be an integer >= 1. Received: "
                         f"channel_divisible={channel_divisible!r}")
    d = int(channel_divisible)
    excluded = resolve_excludes(model, excludes)
    graph = capture.graph
    uf = graph.uf
    modules = dict(model.named_modules())
    reasons: dict[int, str] = {}

    def fix(gid: int, why: str) -> None:
        reasons.setdefault(gid, why)

    heads = set() if graph.factors is None else {*graph.factors[1].tolist(),
                                                  *graph.factors[2].tolist()}
    for g in graph.groups:
        if not g.prunable:
            fix(g.id, g.excluded_reason or "not prunable")
        elif g.blocks > 1:
            fix(g.id, "its channels are split into conv/norm groups")
        elif heads.intersection(g.roots.tolist()):
            fix(g.id, "attention heads and head width are not elastic in a supernet")
    root_gid = np.full(len(uf.parent), -1, dtype=np.int64)
    for g in graph.groups:
        root_gid[g.roots] = g.id
    for sl in graph.slices:
        if not _module_type_ok(modules, sl.param):
            owner = sl.param.rpartition(".")[0]
            kind = type(modules.get(owner)).__name__
            for gid in np.unique(root_gid[uf.roots(sl.classes)]):
                if gid >= 0:
                    fix(int(gid), f"{sl.param} ({kind}) has no dynamic version")
    # excludes: a producer keeps its output group; a non-producer the channels it touches
    producer_groups: dict[str, list[int]] = {}
    for g in graph.groups:
        for p in g.producers:
            producer_groups.setdefault(p, []).append(g.id)
    for g in graph.groups:
        for m in g.modules:
            if _under(m, excluded) and (m in g.producers or m not in producer_groups):
                fix(g.id, f"excluded ({m})")
    first_conv = None
    if auto_add_excludes:
        convs = [op for op in graph.mac_ops if _is_conv(modules.get(op.name))]
        first = convs[0] if convs else (graph.mac_ops[0] if graph.mac_ops else None)
        if first is not None and first.out_classes is not None:
            first_conv = first.name
            for gid in np.unique(root_gid[uf.roots(first.out_classes)]):
                if gid >= 0:
                    fix(int(gid), f"first layer {first.name} (auto_add_excludes)")
        for op in graph.mac_ops:
            if op.out_classes is None or op.in_classes is None:
                continue
            out_g = np.unique(root_gid[uf.roots(op.out_classes)])
            if any(FIXED_OUTPUT in graph.groups[int(x)].fix_reasons for x in out_g if x >= 0):
                for gid in np.unique(root_gid[uf.roots(op.in_classes)]):
                    if gid >= 0:
                        fix(int(gid), f"feeds the output layer {op.name} (auto_add_excludes)")
    widths: dict[int, tuple[int, ...]] = {}
    for g in graph.groups:
        if g.id in reasons:
            continue
        ws = tuple(sorted({_width(g.num_channels, r, d) for r in ratios}))
        if ws == (g.num_channels,):
            fix(g.id, f"a single width candidate ({g.num_channels} channels, "
                      f"channel_divisible={d})")
        else:
            widths[g.id] = ws

    # importance ranks and the permutation of every axis (drop irregular groups, repeat)
    perms: dict[tuple[str, int], np.ndarray | None] = {}
    while True:
        rank = np.full(len(uf.parent), -1, dtype=np.int64)
        group_of = np.full(len(uf.parent), -1, dtype=np.int64)
        for gid in widths:
            roots = graph.groups[gid].roots
            order = np.asarray(orders[gid]).reshape(-1)
            rank[roots[order]] = np.arange(len(order))
            group_of[roots] = gid
        bad: set[int] = set()
        perms = {}
        for sl in graph.slices:
            key = (sl.param, sl.dim)
            p = _occurrence_perm(uf.roots(sl.classes), rank, group_of, bad)
            if key in perms:
                prev = perms[key]
                same = (p is None and prev is None) or (
                    p is not None and prev is not None and np.array_equal(p, prev))
                if not same:
                    for gid in np.unique(group_of[uf.roots(sl.classes)]):
                        if gid >= 0:
                            bad.add(int(gid))
            perms[key] = p
        if not bad:
            break
        for gid in bad:
            fix(gid, "its channels appear in an irregular layout")
            widths.pop(gid, None)

    work = copy.deepcopy(model)
    tensors = dict(work.named_parameters())
    tensors.update(dict(work.named_buffers()))
    with torch.no_grad():
        for (param, dim), p in perms.items():
            if p is not None:
                t = tensors[param]
                t.copy_(t.index_select(dim, torch.from_numpy(p).to(t.device)))
    cap = copy.deepcopy(capture)
    for sl in cap.graph.slices:
        p = perms.get((sl.param, sl.dim))
        if p is not None:
            sl.classes = sl.classes[p]
    for gid in widths:
        g = cap.graph.groups[gid]
        g.roots = g.roots[np.asarray(orders[gid]).reshape(-1)]

    names = _group_names(graph)
    groups = [ElasticGroup(gid, names[gid], graph.groups[gid].num_channels, widths[gid],
                           list(graph.groups[gid].modules)) for gid in sorted(widths)]
    fixed = [{"group": names[g.id], "channels": g.num_channels, "reason": reasons[g.id]}
             for g in graph.groups if g.id in reasons]
    used = {op.name for op in graph.mac_ops}
    kernels = []
    for name, m in work.named_modules():
        if type(m) is not nn.Conv2d or name not in used or _under(name, excluded) \
                or name == first_conv:
            continue
        k = m.kernel_size
        same = m.padding == "same" or tuple(m.padding) == (k[0] // 2, k[1] // 2)
        if k[0] == k[1] and k[0] % 2 == 1 and k[0] > 3 and tuple(m.dilation) == (1, 1) \
                and same and m.padding_mode == "zeros":
            kernels.append(ElasticKernel(name, k[0], tuple(range(3, k[0] + 1, 2))))
    dynamic = []
    depthwise = {}
    for name, m in work.named_modules():
        if type(m) in DYNAMIC_OF:
            if name in capture.depthwise_modules:
                transposed = bool(getattr(m, "transposed", False))
                mult = max(1, m.out_channels // m.groups) if not transposed else 1
                depthwise[name] = (transposed, mult)
            make_dynamic(m)
            dynamic.append(name)
    space = OFASpace(
        capture=cap, groups=groups, kernels=kernels, fixed=fixed,
        args={"expand_ratio": list(ratios), "channel_divisible": d,
              "excludes": sorted(excluded), "auto_add_excludes": bool(auto_add_excludes)},
        model_name=model_name, dynamic_modules=dynamic, depthwise=depthwise,
    )
    setattr(work, SPACE_ATTR, space)
    space.apply(work, space.choice.largest())
    return work


def _width(channels: int, keep: float, divisible: int) -> int:
    """Channels kept at expand ratio ``keep``: all of them at 1, else rounded to ``divisible``
    (at least ``divisible``, at most all)."""
    if keep >= 1.0:
        return channels
    return kept_count(channels, 1.0 - keep, divisible)


def _group_names(graph) -> dict[int, str]:
    names: dict[int, str] = {}
    used: set[str] = set()
    for g in graph.groups:
        name = g.name if g.name not in used else f"{g.name}#{g.id}"
        used.add(name)
        names[g.id] = name
    return names


__all__ = [
    "DEFAULT_EXPAND_RATIO", "ElasticGroup", "ElasticKernel", "OFASpace", "SubnetSettingError",
    "build_ofa_model", "plain_copy", "space_of", "unwrap",
]

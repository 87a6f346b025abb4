"""Pruning plans: which channels of each group are kept, what that costs, and its JSON spec.

A plan is backend-neutral: it names groups by id and channels by their position in the
group's canonical order. MACs and parameter counts of a plan are computed analytically from
the :class:`~uif_explorer.core.channels.ChannelGraph`, without building any model, and equal
what the backend's FLOP counter measures on the built slim model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from uif_explorer.core.channels import ChannelGraph, Group, MacOp


class PlanError(ValueError):
    """A plan or ratio that cannot be applied to this graph."""


def kept_count(num_channels: int, ratio: float, divisible: int = 1, blocks: int = 1) -> int:
    """Channels kept when removing ``ratio`` of ``num_channels``.

    round((1 - r) * C / d) * d, at least d (never more than C); with conv/norm blocks the
    count is a multiple of ``blocks`` so every block loses the same number.
    """
    if not 0.0 <= ratio < 1.0 or math.isnan(ratio):
        raise PlanError(f"Expected a channel ratio in [0, 1). Received: ratio={ratio!r}")
    if blocks > 1:
        per_block = num_channels // blocks
        return blocks * max(1, int(round((1.0 - ratio) * per_block)))
    d = max(1, int(divisible))
    if num_channels <= d:
        return num_channels
    keep = int(round((1.0 - ratio) * num_channels / d)) * d
    return int(min(num_channels, max(d, keep)))


def kept_counts(channels: np.ndarray, ratios: np.ndarray, divisible: int = 1,
                blocks: np.ndarray | None = None) -> np.ndarray:
    """:func:`kept_count` over arrays of groups at once (ratios already checked in [0, 1))."""
    channels = np.asarray(channels, dtype=np.int64)
    keep_frac = 1.0 - np.asarray(ratios, dtype=float)
    blocks = np.ones_like(channels) if blocks is None else np.asarray(blocks, dtype=np.int64)
    d = max(1, int(divisible))
    plain = np.minimum(channels, np.maximum(d, np.round(keep_frac * channels / d).astype(
        np.int64) * d))
    plain = np.where(channels <= d, channels, plain)
    per_block = channels // blocks
    blocked = blocks * np.maximum(1, np.round(keep_frac * per_block).astype(np.int64))
    return np.where(blocks > 1, blocked, plain)


def kept_io(op: MacOp, in_roots: np.ndarray | None, out_roots: np.ndarray | None,
            removed: np.ndarray) -> tuple[int, int]:
    """(input channels per conv group, output positions) an op keeps when ``removed`` roots
    are gone: the two factors its MACs scale with (depthwise ops count one input each)."""
    out = len(out_roots) - int(removed[out_roots].sum()) if out_roots is not None else 1
    if op.depthwise or in_roots is None:
        return 1, out
    return (len(in_roots) - int(removed[in_roots].sum())) // max(1, op.groups), out


@dataclass
class PruningPlan:
    """Per group: the kept canonical channel positions (absent group = untouched)."""

    kept: dict[int, np.ndarray] = field(default_factory=dict)
    ratios: dict[int, float] = field(default_factory=dict)

    def removed_roots(self, graph: ChannelGraph) -> np.ndarray:
        """Boolean array over class ids: True where the channel is removed."""
        removed = np.zeros(len(graph.uf.parent), dtype=bool)
        for gid, keep in self.kept.items():
            g = graph.groups[gid]
            mask = np.ones(g.num_channels, dtype=bool)
            mask[np.asarray(keep, dtype=np.int64)] = False
            removed[g.roots[mask]] = True
        return graph.spread_removed(removed)


def importance_order(g: Group, score: np.ndarray) -> np.ndarray:
    """Canonical positions from most to least important (per block, blocks side by side)."""
    score = np.asarray(score)
    if g.blocks > 1:
        size = g.num_channels // g.blocks
        return np.stack(
            [np.argsort(-score[b * size : (b + 1) * size], kind="stable") + b * size
             for b in range(g.blocks)]
        )
    return np.argsort(-score, kind="stable")


def _keep_parts(graph: ChannelGraph, g: Group, order: np.ndarray,
                kept: np.ndarray) -> np.ndarray:
    """Every part of ``graph.keep_one`` in this group keeps a channel (a chunk of a split
    cannot be 0 wide in the slim model): an emptied part's best channel takes the place of
    the least important kept one whose part does not need it. Same count."""
    if not graph.keep_one:
        return kept
    cache = graph.__dict__.setdefault("_keep_one_positions", {})  # per group, made once
    if g.id not in cache:
        cache[g.id] = [p for p in (np.flatnonzero(np.isin(g.roots, graph.uf.roots(c)))
                                   for c in graph.keep_one) if 0 < len(p) < g.num_channels]
    parts = cache[g.id]
    if not parts:
        return kept
    rank = np.empty(g.num_channels, dtype=np.int64)
    rank[order] = np.arange(g.num_channels)
    kept = list(kept)
    for part in parts:
        if np.isin(part, kept).any():
            continue
        for drop in sorted(kept, key=lambda c: -rank[c]):
            if all(drop not in q or np.isin(q, kept).sum() > 1 for q in parts):
                kept[kept.index(drop)] = int(part[np.argmin(rank[part])])
                break
    return np.asarray(kept, dtype=np.int64)


def plan_from_counts(
    graph: ChannelGraph,
    counts: Mapping[int, int],
    orders: Mapping[int, np.ndarray],
    ratios: Mapping[int, float] | None = None,
) -> PruningPlan:
    """Keep the ``counts[gid]`` most important channels of each group."""
    plan = PruningPlan()
    for gid, n_keep in counts.items():
        g = graph.groups[gid]
        if not g.prunable or n_keep >= g.num_channels:
            continue
        if n_keep < 1:
            raise PlanError(f"Group {g.name}: at least one channel must be kept.")
        order = orders[gid]
        if g.blocks > 1:
            kept = np.sort(order[:, : n_keep // g.blocks].ravel())
        else:
            kept = np.sort(_keep_parts(graph, g, order, order[:n_keep]))
        plan.kept[gid] = kept
        plan.ratios[gid] = (
            float(ratios[gid]) if ratios and gid in ratios else 1.0 - n_keep / g.num_channels
        )
    return plan


def plan_from_scores(
    graph: ChannelGraph,
    ratios: Mapping[int, float],
    scores: Mapping[int, np.ndarray],
    divisible: int = 1,
    orders: Mapping[int, np.ndarray] | None = None,
) -> PruningPlan:
    """Keep the highest-scoring channels of each group (evenly per block where needed)."""
    counts = {}
    for gid, ratio in ratios.items():
        g = graph.groups[gid]
        if g.prunable and ratio > 0:
            counts[gid] = kept_count(g.num_channels, float(ratio), divisible, g.blocks)
    if orders is None:
        orders = {gid: importance_order(graph.groups[gid], scores[gid]) for gid in counts}
    return plan_from_counts(graph, counts, orders, ratios)


class CostModel:
    """Fast MACs / params of any plan on one graph (the app's slider calls it per move)."""

    def __init__(self, graph: ChannelGraph) -> None:
        self.graph = graph
        uf = graph.uf
        self._ops = []
        for op in graph.mac_ops:
            in_roots = uf.roots(op.in_classes) if op.in_classes is not None else None
            out_roots = uf.roots(op.out_classes) if op.out_classes is not None else None
            n_in = len(op.in_classes) if op.in_classes is not None else 1
            n_out = len(op.out_classes) if op.out_classes is not None else 1
            in_pg = 1 if op.depthwise else n_in // max(1, op.groups)
            denom = max(1, (1 if op.depthwise else in_pg) * n_out)
            self._ops.append((op, in_roots, out_roots, op.full_macs // denom, denom))
        # params: per tensor, its sliced axes
        axes: dict[str, list] = {}
        for sl in graph.slices:
            axes.setdefault(sl.param, []).append(sl)
        self._param_axes = []
        self._fixed_params = 0
        for name, shape in graph.param_shapes.items():
            if name not in axes:
                self._fixed_params += int(np.prod(shape)) if len(shape) else 1
                continue
            self._param_axes.append((shape, [(s, uf.roots(s.classes)) for s in axes[name]]))
        self.original_macs = self.macs(None)
        self.original_params = self.params(None)
        self._build_count_model()

    def _build_count_model(self) -> None:
        """MACs as a function of per-group kept *counts*, when counts alone determine them.

        True when every op sees each group whole (each of its channels the same number of
        times), which holds for residuals, concat, flatten, depthwise and chunk alike. Then
        kept positions per op are ``A @ counts + c`` and the one-step sampler can evaluate
        thousands of candidates without building a plan for each.
        """
        groups = self.graph.groups
        self.group_index = {g.id: i for i, g in enumerate(groups)}
        self.full_counts = np.array([g.num_channels for g in groups], dtype=np.int64)
        gid_of_root = np.full(len(self.graph.uf.parent), -1, dtype=np.int64)
        for i, g in enumerate(groups):
            gid_of_root[g.roots] = i
        n_ops, n_groups = len(self._ops), len(groups)
        a_in = np.zeros((n_ops, n_groups), dtype=np.int64)
        a_out = np.zeros((n_ops, n_groups), dtype=np.int64)
        c_in = np.ones(n_ops, dtype=np.int64)
        c_out = np.ones(n_ops, dtype=np.int64)
        self.count_model_exact = True
        # composite channels (attention heads x head width): kept = m * heads * widths
        is_comp = np.zeros(len(gid_of_root), dtype=bool)
        is_comp[self.graph.factors[0] if self.graph.factors is not None else []] = True
        prods: list[tuple[int, ...]] = []
        for row, (op, in_roots, out_roots, _f, _d) in enumerate(self._ops):
            for side, (roots, a, c, use) in enumerate(((in_roots, a_in, c_in, not op.depthwise),
                                                       (out_roots, a_out, c_out, True))):
                if roots is None or not use:
                    continue
                comp = is_comp[roots]
                gids = np.where(comp, -2, gid_of_root[roots])
                c[row] = int((gids == -1).sum())
                terms = self.graph.product_terms(roots[comp], gid_of_root, self.full_counts)
                self.count_model_exact &= terms is not None
                prods.extend((side, row, *t) for t in terms or ())
                for gi in np.unique(gids[gids >= 0]):
                    _, per_root = np.unique(roots[gids == gi], return_counts=True)
                    if len(per_root) != groups[gi].num_channels or per_root.min() != per_root.max():
                        self.count_model_exact = False
                    a[row, gi] = int(per_root[0])
        self._a_in, self._a_out, self._c_in, self._c_out = a_in, a_out, c_in, c_out
        self._prods = np.array(prods, dtype=np.int64).reshape(-1, 5)
        self._factor = np.array([f for *_, f, _d in self._ops], dtype=np.int64)
        self._denom = np.array([d for *_, d in self._ops], dtype=np.int64)
        self._full = np.array([op.full_macs for op, *_ in self._ops], dtype=np.int64)
        self._groups = np.array([max(1, op.groups) for op, *_ in self._ops], dtype=np.int64)
        self._has_in = np.array([r[1] is not None and not r[0].depthwise for r in self._ops])

    def macs_of_counts(self, counts: Mapping[int, int]) -> int:
        """MACs with ``counts[gid]`` channels kept per group (others full); see above."""
        if not self.count_model_exact:
            raise PlanError("This graph's MACs depend on which channels are kept, not only on "
                            "how many; use macs(plan).")
        k = self.full_counts.copy()
        for gid, n in counts.items():
            k[self.group_index[gid]] = n
        return self.macs_of_count_vector(k)

    def op_counts_of_vector(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per counted op (``graph.mac_ops`` order): kept inputs per conv group (1 where the
        op's input cannot change or it is depthwise) and kept outputs, from group counts."""
        prod = np.zeros((2, len(self._ops)), dtype=np.int64)
        side, row, m, gh, gw = self._prods.T
        np.add.at(prod, (side, row), m * k[gh] * k[gw])
        inn = np.where(self._has_in, (self._a_in @ k + self._c_in + prod[0]) // self._groups, 1)
        return inn, self._a_out @ k + self._c_out + prod[1]

    def op_counts(self, plan: PruningPlan | None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`op_counts_of_vector` for a plan (exact on any graph, not only count-exact)."""
        removed = (plan.removed_roots(self.graph) if plan is not None
                   else np.zeros(len(self.graph.uf.parent), dtype=bool))
        io = np.array([kept_io(op, i, o, removed) for op, i, o, *_ in self._ops],
                      dtype=np.int64).reshape(-1, 2)
        return io[:, 0], io[:, 1]

    def macs_of_count_vector(self, k: np.ndarray) -> int:
        """:meth:`macs_of_counts` with kept counts of every group in ``graph.groups`` order."""
        inn, out = self.op_counts_of_vector(k)
        total = self._full - self._factor * self._denom + self._factor * inn * out
        return int(self.graph.other_macs + total.sum())

    def macs(self, plan: PruningPlan | None) -> int:
        removed = plan.removed_roots(self.graph) if plan is not None else None
        total = self.graph.other_macs
        for op, in_roots, out_roots, factor, denom in self._ops:
            if removed is None:
                total += op.full_macs
                continue
            inn, out = kept_io(op, in_roots, out_roots, removed)
            total += op.full_macs - factor * denom + factor * inn * out
        return int(total)

    def params(self, plan: PruningPlan | None) -> int:
        removed = plan.removed_roots(self.graph) if plan is not None else None
        total = self._fixed_params
        for shape, slices in self._param_axes:
            dims = list(shape)
            if removed is not None:
                for sl, roots in slices:
                    kept = len(roots) - int(removed[roots].sum())
                    dims[sl.dim] = kept // sl.blocks if sl.blocks > 1 else kept
            total += int(np.prod(dims)) if dims else 1
        return int(total)


def removal_of(cost: CostModel, plan: PruningPlan) -> float:
    """Fraction of the original MACs a plan removes."""
    return 1.0 - cost.macs(plan) / max(1, cost.original_macs)

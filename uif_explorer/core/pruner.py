"""The framework-neutral half of a pruner: plans, costs, rankings and specs of one graph.

A backend (PyTorch, Keras) subclasses :class:`BasePruner`, captures its model into a
:class:`~uif_explorer.core.channels.ChannelGraph`, and supplies four things: per-slice weight
magnitudes, a weights digest, and builders of the sparse and slim models. Everything a runner
or the app asks of a pruner beyond that lives here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from uif_explorer.core.allocation import (
    MAX_GROUP_RATIO,
    TARGET_TOLERANCE,
    bisect_plan,
    check_landing,
    check_removal_ratio,
    sample_ratio_vector,
)
from uif_explorer.core.channels import ChannelGraph
from uif_explorer.core.importance import group_scores
from uif_explorer.core.latency import LatencyModel, bisect_latency
from uif_explorer.core.plan import (
    CostModel,
    PlanError,
    PruningPlan,
    importance_order,
    kept_count,
    kept_counts,
    plan_from_counts,
    plan_from_scores,
)
from uif_explorer.core.rules import nothing_prunable
from uif_explorer.core.spec import plan_from_spec, plan_to_spec

GROUP_COLUMNS = ["group", "name", "channels", "prunable", "layers", "reason"]


class BasePruner:
    """Plans, costs and specs over one captured graph (the backend adds the model side)."""

    framework = ""

    def __init__(self, graph: ChannelGraph) -> None:
        self.graph = graph
        self.cost = CostModel(graph)
        self._channels = np.array([g.num_channels for g in graph.groups], dtype=np.int64)
        self._blocks = np.array([g.blocks for g in graph.groups], dtype=np.int64)
        self._cache: dict[tuple[str, int], dict[int, np.ndarray]] = {}

    # -- backend hooks -------------------------------------------------------------------
    def slice_stats(self) -> list[dict[str, np.ndarray] | None]:
        """Per slice of the graph: {'l1', 'l2'} magnitudes of each position on its axis."""
        raise NotImplementedError

    def weights_digest(self) -> str:
        raise NotImplementedError

    def sparse_model(self, plan: PruningPlan) -> Any:
        raise NotImplementedError

    def slim_model(self, plan: PruningPlan) -> Any:
        raise NotImplementedError

    # -- facts ---------------------------------------------------------------------------
    @property
    def original_macs(self) -> int:
        return self.cost.original_macs

    @property
    def original_params(self) -> int:
        return self.cost.original_params

    def groups_table(self) -> pd.DataFrame:
        rows = [
            {"group": g.id, "name": g.name, "channels": g.num_channels, "prunable": g.prunable,
             "layers": ", ".join(g.modules), "reason": g.excluded_reason or ""}
            for g in self.graph.groups
        ]
        return pd.DataFrame(rows, columns=GROUP_COLUMNS)

    def scores(self, criterion: str = "l1", seed: int = 0) -> dict[int, np.ndarray]:
        key = (criterion, seed)
        if key not in self._cache:
            stats = self.slice_stats() if criterion != "random" else []
            self._cache[key] = group_scores(self.graph, stats, criterion, seed)
        return self._cache[key]

    def orders(self, criterion: str = "l1") -> dict[int, np.ndarray]:
        """Per group, channel positions from most to least important (cached)."""
        key = ("order:" + criterion, 0)
        if key not in self._cache:
            scores = self.scores(criterion)
            self._cache[key] = {g.id: importance_order(g, scores[g.id])
                                for g in self.graph.groups}
        return self._cache[key]

    # -- plans ---------------------------------------------------------------------------
    def plan(self, ratios: float | Mapping[int, float], criterion: str = "l1",
             channel_divisible: int = 2) -> PruningPlan:
        """A plan from one ratio for every prunable group, or a ratio per group id."""
        if isinstance(ratios, (int, float)):
            ratios = {g.id: float(ratios) for g in self.graph.prunable_groups}
        return plan_from_scores(self.graph, ratios, self.scores(criterion), channel_divisible,
                                orders=self.orders(criterion))

    def counts(self, ratios: Mapping[int, float], channel_divisible: int = 2) -> dict[int, int]:
        """Kept channels per group for these ratios (the same rounding as ``plan``)."""
        ids = [gid for gid, r in ratios.items() if r > 0 and self.graph.groups[gid].prunable]
        if not ids:
            return {}
        r = np.fromiter((ratios[gid] for gid in ids), float, len(ids))
        if np.isnan(r).any() or (r >= 1.0).any():
            kept_count(1, float(r[np.isnan(r) | (r >= 1.0)][0]))  # raises the usual PlanError
        return dict(zip(ids, kept_counts(self._channels[ids], r, channel_divisible,
                                         self._blocks[ids]).tolist(), strict=True))

    def sample_counts(self, removal_ratio: float, seed: int, candidate: int,
                      channel_divisible: int = 2) -> dict[int, int]:
        """Kept channels per group of one-step candidate ``candidate`` (EagleEye sampling),
        costed on count vectors alone: thousands per second (``bench/sampling.py``).
        Needs ``cost.count_model_exact``; groups left whole are omitted."""
        groups = self.graph.prunable_groups
        if not groups:
            raise PlanError(nothing_prunable(self.graph))
        ids = np.array([g.id for g in groups], dtype=np.int64)
        pos = np.array([self.cost.group_index[g.id] for g in groups], dtype=np.int64)
        n, blocks = self._channels[ids], self._blocks[ids]
        base = self.cost.full_counts
        orig = max(1, self.cost.original_macs)

        def kept(r: np.ndarray) -> np.ndarray:
            return kept_counts(n, r, channel_divisible, blocks)

        def removal(r: np.ndarray) -> float:
            k = base.copy()
            k[pos] = kept(r)
            return 1.0 - self.cost.macs_of_count_vector(k) / orig

        quantum = np.maximum(channel_divisible, blocks) / n
        r = sample_ratio_vector(removal, len(ids), removal_ratio, seed, candidate, quantum)
        k = kept(r)
        return {int(g): int(c) for g, c, full in zip(ids, k, n, strict=True) if c < full}

    def plan_from_counts(self, counts: Mapping[int, int], criterion: str = "l1") -> PruningPlan:
        return plan_from_counts(self.graph, counts, self.orders(criterion))

    def uniform_plan(
        self,
        removal_ratio: float,
        criterion: str = "l1",
        channel_divisible: int = 2,
        weights: Mapping[int, float] | None = None,
        tolerance: float = TARGET_TOLERANCE,
        argument: str = "removal_ratio",
        strict: bool = True,
        latency: LatencyModel | None = None,
    ) -> PruningPlan:
        """Uniform (or ``weights``-scaled) group ratios bisected so MACs drop by the target
        (within ``tolerance``; ``strict=False``: the closest plan, with a warning). With a
        ``latency`` model the target is a fraction of its predicted latency instead, and
        counts round up to the machine's fast widths."""
        check_removal_ratio(removal_ratio, argument)
        prunable = [g.id for g in self.graph.prunable_groups]
        if not prunable:
            raise PlanError(nothing_prunable(self.graph))
        weights = weights or {gid: 1.0 for gid in prunable}
        top = max(1e-9, min(weights.values()))

        def ratios_at(scale: float) -> dict[int, float]:
            return {gid: min(MAX_GROUP_RATIO, scale * weights.get(gid, 1.0)) for gid in prunable}

        if latency is not None:
            return bisect_latency(self, latency, ratios_at, MAX_GROUP_RATIO / min(1.0, top),
                                  removal_ratio, criterion=criterion,
                                  channel_divisible=channel_divisible, strict=strict,
                                  argument=argument, tolerance=tolerance)
        plan = bisect_plan(
            self.cost, ratios_at, lambda r: self.plan(r, criterion, channel_divisible),
            removal_ratio, hi=MAX_GROUP_RATIO / min(1.0, top), tolerance=tolerance,
            quantum=self.quantum(channel_divisible),
            counts_of=lambda r: self.counts(r, channel_divisible), strict=False,
        )
        check_landing(self.removal(plan), removal_ratio, channel_divisible=channel_divisible,
                      strict=strict, argument=argument, tolerance=tolerance)
        return plan

    # The public name (the reference's API). A backend may narrow it to its own API's words
    # (Keras: ``ratio``); engine code asks ``uniform_plan``, whose signature every pruner keeps.
    plan_for_removal = uniform_plan

    def quantum(self, channel_divisible: int) -> dict[int, float]:
        """One rounding step of each prunable group, as a ratio."""
        return {g.id: max(channel_divisible, g.blocks) / g.num_channels
                for g in self.graph.prunable_groups}

    def macs(self, plan: PruningPlan | None) -> int:
        return self.cost.macs(plan)

    def params(self, plan: PruningPlan | None) -> int:
        return self.cost.params(plan)

    def removal(self, plan: PruningPlan) -> float:
        return 1.0 - self.macs(plan) / max(1, self.original_macs)

    # -- specs ---------------------------------------------------------------------------
    def to_spec(self, plan: PruningPlan, **meta: object) -> dict:
        extra = {"framework": self.framework} if self.framework else {}
        return plan_to_spec(
            self.graph, plan, **extra,
            weights_digest=self.weights_digest(),
            macs={"original": self.original_macs / 1e6, "pruned": self.macs(plan) / 1e6},
            params={"original": self.original_params / 1e6, "pruned": self.params(plan) / 1e6},
            **meta,
        )

    def plan_from_spec(self, spec: dict) -> PruningPlan:
        return plan_from_spec(self.graph, spec)

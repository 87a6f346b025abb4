"""One object over the core for PyTorch: capture once, then plan, cost and build models.

Runners (iterative, one-step, OFA) and the app stand on :class:`ChannelPruner`; it holds no
model state of its own beyond a reference to the user's model, which it never mutates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from uif_explorer.core.allocation import (
    MAX_GROUP_RATIO,
    TARGET_TOLERANCE,
    bisect_plan,
    check_removal_ratio,
)
from uif_explorer.core.importance import group_scores
from uif_explorer.core.plan import (
    CostModel,
    PlanError,
    PruningPlan,
    importance_order,
    kept_count,
    plan_from_counts,
    plan_from_scores,
)
from uif_explorer.core.spec import plan_from_spec, plan_to_spec
from uif_explorer.torch.apply import make_slim, make_sparse
from uif_explorer.torch.capture import Capture, capture, digest_weights


def slice_stats(model: nn.Module, cap: Capture) -> list[dict[str, np.ndarray] | None]:
    """Per slice of the graph: L1 and L2 magnitude of each position along its channel axis."""
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    out: list[dict[str, np.ndarray] | None] = []
    for sl in cap.graph.slices:
        t = tensors.get(sl.param)
        if t is None or not t.is_floating_point():
            out.append(None)
            continue
        t = t.detach().float().cpu()
        if sl.blocks > 1:
            rows = t.shape[0]
            per_block = t.reshape(sl.blocks, rows // sl.blocks, *t.shape[1:])
            dims = [d for d in range(per_block.ndim) if d not in (0, sl.dim + 1)]
            l1 = per_block.abs().sum(dim=dims).reshape(-1)
            l2 = per_block.pow(2).sum(dim=dims).sqrt().reshape(-1)
        else:
            dims = [d for d in range(t.ndim) if d != sl.dim]
            l1 = t.abs().sum(dim=dims) if dims else t.abs()
            l2 = t.pow(2).sum(dim=dims).sqrt() if dims else t.abs()
        out.append({"l1": l1.numpy(), "l2": l2.numpy()})
    return out


class ChannelPruner:
    """Capture ``model`` at ``inputs`` and offer plans, costs, sparse and slim models."""

    def __init__(
        self,
        model: nn.Module,
        inputs: torch.Tensor | Sequence[torch.Tensor],
        excludes: Iterable[object] | None = None,
    ) -> None:
        self.model = model
        self.inputs = inputs
        self.capture = capture(model, inputs, excludes)
        self.graph = self.capture.graph
        self.cost = CostModel(self.graph)
        self._scores: dict[tuple[str, int], dict[int, np.ndarray]] = {}

    # -- facts ---------------------------------------------------------------------------
    @property
    def original_macs(self) -> int:
        return self.cost.original_macs

    @property
    def original_params(self) -> int:
        return self.cost.original_params

    def groups_table(self) -> pd.DataFrame:
        rows = [
            {
                "group": g.id,
                "name": g.name,
                "channels": g.num_channels,
                "prunable": g.prunable,
                "layers": ", ".join(g.modules),
                "reason": g.excluded_reason or "",
            }
            for g in self.graph.groups
        ]
        return pd.DataFrame(rows, columns=["group", "name", "channels", "prunable", "layers",
                                           "reason"])

    def scores(self, criterion: str = "l1", seed: int = 0) -> dict[int, np.ndarray]:
        key = (criterion, seed)
        if key not in self._scores:
            stats = slice_stats(self.model, self.capture)
            self._scores[key] = group_scores(self.graph, stats, criterion, seed)
        return self._scores[key]

    def weights_digest(self) -> str:
        return digest_weights(self.model)

    # -- plans ---------------------------------------------------------------------------
    def plan(
        self,
        ratios: float | Mapping[int, float],
        criterion: str = "l1",
        channel_divisible: int = 2,
    ) -> PruningPlan:
        """A plan from one ratio for every prunable group, or a ratio per group id."""
        if isinstance(ratios, (int, float)):
            ratios = {g.id: float(ratios) for g in self.graph.prunable_groups}
        return plan_from_scores(
            self.graph, ratios, self.scores(criterion), channel_divisible,
            orders=self.orders(criterion),
        )

    def counts(self, ratios: Mapping[int, float], channel_divisible: int = 2) -> dict[int, int]:
        """Kept channels per group for these ratios (the same rounding as ``plan``)."""
        out = {}
        for gid, ratio in ratios.items():
            g = self.graph.groups[gid]
            if g.prunable and ratio > 0:
                out[gid] = kept_count(g.num_channels, float(ratio), channel_divisible, g.blocks)
        return out

    def orders(self, criterion: str = "l1") -> dict[int, np.ndarray]:
        """Per group, channel positions from most to least important (cached)."""
        key = ("order:" + criterion, 0)
        if key not in self._scores:
            scores = self.scores(criterion)
            self._scores[key] = {
                g.id: importance_order(g, scores[g.id]) for g in self.graph.groups
            }
        return self._scores[key]

    def plan_from_counts(self, counts: Mapping[int, int], criterion: str = "l1") -> PruningPlan:
        return plan_from_counts(self.graph, counts, self.orders(criterion))

    def plan_for_removal(
        self,
        removal_ratio: float,
        criterion: str = "l1",
        channel_divisible: int = 2,
        weights: Mapping[int, float] | None = None,
        tolerance: float = TARGET_TOLERANCE,
    ) -> PruningPlan:
        """Uniform (or ``weights``-scaled) group ratios bisected so MACs drop by the target."""
        check_removal_ratio(removal_ratio)
        prunable = [g.id for g in self.graph.prunable_groups]
        if not prunable:
            raise PlanError("No channel group of this model can be pruned (see groups_table()).")
        weights = weights or {gid: 1.0 for gid in prunable}

        top = max(1e-9, min(weights.values()))

        def ratios_at(scale: float) -> dict[int, float]:
            return {gid: min(MAX_GROUP_RATIO, scale * weights.get(gid, 1.0)) for gid in prunable}

        quantum = {
            g.id: max(channel_divisible, g.blocks) / g.num_channels
            for g in self.graph.prunable_groups
        }
        return bisect_plan(
            self.cost,
            ratios_at,
            lambda r: self.plan(r, criterion, channel_divisible),
            removal_ratio,
            hi=MAX_GROUP_RATIO / min(1.0, top),
            tolerance=tolerance,
            quantum=quantum,
            counts_of=lambda r: self.counts(r, channel_divisible),
        )

    def macs(self, plan: PruningPlan | None) -> int:
        return self.cost.macs(plan)

    def params(self, plan: PruningPlan | None) -> int:
        return self.cost.params(plan)

    def removal(self, plan: PruningPlan) -> float:
        return 1.0 - self.macs(plan) / max(1, self.original_macs)

    # -- models --------------------------------------------------------------------------
    def sparse_model(self, plan: PruningPlan) -> nn.Module:
        return make_sparse(self.model, self.capture, plan)

    def slim_model(self, plan: PruningPlan) -> nn.Module:
        return make_slim(self.model, self.capture, plan)

    def to_spec(self, plan: PruningPlan, **meta: object) -> dict:
        return plan_to_spec(
            self.graph, plan,
            weights_digest=self.weights_digest(),
            macs={"original": self.original_macs / 1e6, "pruned": self.macs(plan) / 1e6},
            params={"original": self.original_params / 1e6, "pruned": self.params(plan) / 1e6},
            **meta,
        )

    def plan_from_spec(self, spec: dict) -> PruningPlan:
        return plan_from_spec(self.graph, spec)

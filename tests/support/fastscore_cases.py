"""Plans and full-evaluation scores the fastscore tests compare reused-activation scores with."""

from __future__ import annotations

from torch import nn

from uif_explorer.torch.apply import make_sparse
from uif_explorer.torch.evaluation import top1_accuracy
from uif_explorer.torch.pruner import ChannelPruner


def one_group_items(pr: ChannelPruner, ratios=(0.3, 0.6), every: int = 1) -> list:
    """The analysis' items: the unpruned model, then each ``every``-th group at each ratio."""
    groups = [g for g in pr.graph.groups if g.prunable][::every]
    return [(None, "the unpruned model")] + [
        (pr.plan({g.id: r}, "l1", channel_divisible=1), f"group {g.id} at {r}")
        for g in groups for r in ratios]


def full_scores(model: nn.Module, pr: ChannelPruner, items: list, loader) -> dict[int, float]:
    """Every item scored by evaluating its whole sparse model."""
    return {i: top1_accuracy(model if plan is None else make_sparse(model, pr.capture, plan),
                             loader) for i, (plan, _) in enumerate(items)}

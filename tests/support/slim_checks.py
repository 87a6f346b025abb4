"""Checks the PyTorch rule tests share: a slim model computes what its sparse twin computes on
random inputs and has the MACs the plan promised, and finding a channel group by producer."""

from __future__ import annotations

import torch
from torch import nn

from uif_explorer.torch.macs import count_macs


def group_of(pruner, producer: str):
    """The one channel group that ``producer`` writes."""
    (group,) = [g for g in pruner.graph.groups if producer in g.producers]
    return group


def slim_matches_sparse(x: torch.Tensor, pruner, plan, tol: float = 1e-4) -> nn.Module:
    """Build sparse and slim models of ``plan``; assert they agree on ``x`` and two random inputs
    of its shape and that the slim model's counted MACs equal the plan's. Returns the slim model."""
    sparse, slim = pruner.sparse_model(plan).eval(), pruner.slim_model(plan).eval()
    with torch.no_grad():
        for y in (x, torch.randn_like(x), torch.randn_like(x)):
            a, b = slim(y), sparse(y)
            assert float((a - b).norm() / b.norm()) <= tol
    assert count_macs(slim, x) == pruner.macs(plan)
    return slim

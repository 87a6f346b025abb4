"""An op that reads an integer buffer (an index table) does not need a pruning rule."""

from __future__ import annotations

import torch
from torch import nn

from uif_explorer.torch.pruner import ChannelPruner


class IndexedBias(nn.Module):
    """Swin V2's pattern: an MLP makes a per-head table, indexed by an integer buffer."""

    def __init__(self, heads: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.cpb = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, heads))
        self.register_buffer("coords", torch.randn(5, 2))
        self.register_buffer("index", torch.randint(0, 5, (6,)))
        self.head = nn.Linear(8 + heads, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        table = self.cpb(self.coords)[self.index]  # (6, heads)
        feats = self.stem(x).mean((2, 3))
        return self.head(torch.cat([feats, table.mean(0).expand(x.shape[0], -1)], 1))


def test_index_buffer_does_not_stop_the_capture_and_slim_matches_sparse() -> None:
    model, x = IndexedBias().eval(), torch.randn(2, 3, 8, 8)
    pr = ChannelPruner(model, x)
    assert pr.graph.prunable_groups
    plan = pr.plan(0.5)
    with torch.no_grad():
        ys, yl = pr.sparse_model(plan).eval()(x), pr.slim_model(plan).eval()(x)
    assert torch.allclose(ys, yl, atol=1e-5)

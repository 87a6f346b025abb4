"""Groups whose width the model's own code reads from another tensor are found and frozen."""

from __future__ import annotations

import torch
from torch import nn

from uif_explorer.torch.pruner import ChannelPruner


class WidthFromInput(nn.Module):
    """Like MaxViT's attention: the output is reshaped to the *input's* width, a tie that
    shares no tensor with the inner projection, so only running the code reveals it."""

    def __init__(self, c: int = 8, inner: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.proj = nn.Conv2d(c, inner, 1)
        self.mid = nn.Conv2d(inner, inner, 3, padding=1)
        self.out = nn.Conv2d(c + inner, c, 1)
        self.head = nn.Linear(c, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        b, c, h, w = x.shape
        y = self.mid(torch.relu(self.proj(x)))
        y = y.reshape(b, c, h, w)  # the width of x, not of y: a no-op in the captured graph
        x = self.out(torch.cat([x, y], 1))
        return self.head(x.mean((2, 3)))


def test_group_narrowing_the_code_rejects_is_frozen_and_the_rest_stays_prunable() -> None:
    model, x = WidthFromInput().eval(), torch.randn(2, 3, 8, 8)
    pr = ChannelPruner(model, x)
    frozen = [g for g in pr.graph.groups if g.excluded_reason and "breaks" in g.excluded_reason]
    assert frozen, pr.groups_table()
    assert all("RuntimeError" in g.excluded_reason for g in frozen)
    assert pr.graph.prunable_groups  # `out`'s channels can still go
    plan = pr.plan(0.5)
    slim, sparse = pr.slim_model(plan).eval(), pr.sparse_model(plan).eval()
    with torch.no_grad():
        ys, yl = sparse(x), slim(x)
    assert torch.allclose(ys, yl, atol=1e-5)
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in model.parameters())


def test_models_that_run_keep_every_group() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3)).eval()
    pr = ChannelPruner(model, torch.randn(1, 3, 8, 8))
    assert not any(g.excluded_reason and "breaks" in g.excluded_reason for g in pr.graph.groups)

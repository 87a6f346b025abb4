"""Splits into unequal channel chunks (issue 18, item 3).

``torch.split(x, self.split_sizes, dim=1)``: each chunk prunes on its own (its own conv, then a
concat), and the slim model gets the kept sizes in ``self.split_sizes`` so that its forward
still runs; slim == sparse and the plan's MACs equal the FLOP counter's. Sizes written as
literals in ``forward`` cannot be rewritten: the split's channels are fixed with that reason.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from topologies import Head, cbr
from torch import nn

from uif_explorer.torch.macs import count_macs
from uif_explorer.torch.pruner import ChannelPruner
from uif_explorer.torch.rules.shape import LITERAL_SIZES


class SplitSizes(nn.Module):
    """stem -> split into 4/8/12 channels -> a conv per chunk -> concat -> head."""

    def __init__(self, literal: bool = False) -> None:
        super().__init__()
        self.literal = literal
        if not literal:
            self.split_sizes = [4, 8, 12]
        self.stem = cbr(3, 24)
        self.branches = nn.ModuleList(cbr(c, c, 3, groups=c) for c in (4, 8, 12))
        self.mix = nn.ModuleList(nn.Conv2d(c, 6, 1) for c in (4, 8, 12))
        self.head = Head(18)

    def forward(self, x):
        x = self.stem(x)
        sizes = [4, 8, 12] if self.literal else self.split_sizes
        parts = torch.split(x, sizes, dim=1)
        outs = [m(b(p)) for p, b, m in zip(parts, self.branches, self.mix, strict=True)]
        return self.head(F.relu(torch.cat(outs, dim=1)))


def _pruner(literal: bool) -> tuple[nn.Module, torch.Tensor, ChannelPruner]:
    torch.manual_seed(0)
    model, x = SplitSizes(literal).eval(), torch.randn(2, 3, 16, 16)
    return model, x, ChannelPruner(model, x)


def test_each_chunk_prunes_on_its_own_and_sizes_are_rewritten():
    model, x, pr = _pruner(literal=False)
    (stem,) = [g for g in pr.graph.groups if "stem.0" in g.producers]
    assert stem.prunable and stem.num_channels == 24
    plan = pr.plan_for_removal(0.4)
    assert stem.id in plan.kept
    sparse, slim = pr.sparse_model(plan).eval(), pr.slim_model(plan).eval()
    kept = plan.kept[stem.id]
    assert slim.split_sizes == [int(((kept >= a) & (kept < b)).sum())
                                for a, b in ((0, 4), (4, 12), (12, 24))]
    assert model.split_sizes == [4, 8, 12]  # the user's model is not touched
    with torch.no_grad():
        for y in (x, torch.randn_like(x)):
            torch.testing.assert_close(slim(y), sparse(y), atol=1e-5, rtol=1e-5)
    assert count_macs(slim, x) == pr.macs(plan)


def test_literal_sizes_freeze_the_split_with_the_reason():
    _, _, pr = _pruner(literal=True)
    (stem,) = [g for g in pr.graph.groups if "stem.0" in g.producers]
    assert not stem.prunable and LITERAL_SIZES in stem.excluded_reason
    assert any(g.prunable for g in pr.graph.groups)  # the per-chunk convs still prune


def test_attribute_equal_to_literal_sizes_is_caught_by_the_probe():
    """An attribute that holds the sizes but is not what forward reads: the narrowed slim
    copy fails, so the capture's probe freezes the group with torch's own error."""
    torch.manual_seed(0)
    model = SplitSizes(literal=True).eval()
    model.sizes_for_docs = [4, 8, 12]
    pr = ChannelPruner(model, torch.randn(2, 3, 16, 16))
    (stem,) = [g for g in pr.graph.groups if "stem.0" in g.producers]
    assert not stem.prunable and "split_with_sizes expects" in stem.excluded_reason

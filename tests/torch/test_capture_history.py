"""Capture does not depend on history, and a model with nothing to prune says why (issue 18).

A detector-style head that builds its anchors on its first call (reading the features across
channels to do it) froze the layer feeding it when captured before it ever ran (a real detector
had nothing left to prune). The capture now runs a copy once first: the model captures the same
whether or not it has run, the note names the module that changed state, and the user's model
keeps its state.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uif_explorer.core.plan import PlanError
from uif_explorer.core.rules import nothing_prunable
from uif_explorer.torch.capture import capture
from uif_explorer.torch.macs import count_macs
from uif_explorer.torch.pruner import ChannelPruner


class AnchorHead(nn.Module):
    """Class and box convs; anchors are built and cached on the first call."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.cls = nn.Conv2d(cin, 3, 1)
        self.box = nn.Conv2d(cin, 4, 1)
        self.anchors: torch.Tensor | None = None

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.anchors is None:
            # The grid follows the feature map (a mean over channels gives its shape and device).
            grid = feat.detach()[0].mean(0)
            ys = torch.arange(grid.shape[0], dtype=grid.dtype)[:, None] + grid * 0
            xs = torch.arange(grid.shape[1], dtype=grid.dtype)[None, :] + grid * 0
            self.anchors = torch.stack([xs, ys], -1).reshape(-1, 2)
        n = feat.shape[0]
        box = self.box(feat).flatten(2).transpose(1, 2) + self.anchors.repeat(1, 2)
        return self.cls(feat).flatten(2).transpose(1, 2), box.reshape(n, -1, 4)


class TinyDetector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.head = AnchorHead(24)

    def forward(self, x):
        return self.head(F.relu(self.body(F.relu(self.stem(x)))))


def _summary(cap) -> list[tuple[str, int, bool]]:
    return [(g.name, g.num_channels, g.prunable) for g in cap.graph.groups]


def test_first_call_state_is_built_before_capture_on_a_copy():
    torch.manual_seed(0)
    fresh, x = TinyDetector().eval(), torch.randn(2, 3, 16, 16)
    ran = copy.deepcopy(fresh)
    with torch.no_grad():
        ran(x)
    cap_fresh, cap_ran = capture(fresh, x), capture(ran, x)
    assert fresh.head.anchors is None  # the user's model was not run
    assert _summary(cap_fresh) == _summary(cap_ran)
    assert cap_fresh.graph.graph_digest() == cap_ran.graph.graph_digest()
    assert {"stem", "body"} <= {g.name for g in cap_fresh.graph.prunable_groups}
    assert cap_fresh.warmed_modules == ["head"] and cap_ran.warmed_modules == []
    assert any("first call" in n and "head" in n for n in cap_fresh.graph.notes)


def test_detector_that_never_ran_prunes_to_half_its_macs():
    torch.manual_seed(0)
    model, x = TinyDetector().eval(), torch.randn(2, 3, 16, 16)
    pr = ChannelPruner(model, x)
    plan = pr.plan_for_removal(0.5, channel_divisible=1, tolerance=0.05)
    slim, sparse = pr.slim_model(plan).eval(), pr.sparse_model(plan).eval()
    with torch.no_grad():
        for a, b in zip(slim(x), sparse(x), strict=True):
            assert torch.allclose(a, b, atol=1e-5)
    assert count_macs(slim, x) == pr.macs(plan)
    assert abs(pr.removal(plan) - 0.5) <= 0.05


class Frozen(nn.Module):
    """Every channel either feeds an output or is read across channels: nothing to prune."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(y.mean((2, 3))), F.softmax(y, dim=1)


def test_nothing_to_prune_is_one_line_naming_frozen_layers():
    pr = ChannelPruner(Frozen().eval(), torch.randn(1, 3, 8, 8))
    assert not pr.graph.prunable_groups
    line = nothing_prunable(pr.graph)
    assert "\n" not in line and line in pr.graph.notes
    assert "conv (softmax/sort across channels" in line and "fc (feeds a model output)" in line
    with pytest.raises(PlanError, match="No channel group of this model can be pruned"):
        pr.plan_for_removal(0.3)

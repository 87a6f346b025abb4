"""Layout ops that channels flow through (issue 18, timm families below half their MACs).

- ``x.reshape_as(y)`` / ``x.view_as(y)``: LeViT's ``LinearNorm`` batch-norms a flattened
  ``(B * N, C)`` tensor and restores it with ``reshape_as``; the channels follow exactly as
  through the equivalent ``reshape``, tied to ``y``'s channels (whose width the slim model
  reads), and fixed where ``y``'s width is a constant.
- Padding of a channels-last ``(B, H, W, C)`` tensor (DaViT's and EfficientViT's window
  attention pad H and W before cutting windows): channels pass through a pad that leaves
  their dim alone.

Each: slim == sparse on random inputs and the plan's MACs equal PyTorch's FLOP counter.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uif_explorer.torch.macs import count_macs
from uif_explorer.torch.pruner import ChannelPruner

DIM, HIDDEN = 16, 32


class LinearNorm(nn.Module):
    """timm LeViT's ``LinearNorm``: BatchNorm1d over the flattened tokens, shape restored
    with ``reshape_as`` (``view_as`` with ``view=True``)."""

    def __init__(self, cin: int, cout: int, view: bool = False) -> None:
        super().__init__()
        self.linear, self.bn, self.view = nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout),\
            view

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        y = self.bn(x.flatten(0, 1))
        return y.view_as(x) if self.view else y.reshape_as(x)


class LeViTLike(nn.Module):
    """Token embedding, a residual MLP of LinearNorms, a classifier over the mean token."""

    def __init__(self, view: bool = False, to_constant: bool = False) -> None:
        super().__init__()
        self.embed = LinearNorm(12, DIM, view)
        self.ln1, self.ln2 = LinearNorm(DIM, HIDDEN, view), LinearNorm(HIDDEN, DIM, view)
        self.head = nn.Linear(DIM, 5)
        self.to_constant = to_constant
        self.register_buffer("template", torch.zeros(2, 6, DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        if self.to_constant:  # the target's width is a constant: the embedding stays whole
            x = x.flatten(0, 1).reshape_as(self.template)
        x = x + self.ln2(F.hardswish(self.ln1(x)))
        return self.head(x.mean(1))


class WindowPad(nn.Module):
    """Channels-last window attention's padding: ``(B, H, W, C)`` padded on H and W."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, DIM, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(DIM, HIDDEN), nn.Linear(HIDDEN, DIM)
        self.head = nn.Linear(DIM, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        y = F.pad(x, (0, 0, 0, 1, 0, 1))  # H and W to a multiple of the window
        y = self.fc2(F.gelu(self.fc1(y)))[:, : x.shape[1], : x.shape[2]]
        return self.head((x + y).mean((1, 2)))


def _group(pr: ChannelPruner, producer: str):
    (g,) = [g for g in pr.graph.groups if producer in g.producers]
    return g


def _check(model: nn.Module, x: torch.Tensor, pr: ChannelPruner, ratio: float = 0.4) -> None:
    plan = pr.plan_for_removal(ratio)
    sparse, slim = pr.sparse_model(plan).eval(), pr.slim_model(plan).eval()
    with torch.no_grad():
        for y in (x, torch.randn_like(x), torch.randn_like(x)):
            a, b = slim(y), sparse(y)
            assert float((a - b).norm() / b.norm()) <= 1e-4
    assert count_macs(slim, x) == pr.macs(plan)
    assert pr.removal(plan) >= ratio - 0.05


@pytest.mark.parametrize("view", [False, True], ids=["reshape_as", "view_as"])
def test_reshape_as_follows_channels_like_reshape(view):
    torch.manual_seed(0)
    model, x = LeViTLike(view).eval(), torch.randn(2, 6, 12)
    pr = ChannelPruner(model, x)
    for producer in ("embed.linear", "ln1.linear"):
        assert _group(pr, producer).prunable, _group(pr, producer).excluded_reason
    _check(model, x, pr)


def test_reshape_as_a_constant_width_fixes_the_channels():
    torch.manual_seed(0)
    model, x = LeViTLike(to_constant=True).eval(), torch.randn(2, 6, 12)
    pr = ChannelPruner(model, x)
    embed = _group(pr, "embed.linear")
    assert not embed.prunable and "reshape_as to a tensor whose width there is a constant" \
        in embed.excluded_reason
    assert _group(pr, "ln1.linear").prunable


def test_channels_last_pad_keeps_channels_prunable():
    torch.manual_seed(0)
    model, x = WindowPad().eval(), torch.randn(2, 3, 7, 7)
    pr = ChannelPruner(model, x)
    assert _group(pr, "stem").prunable, _group(pr, "stem").excluded_reason
    assert _group(pr, "fc1").prunable
    _check(model, x, pr)

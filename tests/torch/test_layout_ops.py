"""Layout ops that channels flow through (issue 18, timm families below half their MACs).

- ``x.reshape_as(y)`` / ``x.view_as(y)``: LeViT's ``LinearNorm`` batch-norms a flattened
  ``(B * N, C)`` tensor and restores it with ``reshape_as``; the channels follow exactly as
  through the equivalent ``reshape``, tied to ``y``'s channels (whose width the slim model
  reads), and fixed where ``y``'s width is a constant.
- ``torch.split(qkv, [self.key_dim, self.key_dim, self.val_dim])`` (EfficientViT's cascaded
  group attention, LeViT, EfficientViM): sizes read from int attributes, rewritten in the slim
  model; chunks read from one attribute stay equal; sizes that equal several attributes (which
  one the code read is unknown) freeze the split with the reason.
- A global response norm (ConvNeXt-V2, timm's ``GlobalResponseNorm``: L2 norm over space
  divided by its mean over channels, per-channel weights through ``weight.view(1, 1, 1, -1)``):
  it spans channels like a LayerNorm, so the sparse model recomputes it over the kept ones;
  a plain mean over channels (CBAM-style spatial attention) stays a barrier.
- Padding of a channels-last ``(B, H, W, C)`` tensor (DaViT's and EfficientViT's window
  attention pad H and W before cutting windows): channels pass through a pad that leaves
  their dim alone.

Each: slim == sparse on random inputs and the plan's MACs equal PyTorch's FLOP counter.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from slim_checks import group_of, slim_matches_sparse
from torch import nn

from uif_explorer.torch.pruner import ChannelPruner
from uif_explorer.torch.rules.shape import LITERAL_SIZES

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


class CascadedHeads(nn.Module):
    """EfficientViT (MSRA)'s cascaded group attention: head i reads its chunk of the input
    plus head i-1's output; q, k, v are split with sizes read from ``key_dim``/``val_dim``."""

    def __init__(self, key_dim: int = 4) -> None:
        super().__init__()
        self.num_heads, self.key_dim, self.val_dim = 2, key_dim, DIM // 2
        self.scale = key_dim ** -0.5
        self.stem = nn.Conv2d(3, DIM, 3, padding=1)
        self.qkvs = nn.ModuleList(nn.Conv2d(DIM // 2, 2 * key_dim + self.val_dim, 1)
                                  for _ in range(self.num_heads))
        self.proj = nn.Conv2d(self.val_dim * self.num_heads, DIM, 1)
        self.head = nn.Linear(DIM, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        b, _, h, w = x.shape
        feats_in, outs = x.chunk(self.num_heads, dim=1), []
        feat = feats_in[0]
        for i, qkv in enumerate(self.qkvs):
            feat = qkv(feat if i == 0 else feat + feats_in[i])
            q, k, v = feat.split([self.key_dim, self.key_dim, self.val_dim], dim=1)
            q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)
            attn = ((q * self.scale).transpose(-2, -1) @ k).softmax(dim=-1)
            feat = (v @ attn.transpose(-2, -1)).view(b, self.val_dim, h, w)
            outs.append(feat)
        x = x + self.proj(F.relu(torch.cat(outs, 1)))
        return self.head(x.mean((2, 3)))


class GRN(nn.Module):
    """timm's ``GlobalResponseNorm``, both layouts."""

    def __init__(self, dim: int, channels_last: bool = True) -> None:
        super().__init__()
        self.eps = 1e-6
        self.spatial, self.cdim = ((1, 2), -1) if channels_last else ((2, 3), 1)
        self.wb_shape = (1, 1, 1, -1) if channels_last else (1, -1, 1, 1)
        self.weight, self.bias = nn.Parameter(torch.randn(dim)), nn.Parameter(torch.randn(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x.norm(p=2, dim=self.spatial, keepdim=True)
        n = g / (g.mean(dim=self.cdim, keepdim=True) + self.eps)
        return x + torch.addcmul(self.bias.view(self.wb_shape), self.weight.view(self.wb_shape),
                                 x * n)


class ConvNeXtV2Like(nn.Module):
    """A ConvNeXt-V2 block's MLP (GRN on its hidden width) with a residual; ``spatial_gate``
    multiplies the branch by a gate made from the mean over channels (CSATv2)."""

    def __init__(self, channels_last: bool = True, spatial_gate: bool = False) -> None:
        super().__init__()
        self.channels_last, self.spatial_gate = channels_last, spatial_gate
        self.stem = nn.Conv2d(3, DIM, 3, padding=1)
        if channels_last:
            self.fc1, self.fc2 = nn.Linear(DIM, HIDDEN), nn.Linear(HIDDEN, DIM)
        else:
            self.fc1, self.fc2 = nn.Conv2d(DIM, HIDDEN, 1), nn.Conv2d(HIDDEN, DIM, 1)
        self.grn = GRN(HIDDEN, channels_last)
        self.head = nn.Linear(DIM, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = x.permute(0, 2, 3, 1) if self.channels_last else x
        y = self.fc2(self.grn(F.gelu(self.fc1(y))))
        y = y.permute(0, 3, 1, 2) if self.channels_last else y
        if self.spatial_gate:
            y = y * torch.sigmoid(y.mean(dim=1, keepdim=True))
        return self.head((x + y).mean((2, 3)))


_group = group_of


def _check(model: nn.Module, x: torch.Tensor, pr: ChannelPruner, ratio: float = 0.4) -> None:
    plan = pr.plan_for_removal(ratio, channel_divisible=1, tolerance=0.05)
    slim_matches_sparse(x, pr, plan)
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


def test_split_sizes_read_from_int_attributes_are_rewritten():
    torch.manual_seed(0)
    model, x = CascadedHeads().eval(), torch.randn(2, 3, 5, 5)
    pr = ChannelPruner(model, x)
    qkv = [_group(pr, f"qkvs.{i}") for i in range(2)]
    assert all(g.prunable for g in qkv), [g.excluded_reason for g in qkv]
    plan = pr.plan_for_removal(0.45, channel_divisible=1, tolerance=0.05)
    slim = pr.slim_model(plan)
    assert slim.key_dim < 4 and slim.val_dim < DIM // 2  # the attributes follow the plan
    assert slim.qkvs[0].out_channels == 2 * slim.key_dim + slim.val_dim
    assert (model.key_dim, model.val_dim) == (4, DIM // 2)  # the user's model is untouched
    _check(model, x, pr, 0.45)


def test_split_sizes_equal_to_several_attributes_freeze_the_split():
    torch.manual_seed(0)
    model, x = CascadedHeads(key_dim=DIM // 2).eval(), torch.randn(2, 3, 5, 5)
    pr = ChannelPruner(model, x)
    qkv = _group(pr, "qkvs.0")
    assert not qkv.prunable and LITERAL_SIZES in qkv.excluded_reason


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "nchw"])
def test_global_response_norm_spans_channels_like_a_norm(channels_last):
    torch.manual_seed(0)
    model, x = ConvNeXtV2Like(channels_last).eval(), torch.randn(2, 3, 6, 6)
    pr = ChannelPruner(model, x)
    hidden = _group(pr, "fc1")
    assert hidden.prunable, hidden.excluded_reason
    plan = pr.plan_for_removal(0.4, channel_divisible=1, tolerance=0.05)
    assert len(plan.kept.get(hidden.id, range(HIDDEN))) < HIDDEN  # the norm's width is cut
    assert pr.slim_model(plan).grn.weight.shape[0] == len(plan.kept[hidden.id])
    _check(model, x, pr)


def test_mean_over_channels_outside_a_response_norm_stays_a_barrier():
    torch.manual_seed(0)
    pr = ChannelPruner(ConvNeXtV2Like(spatial_gate=True).eval(), torch.randn(2, 3, 6, 6))
    assert "reduction across channels" in _group(pr, "stem").excluded_reason
    assert _group(pr, "fc1").prunable


def test_a_split_chunk_keeps_a_channel_when_its_group_prunes_hard():
    """q/k share a group with v and the residual (one conv makes them): with q/k the least
    important, a plain top-k would drop all of them and build a 0-wide conv."""
    torch.manual_seed(0)
    model, x = CascadedHeads().eval(), torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        for qkv in model.qkvs:
            qkv.weight[: 2 * model.key_dim] *= 1e-3
    pr = ChannelPruner(model, x)
    plan = pr.plan_for_removal(0.6, channel_divisible=1, tolerance=0.1)
    assert pr.slim_model(plan).key_dim >= 1
    _check(model, x, pr, 0.6)

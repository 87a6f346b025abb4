"""RMS norms (issue 18: timm's Gemma-4 ViT, ``F.rms_norm`` / ``nn.RMSNorm`` / timm's
``RmsNorm`` all lower to ``aten.rms_norm``).

- Over the channel dim (a pre-norm residual block): it spans the channels like a LayerNorm,
  so its weight is sliced and the sparse model recomputes it over the kept channels; a module
  whose forward reads ``normalized_shape`` (timm's ``RmsNorm``, ``nn.RMSNorm`` without
  weights) gets the kept width there in the slim model.
- Per head (Gemma's ``q_norm`` / ``k_norm`` / weightless ``v_norm`` over ``head_dim`` after a
  ``view`` into heads): its weight follows the head-width group.

Each: slim == sparse on random inputs and the plan's MACs equal PyTorch's FLOP counter.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from slim_checks import group_of, slim_matches_sparse
from torch import nn

from uif_explorer.torch.pruner import ChannelPruner

DIM, HEADS, HIDDEN = 16, 4, 32


class RmsNormAttr(nn.Module):
    """timm's ``RmsNorm``: a plain module calling ``F.rms_norm`` with ``self.normalized_shape``
    (``affine=False`` has no weight at all)."""

    def __init__(self, dim: int, affine: bool = True) -> None:
        super().__init__()
        self.normalized_shape, self.eps = (dim,), 1e-6
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)


class GemmaAttention(nn.Module):
    """Gemma-4 ViT attention: separate q/k/v projections viewed into heads, an RMS norm over
    the head width of each (v's without weights), fused attention, output projection."""

    def __init__(self) -> None:
        super().__init__()
        self.num_heads, self.head_dim = HEADS, DIM // HEADS
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(DIM, DIM) for _ in range(3))
        self.q_norm, self.k_norm = RmsNormAttr(self.head_dim), RmsNormAttr(self.head_dim)
        self.v_norm = RmsNormAttr(self.head_dim, affine=False)
        self.o_proj = nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (p(x).view(b, n, self.num_heads, self.head_dim)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k, v = (t.transpose(1, 2) for t in (self.q_norm(q), self.k_norm(k), self.v_norm(v)))
        y = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        return self.o_proj(y.transpose(1, 2).reshape(b, n, -1))


class RmsBlockNet(nn.Module):
    """Token embedding, a sandwich-norm residual block (``nn.RMSNorm`` with and without
    weights, timm-style ``RmsNorm``), a gated MLP, a classifier over the mean token."""

    def __init__(self, attention: bool = False) -> None:
        super().__init__()
        self.embed = nn.Linear(12, DIM)
        self.norm1 = nn.RMSNorm(DIM, eps=1e-6)
        self.attn = GemmaAttention() if attention else nn.Identity()
        self.norm2 = nn.RMSNorm(DIM, elementwise_affine=False)
        self.norm3 = RmsNormAttr(DIM)
        self.gate, self.up = nn.Linear(DIM, HIDDEN), nn.Linear(DIM, HIDDEN)
        self.down = nn.Linear(HIDDEN, DIM)
        self.head = nn.Linear(DIM, 5)
        with torch.no_grad():
            self.norm1.weight.normal_(1, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x = x + self.norm2(self.attn(self.norm1(x)))
        h = self.norm3(x)
        x = x + self.down(F.gelu(self.gate(h)) * self.up(h))
        return self.head(x.mean(1))


_group = group_of


def _named(pr: ChannelPruner, word: str):
    (g,) = [g for g in pr.graph.groups if g.name.endswith(f"({word})")]
    return g


def _check(model: nn.Module, x: torch.Tensor, pr: ChannelPruner, plan) -> nn.Module:
    return slim_matches_sparse(x, pr, plan)


def test_rms_norm_over_channels_spans_them_like_a_layer_norm():
    torch.manual_seed(0)
    model, x = RmsBlockNet().eval(), torch.randn(2, 6, 12)
    pr = ChannelPruner(model, x)
    stream = _group(pr, "embed")
    assert stream.prunable, stream.excluded_reason
    assert {n.kind for n in pr.capture.spanning_norms} == {"rms_norm"}
    plan = pr.plan({stream.id: 0.5}, channel_divisible=1)
    slim = _check(model, x, pr, plan)
    assert slim.norm1.weight.shape == (DIM // 2,)
    assert slim.norm2.normalized_shape == slim.norm3.normalized_shape == (DIM // 2,)
    assert model.norm3.normalized_shape == (DIM,)  # the user's model is untouched


@pytest.fixture(scope="module")
def attention():
    torch.manual_seed(0)
    model, x = RmsBlockNet(attention=True).eval(), torch.randn(2, 6, 12)
    return model, x, ChannelPruner(model, x)


@pytest.mark.parametrize("width", [0.0, 0.5], ids=["heads", "heads+width"])
def test_rms_norm_per_head_follows_the_head_width(attention, width):
    model, x, pr = attention
    heads, head_width = _named(pr, "heads"), _named(pr, "head width")
    assert heads.prunable and head_width.prunable, head_width.excluded_reason
    plan = pr.plan({heads.id: 0.5, head_width.id: width, _group(pr, "embed").id: 0.25},
                   channel_divisible=1)
    slim = _check(model, x, pr, plan)
    kept = DIM // HEADS - int(width * DIM // HEADS)
    assert (slim.attn.num_heads, slim.attn.head_dim) == (HEADS // 2, kept)
    assert slim.attn.q_norm.weight.shape == (kept,)
    assert slim.attn.v_norm.normalized_shape == (kept,)


def test_rms_norm_plan_for_removal_is_exact(attention):
    model, x, pr = attention
    plan = pr.plan_for_removal(0.4, channel_divisible=1, tolerance=0.05)
    _check(model, x, pr, plan)
    assert pr.removal(plan) >= 0.35


class ScaledRmsNorm(nn.Module):
    """A weightless RMS norm followed by more code in the same module: a hook on the module
    cannot recompute the norm alone, so its channels stay whole."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],)) * 2


def test_weightless_rms_norm_inside_a_larger_module_freezes_its_channels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, DIM), ScaledRmsNorm(), nn.Linear(DIM, HIDDEN),
                          nn.ReLU(), nn.Linear(HIDDEN, 5))
    pr = ChannelPruner(model.eval(), torch.randn(2, 6, 12))
    assert "norm without a module spans channels" in _group(pr, "0").excluded_reason
    assert _group(pr, "2").prunable


class RmsNorm2d(nn.Module):
    """timm's ``RmsNorm2d``: the RMS norm over dim 1 written out (``pow``, ``mean``,
    ``rsqrt``, a per-channel weight viewed as ``(1, C, 1, 1)``), no ``aten.rms_norm``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.eps, self.weight = 1e-6, nn.Parameter(1 + 0.1 * torch.randn(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + self.eps)
        return x * self.weight.reshape(1, -1, 1, 1)


def test_rms_norm_written_out_over_nchw_channels_spans_them():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, DIM, 3), RmsNorm2d(DIM), nn.GELU(),
                          nn.Conv2d(DIM, HIDDEN, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(HIDDEN, 5)).eval()
    x = torch.randn(2, 3, 18, DIM + 2)  # W after the conv == DIM: the layout is not guessed
    pr = ChannelPruner(model, x)
    stem = _group(pr, "0")
    assert stem.prunable, stem.excluded_reason
    plan = pr.plan({stem.id: 0.5}, channel_divisible=1)
    assert _check(model, x, pr, plan)[1].weight.shape == (DIM // 2,)

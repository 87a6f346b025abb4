"""Attention heads as groups (issue 18, item 2).

Whole heads (q, k, v rows and the output projection's columns together) and head width are
two groups; the slim model gets the kept counts in ``num_heads`` / ``head_dim``. Checked on a
``nn.MultiheadAttention`` block (torchvision ViT's attention) and a timm-style block (packed
qkv Linear, ``reshape(B, N, 3, num_heads, head_dim)``, fused attention, proj): slim == sparse on
random inputs, plan MACs == PyTorch's FLOP counter on the slim model, and the one-step sampler
lands where the iterative planner does. Code that reads a width from a constant freezes the
group with the reason.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uif_explorer.core.channels import FACTORED
from uif_explorer.torch.macs import count_macs, model_cost
from uif_explorer.torch.ofa import OFAPruner
from uif_explorer.torch.probe import REASON
from uif_explorer.torch.pruner import ChannelPruner
from uif_explorer.torch.rules.attention import DEFAULT_SCALE
from uif_explorer.torch.rules.heads import NO_HEAD_ATTR, HeadPrunedMultiheadAttention
from uif_explorer.torch.runners import get_pruning_runner

DIM, HEADS, TOKENS = 32, 4, 6


class QKVAttention(nn.Module):
    """timm's Attention, fused; ``literal`` writes the head count as a constant in forward,
    ``back_to_input`` reshapes back to the input's width (as timm does)."""

    def __init__(self, scale: bool = True, literal: bool = False,
                 back_to_input: bool = False, fused: bool = True, qk_norm: bool = False) -> None:
        super().__init__()
        self.num_heads, self.head_dim = HEADS, DIM // HEADS
        self.attn_dim = DIM  # timm reshapes back to it: rewritten with the kept heads x width
        self.scale = self.head_dim ** -0.5 if scale else None
        self.literal, self.back_to_input, self.fused = literal, back_to_input, fused
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)
        norm = nn.LayerNorm if qk_norm else nn.Identity
        self.q_norm, self.k_norm = norm(self.head_dim), norm(self.head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        heads = HEADS if self.literal else self.num_heads
        qkv = self.qkv(x).reshape(b, n, 3, heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.fused:
            a = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:  # timm's fused_attn=False path
            a = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        a = a.transpose(1, 2)
        return self.proj(a.reshape(b, n, c if self.back_to_input else self.attn_dim))


class NoHeadAttr(QKVAttention):
    """Heads split with literal sizes in a module that holds no ``num_heads``."""

    def __init__(self) -> None:
        super().__init__()
        del self.num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, scale=0.5).transpose(1, 2)
        return self.proj(a.reshape(b, n, -1))


class Block(nn.Module):
    """Token embedding, pre-norm attention and MLP with residuals, a classifier."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        self.embed, self.attn = nn.Linear(12, DIM), attn
        self.norm1, self.norm2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.fc1, self.fc2, self.head = nn.Linear(DIM, 64), nn.Linear(64, DIM), nn.Linear(DIM, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        y = self.norm1(x)
        if isinstance(self.attn, nn.MultiheadAttention):
            y = self.attn(y, y, y, need_weights=False)[0]
        else:
            y = self.attn(y)
        x = x + y
        x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return self.head(x.mean(1))


def _capture(attn: nn.Module) -> tuple[nn.Module, torch.Tensor, ChannelPruner]:
    torch.manual_seed(0)
    model = Block(attn).eval()
    x = torch.randn(2, TOKENS, 12)
    return model, x, ChannelPruner(model, x)


@pytest.fixture(scope="module")
def qkv_block():
    return ("qkv", *_capture(QKVAttention()))


@pytest.fixture(scope="module", params=["mha", "qkv"])
def block(request, qkv_block):
    if request.param == "qkv":
        return qkv_block
    return ("mha", *_capture(nn.MultiheadAttention(DIM, HEADS, batch_first=True)))


def _named(pr: ChannelPruner, suffix: str):
    (g,) = [g for g in pr.graph.groups if g.name == f"attn ({suffix})"]
    return g


def _check_slim(pr: ChannelPruner, plan, x: torch.Tensor) -> nn.Module:
    sparse, slim = pr.sparse_model(plan).eval(), pr.slim_model(plan).eval()
    with torch.no_grad():
        for _ in range(3):
            y = torch.randn_like(x)
            assert float((slim(y) - sparse(y)).abs().max()) <= 1e-4
    assert pr.macs(plan) == count_macs(slim, x) == model_cost(slim, x).macs
    return slim


def test_heads_and_head_width_are_separate_groups(block):
    name, _, _, pr = block
    heads, width = _named(pr, "heads"), _named(pr, "head width")
    assert heads is not width
    assert heads.num_channels == HEADS and heads.prunable
    assert width.num_channels == DIM // HEADS
    # the packed projection's rows follow the two groups instead of being a group of their own
    packed = [g for g in pr.graph.groups if g.excluded_reason == FACTORED]
    assert len(packed) == 1 and not packed[0].prunable
    if name == "mha":  # PyTorch's MHA uses the default scale: the width is kept
        assert DEFAULT_SCALE in width.excluded_reason
    else:
        assert width.prunable


def test_half_the_heads_removed(block):
    name, _, x, pr = block
    plan = pr.plan({_named(pr, "heads").id: 0.5}, channel_divisible=1)
    slim = _check_slim(pr, plan, x)
    assert slim.attn.num_heads == HEADS // 2 and slim.attn.head_dim == DIM // HEADS
    qkv = slim.attn.in_proj_weight if name == "mha" else slim.attn.qkv.weight
    assert tuple(qkv.shape) == (3 * DIM // 2, DIM)
    if name == "mha":
        assert isinstance(slim.attn, HeadPrunedMultiheadAttention)
        assert slim.attn.out_proj.in_features == DIM // 2
        again = ChannelPruner(slim, x)  # the slim model captures and prunes again
        assert _named(again, "heads").num_channels == HEADS // 2 and _named(again, "heads").prunable
    else:
        assert slim.attn.proj.in_features == DIM // 2 == slim.attn.attn_dim


def test_head_width_pruned_on_its_own(qkv_block):
    _, _, x, pr = qkv_block
    plan = pr.plan({_named(pr, "head width").id: 0.5}, channel_divisible=1)
    slim = _check_slim(pr, plan, x)
    assert (slim.attn.num_heads, slim.attn.head_dim) == (HEADS, DIM // HEADS // 2)
    assert slim.attn.attn_dim == DIM // 2


def test_explicit_matmul_attention_prunes_heads_and_width_together():
    """timm's non-fused path with qk_norm: a LayerNorm over the head width follows it."""
    _, x, pr = _capture(QKVAttention(fused=False, qk_norm=True))
    heads, width = _named(pr, "heads"), _named(pr, "head width")
    assert heads.prunable and width.prunable  # the scale is a constant: width is free
    plan = pr.plan({heads.id: 0.5, width.id: 0.5}, channel_divisible=1)
    slim = _check_slim(pr, plan, x)
    assert (slim.attn.num_heads, slim.attn.head_dim) == (HEADS // 2, DIM // HEADS // 2)
    assert slim.attn.q_norm.normalized_shape == (DIM // HEADS // 2,)


def test_runners_agree_at_half_the_macs(block):
    _, model, x, pr = block
    iterative = pr.plan_for_removal(0.5)
    _check_slim(pr, iterative, x)
    runner = get_pruning_runner(model, x, "one_step")
    cand = runner._candidate(runner.pruner, 0.5, seed=0, cid=0, channel_divisible=2)
    plan = runner.pruner.plan_from_counts({int(g): n for g, n in cand["kept_channels"].items()})
    assert abs(cand["removal"] - 0.5) <= 0.01
    assert runner.pruner.removal(plan) == pytest.approx(cand["removal"])
    _check_slim(runner.pruner, plan, x)
    # kept heads x kept widths is a product term of the count model: still exact
    assert pr.cost.count_model_exact
    for p in (iterative, plan, pr.plan({_named(pr, "heads").id: 0.5}, channel_divisible=1)):
        assert pr.cost.macs_of_counts({g: len(k) for g, k in p.kept.items()}) == pr.macs(p)


def test_split_without_num_heads_is_a_barrier_with_its_reason():
    _, _, pr = _capture(NoHeadAttr())
    (qkv,) = [g for g in pr.graph.groups if "attn.qkv" in g.producers]
    assert not qkv.prunable and NO_HEAD_ATTR in qkv.excluded_reason
    assert not [g for g in pr.graph.groups if g.name.startswith("attn (")]


@pytest.mark.parametrize("kind", ["literal", "back_to_input"])
def test_width_read_from_elsewhere_freezes_heads(kind):
    _, x, pr = _capture(QKVAttention(**{kind: True}))
    heads = _named(pr, "heads")
    assert not heads.prunable and REASON in heads.excluded_reason
    assert "RuntimeError" in heads.excluded_reason  # the model's own error, shown
    plan = pr.plan_for_removal(0.3)  # the rest still prunes, exactly
    _check_slim(pr, plan, x)


def test_supernet_keeps_heads_whole(qkv_block):
    """A supernet has no elastic heads: they are fixed there, with the reason."""
    _, model, x, _ = qkv_block
    space = OFAPruner(model, x).ofa_model(channel_divisible=4, auto_add_excludes=False).ofa_space
    fixed = {f["group"]: f["reason"] for f in space.fixed}
    assert "not elastic" in fixed["attn (heads)"]
    assert all("(head" not in g.name for g in space.groups)

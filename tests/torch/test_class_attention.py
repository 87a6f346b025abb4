"""CaiT-style class attention captures and prunes exactly (issue 18, timm coverage).

A class token that is a parameter, expanded per batch and fed to blocks that attend from it to
the patch tokens (CaiT's ``forward_cls``), made PyTorch's FLOP counter fail with "Expected
gradient function to be set": a view of a parameter taken under ``no_grad`` requires grad with
no grad function, and the counter's module tracker hooks it. Written in plain torch (timm is a
bench-only dependency); the MACs are counted on copies whose parameters do not require grad.
"""

from __future__ import annotations

import torch
from torch import nn

from uif_explorer.torch.macs import count_macs, model_cost
from uif_explorer.torch.pruner import ChannelPruner


class ClassAttn(nn.Module):
    """timm's ``ClassAttn``: the query from the class token only, keys/values from all."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads, self.scale = heads, (dim // heads) ** -0.5
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = self.num_heads
        q = self.q(x[:, 0]).unsqueeze(1).reshape(b, 1, h, c // h).permute(0, 2, 1, 3)
        k = self.k(x).reshape(b, n, h, c // h).permute(0, 2, 1, 3)
        v = self.v(x).reshape(b, n, h, c // h).permute(0, 2, 1, 3)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, 1, c))


class ClassBlock(nn.Module):
    """timm's ``LayerScaleBlockClassAttn`` without layer scale: updates the class token."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), ClassAttn(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        cls = cls + self.attn(self.norm1(torch.cat((cls, x), dim=1)))
        return cls + self.mlp(self.norm2(cls))


class TinyCaiT(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.norm0 = nn.LayerNorm(dim)  # CaiT's patch-token blocks, reduced to their MLP
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.blocks = nn.ModuleList([ClassBlock(dim, heads) for _ in range(2)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = x + self.mlp(self.norm0(x))
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # a view of a parameter
        for blk in self.blocks:
            cls = blk(x, cls)
        return self.head(self.norm(torch.cat((cls, x), dim=1))[:, 0])


def _model() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return TinyCaiT().eval(), torch.randn(2, 3, 16, 16)


def test_class_attention_counts_without_touching_the_model():
    model, x = _model()
    macs = count_macs(model, x)
    assert macs == model_cost(model, x).macs > 0
    assert all(p.requires_grad for p in model.parameters())  # counted on copies


def test_class_attention_prunes_slim_equals_sparse_with_exact_macs():
    model, x = _model()
    pr = ChannelPruner(model, x)
    # the class token's heads are frozen, with the reason: the code reshapes to c // num_heads
    # with c read from the input (as timm's ClassAttn does), so a narrower q breaks it
    (heads,) = [g for g in pr.graph.groups if "blocks.0.attn (heads)" in g.producers]
    assert not heads.prunable and "breaks the model's code" in heads.excluded_reason
    plan = pr.plan_for_removal(0.3)
    assert abs(pr.removal(plan) - 0.3) <= 0.01  # the MLPs (token and class) carry it
    sparse, slim = pr.sparse_model(plan).eval(), pr.slim_model(plan).eval()
    with torch.no_grad():
        for y in (x, torch.randn_like(x), torch.randn_like(x)):
            torch.testing.assert_close(slim(y), sparse(y), atol=1e-5, rtol=1e-5)
    assert pr.macs(plan) == count_macs(slim, x) == model_cost(slim, x).macs

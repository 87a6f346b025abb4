"""Attention costs follow the widths a plan keeps (issue 18, item 1).

Fused (``F.scaled_dot_product_attention``) and explicit-matmul attention: query/key and value
widths are pruned, the slim model computes what the sparse one does, and the plan's MACs equal
PyTorch's FLOP counter on the slim model, counted for real on the CPU (where fused attention is
a kernel the counter needs a formula for) and on the ``meta`` device alike. A model whose fused
attention uses the default scale keeps its query/key width, with that reason shown.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from topologies import build
from torch import nn

from uif_explorer.torch.macs import count_macs, model_cost
from uif_explorer.torch.pruner import ChannelPruner
from uif_explorer.torch.rules.attention import DEFAULT_SCALE

NAMES = ["fused_attention", "matmul_attention", "heads_attention"]


@pytest.fixture(scope="module", params=NAMES)
def pruned(request):
    model, x = build(request.param)
    pr = ChannelPruner(model, x)
    plan = pr.plan_for_removal(0.4)
    return request.param, model, x, pr, plan


def test_slim_equals_sparse_and_macs_are_the_counters(pruned):
    _, _, x, pr, plan = pruned
    sparse, slim = pr.sparse_model(plan).eval(), pr.slim_model(plan).eval()
    with torch.no_grad():
        torch.testing.assert_close(slim(x), sparse(x), atol=1e-5, rtol=1e-5)
        for _ in range(3):  # random inputs, not only the example
            y = torch.randn_like(x)
            torch.testing.assert_close(slim(y), sparse(y), atol=1e-5, rtol=1e-5)
    assert pr.macs(plan) == count_macs(slim, x) == model_cost(slim, x).macs
    assert abs(pr.removal(plan) - 0.4) <= 0.01


def test_fused_attention_counts_the_same_on_cpu_and_meta(pruned):
    _, model, x, pr, _ = pruned
    assert model_cost(model, x).macs == count_macs(model, x) == pr.original_macs


def _group(pr: ChannelPruner, producer: str):
    (g,) = [g for g in pr.graph.groups if producer in g.producers]
    return g


@pytest.mark.parametrize("name", ["fused_attention", "matmul_attention"])
def test_query_key_and_value_widths_are_groups(name):
    model, x = build(name)
    pr = ChannelPruner(model, x)
    qk, v = _group(pr, "q"), _group(pr, "v")
    assert qk is _group(pr, "k") and qk.prunable and qk.num_channels == 12
    assert v.prunable and v.num_channels == 20 and v is not qk
    # removing half the query/key width removes half of q @ k^T (and of the q, k linears)
    n, tokens = x.shape[0], (x.shape[2] // 4) * (x.shape[3] // 4)
    plan = pr.plan({qk.id: 0.5}, channel_divisible=1)
    qk_macs = n * tokens * tokens * 6 + 2 * n * tokens * 16 * 6
    assert pr.original_macs - pr.macs(plan) == qk_macs
    assert count_macs(pr.slim_model(plan), x) == pr.macs(plan)


class DefaultScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        return self.out(F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x)))


def test_default_scale_freezes_query_key_width_only():
    torch.manual_seed(0)
    pr = ChannelPruner(DefaultScale().eval(), torch.randn(2, 5, 8))
    qk, v = _group(pr, "q"), _group(pr, "v")
    assert not qk.prunable and DEFAULT_SCALE in qk.excluded_reason
    assert v.prunable


def test_packed_qkv_rows_follow_the_head_groups_mlp_and_stream_prune():
    model, x = build("heads_attention")
    pr = ChannelPruner(model, x)
    assert not _group(pr, "qkv").prunable
    assert _group(pr, "fc1").prunable and _group(pr, "patch").prunable

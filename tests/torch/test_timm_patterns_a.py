"""timm patterns of issue 18, attempt 3 (helper A), written out without timm.

- A norm-act module (timm's ``LayerNormAct2d`` in ViTamin's stem and MbConv blocks,
  ``GroupNormAct``): an ``nn.LayerNorm`` / ``nn.GroupNorm`` subclass whose forward runs the
  norm and then its ``drop`` and ``act`` children. The sparse model recomputes the norm over
  the kept channels at the norm call itself, so the activation after it still runs (replacing
  the module's output with the bare norm dropped it: slim != sparse, rel. error ~1).
- A weight-standardised conv (timm's ``StdConv2d`` in the ResNet stem of the hybrid ViTs,
  ``vit_tiny_r_s16_p8``): ``F.batch_norm`` over each filter of the weight. Each filter is
  normalised on its own, so the output channels prune; the input channels prune too (the
  sparse model standardises each filter over its kept inputs, as the slim one does).

Each: slim == sparse on random inputs and the plan's MACs equal PyTorch's FLOP counter.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from slim_checks import group_of, slim_matches_sparse
from torch import nn

from uif_explorer.torch.pruner import ChannelPruner

CH = 8


class LayerNormAct2d(nn.LayerNorm):
    """timm's ``LayerNormAct2d``: channels-first LayerNorm over NCHW, then drop and act."""

    def __init__(self, ch: int) -> None:
        super().__init__(ch, eps=1e-6)
        self.drop, self.act = nn.Identity(), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                         self.eps).permute(0, 3, 1, 2)
        return self.act(self.drop(x))


class GroupNormAct(nn.GroupNorm):
    """timm's ``GroupNormAct``: group norm, then drop and act."""

    def __init__(self, ch: int) -> None:
        super().__init__(2, ch)
        self.drop, self.act = nn.Identity(), nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return self.act(self.drop(x))


class NormActStem(nn.Module):
    """ViTamin's ``Stem``: conv -> norm-act -> conv, then a pooled head."""

    def __init__(self, norm: type[nn.Module]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, CH, 3, stride=2, padding=1)
        self.norm1 = norm(CH)
        with torch.no_grad():  # weights off their defaults so a dropped act would show
            self.norm1.weight.uniform_(0.5, 1.5)
            self.norm1.bias.normal_(0, 0.5)
        self.conv2 = nn.Conv2d(CH, CH, 3, padding=1)
        self.head = nn.Linear(CH, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv2(self.norm1(self.conv1(x))).mean((2, 3)))


class StdConv2d(nn.Conv2d):
    """timm's ``StdConv2d``: the weight standardised per filter before the convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                              training=True, momentum=0.0, eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding)


class HybridStem(nn.Module):
    """ResNetV2 stem of a hybrid ViT: StdConv -> GroupNormAct -> max pool -> another StdConv
    (reading the stem's channels) and a patch projection."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = StdConv2d(3, CH, 3, stride=2, padding=1)
        self.norm = GroupNormAct(CH)
        self.pool = nn.MaxPool2d(2)
        self.mid = nn.Conv2d(CH, CH, 1)
        self.std = StdConv2d(CH, CH, 1)
        self.proj = nn.Conv2d(CH, 6, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.norm(self.conv(x)))
        return self.proj(self.std(self.mid(x)) + x).flatten(2).transpose(1, 2)


def test_standardized_conv_prunes_its_filters_and_its_inputs() -> None:
    torch.manual_seed(0)
    model = HybridStem().eval()
    x = torch.randn(2, 3, 16, 16)
    pr = ChannelPruner(model, x)
    stem, mid = group_of(pr, "conv"), group_of(pr, "mid")
    assert stem.prunable, stem.excluded_reason
    assert mid.prunable, mid.excluded_reason
    plan = pr.plan({stem.id: 0.5, mid.id: 0.5}, channel_divisible=1)
    slim = slim_matches_sparse(x, pr, plan)
    assert slim.conv.weight.shape[0] == slim.std.weight.shape[0] == CH // 2
    assert slim.std.weight.shape[1] == CH // 2


@pytest.mark.parametrize("norm", [LayerNormAct2d, GroupNormAct])
def test_norm_act_module_keeps_its_activation_in_the_sparse_model(norm) -> None:
    torch.manual_seed(0)
    model = NormActStem(norm).eval()
    x = torch.randn(2, 3, 12, 12)
    pr = ChannelPruner(model, x)
    group = group_of(pr, "conv1")
    assert group.prunable and group.num_channels == CH, group.excluded_reason
    plan = pr.plan({group.id: 0.5}, channel_divisible=1)
    slim = slim_matches_sparse(x, pr, plan)
    assert slim.norm1.weight.shape == (CH - 4,)
    assert slim.conv2.in_channels == CH - 4

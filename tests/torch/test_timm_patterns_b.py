"""timm patterns written out in small modules (no timm): an RMS norm with its activation in one
module (MobileNetV5's ``RmsNormAct2d``) and selective-kernel convolutions (SKNet's branches
stacked on a new dim, weighted by a softmax over the paths and summed)."""

from __future__ import annotations

import torch
from slim_checks import group_of, slim_matches_sparse
from torch import nn

from uif_explorer.torch.pruner import ChannelPruner

C = 8


class RmsNormAct2d(nn.Module):
    """timm's ``RmsNormAct2d``: the RMS norm over dim 1 written out, then its children (drop,
    act) in the order they are registered; ``act_first`` runs the activation before the norm
    (not a norm followed by a tail: the sparse hook could not redo it)."""

    def __init__(self, c: int, act: nn.Module, act_first: bool = False) -> None:
        super().__init__()
        self.eps, self.weight = 1e-6, nn.Parameter(1 + 0.1 * torch.randn(c))
        self.drop, self.act, self.act_first = nn.Identity(), act, act_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_first:
            x = self.act(x)
        x = x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + self.eps)
        x = x * self.weight.reshape(1, -1, 1, 1)
        return x if self.act_first else self.act(self.drop(x))


def _norm_act_net(act: nn.Module, act_first: bool = False) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, C, 3), RmsNormAct2d(C, act, act_first),
                         nn.Conv2d(C, 6, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(6, 4)).eval()


def test_rms_norm_with_its_activation_in_one_module_spans_the_channels():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 12, 12)
    pr = ChannelPruner(_norm_act_net(nn.Sigmoid()), x)  # sigmoid(0) != 0: pruned ones zeroed
    stem = group_of(pr, "0")
    assert stem.prunable, stem.excluded_reason
    plan = pr.plan({stem.id: 0.5}, channel_divisible=1)
    assert slim_matches_sparse(x, pr, plan)[1].weight.shape == (C // 2,)


def test_rms_norm_after_a_child_in_its_module_keeps_its_channels():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 12, 12)
    pr = ChannelPruner(_norm_act_net(nn.GELU(), act_first=True), x)
    assert "reduction across channels" in group_of(pr, "0").excluded_reason


class SelectiveKernel(nn.Module):
    """timm's ``SelectiveKernel``: two conv paths stacked on a new dim, an attention logit per
    path and channel (``fc_select``: paths * C outputs viewed as ``(B, paths, C, 1, 1)``), a
    softmax over the paths, the weighted paths summed."""

    def __init__(self, c_in: int, c: int, num_paths: int = 2) -> None:
        super().__init__()
        self.num_paths = num_paths
        self.paths = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c, 3, padding=k, dilation=k), nn.BatchNorm2d(c),
                          nn.ReLU()) for k in range(1, num_paths + 1))
        self.fc_reduce = nn.Conv2d(c, 4, 1, bias=False)
        self.fc_select = nn.Conv2d(4, c * num_paths, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.stack([op(x) for op in self.paths], dim=1)
        a = self.fc_select(torch.relu(self.fc_reduce(x.sum(1).mean((2, 3), keepdim=True))))
        b, c, h, w = a.shape
        a = torch.softmax(a.view(b, self.num_paths, c // self.num_paths, h, w), dim=1)
        return torch.sum(x * a, dim=1)


def test_selective_kernel_prunes_the_paths_channel_by_channel():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), SelectiveKernel(6, C), nn.Conv2d(C, 5, 3),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).eval()
    x = torch.randn(2, 3, 12, 12)
    pr = ChannelPruner(model, x)
    paths = group_of(pr, "1.paths.0.0")
    assert paths.prunable, paths.excluded_reason
    assert {"1.paths.1.0", "1.fc_select"} <= set(paths.producers)
    plan = pr.plan({paths.id: 0.5}, channel_divisible=1)
    slim = slim_matches_sparse(x, pr, plan)
    assert slim[1].fc_select.weight.shape[0] == 2 * (C // 2)  # channel k of both paths goes


class Shuffle(nn.Module):
    """A view into parts followed by a transpose (channel shuffle), or also read by a product
    (ResNeSt's split attention), not only combined per channel: still a barrier."""

    def __init__(self, product: bool) -> None:
        super().__init__()
        self.product = product

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        parts = x.view(b, 2, c // 2, h, w)
        if self.product:
            return (parts * parts.sum(1, keepdim=True)).sum(1).repeat(1, 2, 1, 1)
        return parts.transpose(1, 2).reshape(b, c, h, w)


def test_split_into_parts_not_combined_per_channel_stays_a_barrier():
    for product in (False, True):
        model = nn.Sequential(nn.Conv2d(3, C, 3), Shuffle(product), nn.Conv2d(C, 4, 3)).eval()
        pr = ChannelPruner(model, torch.randn(1, 3, 10, 10))
        assert "channel shuffle" in group_of(pr, "0").excluded_reason

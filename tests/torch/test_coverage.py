"""A representative subset of the torchvision coverage check (the full list is in bench/).

Residual (ResNet), depthwise + squeeze-excitation (MobileNetV3), concatenation (DenseNet,
GoogLeNet), channel shuffle (ShuffleNetV2), grouped convs (ResNeXt / RegNet) and attention
(a small VisionTransformer and Swin): each pruned to half its MACs within 2 points.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models import VisionTransformer

from uif_explorer.torch.macs import count_macs
from uif_explorer.torch.pruner import ChannelPruner


def small_vit() -> torch.nn.Module:
    vit = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=256,
        num_classes=10,
    )
    torch.nn.init.normal_(vit.heads.head.weight)  # torchvision starts it at zero
    return vit


def small_swin() -> torch.nn.Module:
    return torchvision.models.swin_transformer.SwinTransformer(
        patch_size=[4, 4], embed_dim=24, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
        num_classes=10,
    )


CASES = {
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), 64),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(num_classes=10), 64),
    "densenet121": (lambda: torchvision.models.densenet121(num_classes=10), 64),
    "googlenet": (
        lambda: torchvision.models.googlenet(num_classes=10, aux_logits=False,
                                             init_weights=False), 64),
    "shufflenet_v2_x0_5": (lambda: torchvision.models.shufflenet_v2_x0_5(num_classes=10), 64),
    "resnext50_32x4d": (lambda: torchvision.models.resnext50_32x4d(num_classes=10), 64),
    "regnet_y_400mf": (lambda: torchvision.models.regnet_y_400mf(num_classes=10), 64),
    "small_vit": (small_vit, 32),
    "small_swin": (small_swin, 32),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_torchvision_model_pruned_to_half_macs(name):
    torch.manual_seed(0)
    build, size = CASES[name]
    model = build().eval()
    x = torch.randn(2, 3, size, size)
    pr = ChannelPruner(model, x)
    plan = pr.plan_for_removal(0.5, tolerance=0.02)
    assert abs(pr.removal(plan) - 0.5) <= 0.02
    sparse, slim = pr.sparse_model(plan).eval(), pr.slim_model(plan).eval()
    with torch.no_grad():
        ys, yl = sparse(x), slim(x)
    assert yl.shape == model(x).shape
    assert float((ys - yl).norm() / yl.norm()) <= 1e-5
    assert count_macs(slim, x) == pr.macs(plan)


@pytest.mark.slow
def test_shufflenet_shuffle_excluded_with_reason():
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval()
    pr = ChannelPruner(model, torch.randn(1, 3, 64, 64))
    reasons = {g.excluded_reason for g in pr.graph.groups if not g.prunable}
    assert any("channel shuffle" in (r or "") or "regroups" in (r or "") for r in reasons)

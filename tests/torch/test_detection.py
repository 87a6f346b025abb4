"""Detectors (issue 18, item 4): a small torchvision-style detector, list in and dicts out.

torchvision's own ``RetinaNet`` and ``FasterRCNN`` classes over a tiny two-level backbone:
the captured part (backbone and dense head, or backbone and RPN head) prunes to a MACs target,
the slim core computes what the sparse one does and costs what the plan says, and the whole
slim detector still takes a list of images and returns a list of dicts.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from topologies import cbr
from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator

from uif_explorer.torch.detection import DetectorCore, core_inputs, detector_with
from uif_explorer.torch.macs import count_macs
from uif_explorer.torch.pruner import ChannelPruner


class TinyBackbone(nn.Module):
    """Two feature levels with ``out_channels`` (what torchvision's detectors read)."""

    def __init__(self) -> None:
        super().__init__()
        self.out_channels = 16
        self.c1 = nn.Sequential(cbr(3, 12), nn.MaxPool2d(2), cbr(12, 24), nn.MaxPool2d(2))
        self.c2 = nn.Sequential(cbr(24, 32), nn.MaxPool2d(2))
        self.lat1, self.lat2 = nn.Conv2d(24, 16, 1), nn.Conv2d(32, 16, 1)

    def forward(self, x):
        a = self.c1(x)
        b = self.c2(a)
        return OrderedDict([("0", self.lat1(a)), ("1", self.lat2(b))])


def _anchors() -> AnchorGenerator:
    return AnchorGenerator(((16,), (32,)), ((0.5, 1.0, 2.0),) * 2)


def _detector(kind: str) -> nn.Module:
    torch.manual_seed(0)
    kw = {"min_size": 64, "max_size": 96}
    if kind == "retinanet":
        return RetinaNet(TinyBackbone(), num_classes=3, anchor_generator=_anchors(), **kw).eval()
    return FasterRCNN(TinyBackbone(), num_classes=3, rpn_anchor_generator=_anchors(),
                      **kw).eval()


@pytest.mark.parametrize("kind", ["retinanet", "faster_rcnn"])
def test_detector_core_prunes_and_the_slim_detector_runs(kind):
    det = _detector(kind)
    images = [torch.rand(3, 60, 80), torch.rand(3, 64, 64)]
    core = DetectorCore(det)
    x = core_inputs(det, images)
    pr = ChannelPruner(core, x)
    plan = pr.plan_for_removal(0.4)
    assert abs(pr.removal(plan) - 0.4) <= 0.01
    sparse, slim = pr.sparse_model(plan).eval(), pr.slim_model(plan).eval()
    assert count_macs(slim, x) == pr.macs(plan)
    with torch.no_grad():
        for y in (x, torch.randn_like(x)):
            a, b = sparse(y), slim(y)
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        out = detector_with(det, slim)(images)
    assert isinstance(out, list) and len(out) == 2
    assert {"boxes", "scores", "labels"} <= set(out[0])
    assert det.backbone.c1[0][0].out_channels == 12  # the user's detector is not touched


def test_two_stage_features_keep_their_width():
    """The RoI heads read the FPN features outside the capture: their width stays."""
    det = _detector("faster_rcnn")
    pr = ChannelPruner(DetectorCore(det), core_inputs(det, [torch.rand(3, 64, 64)]))
    (lat,) = [g for g in pr.graph.groups if "backbone.lat1" in g.producers]
    assert not lat.prunable


def test_not_a_detector_says_what_is_expected():
    with pytest.raises(TypeError, match="Expected a torchvision-style detector"):
        DetectorCore(nn.Sequential(nn.Conv2d(3, 3, 1)))

"""Prune torchvision-style detectors: capture the dense part, keep the post-processing.

A detector takes a list of images, resizes and batches them, runs a backbone (often with an
FPN) and dense heads, then decodes boxes with data-dependent steps (anchors, NMS, RoI
sampling) that no graph capture can follow. :class:`DetectorCore` is the part that can be
captured, as one module over the batched tensor: the backbone with the single-stage head
(RetinaNet, FCOS, SSD, SSDlite) or with the RPN head (Faster/Mask/Keypoint R-CNN, whose RoI
heads read the features as they are, so the features are outputs and keep their width).

It holds the detector's own submodules, so a slim or sparse core built by
:class:`~uif_explorer.torch.pruner.ChannelPruner` is put back into a copy of the detector by
:func:`detector_with` and the whole detector still runs (list of images in, list of dicts out).
MACs targets and counts are those of the captured part.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn


def _features(backbone: nn.Module, images: torch.Tensor) -> OrderedDict:
    feats = backbone(images)
    return OrderedDict([("0", feats)]) if isinstance(feats, torch.Tensor) else feats


class DetectorCore(nn.Module):
    """Backbone and dense head of a detector, on the batched images its transform makes."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.backbone = getattr(detector, "backbone", None)
        rpn = getattr(detector, "rpn", None)
        self.rpn_head = getattr(rpn, "head", None)
        self.head = getattr(detector, "head", None) if rpn is None else None
        if self.backbone is None or (self.head is None and self.rpn_head is None):
            raise TypeError(
                "Expected a torchvision-style detector with a backbone and either a dense "
                f"head (.head) or a region proposal network (.rpn). Received: "
                f"{type(detector).__name__}"
            )

    def forward(self, images: torch.Tensor) -> object:
        feats = _features(self.backbone, images)
        if self.head is not None:
            return self.head(list(feats.values()))
        objectness, deltas = self.rpn_head(list(feats.values()))
        return feats, objectness, deltas


def core_inputs(detector: nn.Module, images: list[torch.Tensor]) -> torch.Tensor:
    """The batched tensor the detector's transform makes of ``images`` (what the core sees)."""
    with torch.no_grad():
        return detector.transform(images)[0].tensors


def detector_with(detector: nn.Module, core: DetectorCore) -> nn.Module:
    """A copy of ``detector`` running ``core``'s (slim or sparse) backbone and head."""
    out = copy.deepcopy(detector)
    out.backbone = core.backbone
    if core.head is not None:
        out.head = core.head
    else:
        out.rpn.head = core.rpn_head
    return out


__all__ = ["DetectorCore", "core_inputs", "detector_with"]

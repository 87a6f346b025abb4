"""Second speed attempt (opt-in, ``reuse_activations="fused"``): the changed layers of a step
run with each Convolution+BatchNorm pair folded into one convolution, in channels-last layout.

WHY: reusing the unchanged prefix cannot pass about 1.9x on ResNet-50 or MobileNetV2 (a step
still runs about 53 % of the multiply-adds; docs/analysis-speed.md), so the suffix itself must
get cheaper. On CPUs, folding removes one pass over every activation per BatchNorm and oneDNN's
channels-last kernels (depthwise ones above all) are faster than the default layout.

Cost: the arithmetic is no longer the eager model's bit for bit (folded weights round
differently), so logits differ in the last bits. The scorer accepts this mode only when the
first batch gives the same predictions and logits within ``RTOL`` of full evaluation; a
prediction that sits on a near-tie could still flip on a later image (scores are counts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["RTOL", "Folder", "channels_last", "close_enough"]

RTOL = 1e-4  # of the largest logit: how far fused logits may be from full evaluation's


def channels_last(value: Any) -> Any:
    """A 4-D tensor in channels-last layout (anything else as it is)."""
    if isinstance(value, torch.Tensor) and value.dim() == 4:
        return value.contiguous(memory_format=torch.channels_last)
    return value


def close_enough(fused: torch.Tensor, full: torch.Tensor) -> bool:
    """Same predictions, and logits within RTOL of the largest one."""
    if fused.shape != full.shape or not torch.equal(fused.argmax(1), full.argmax(1)):
        return False
    return bool((fused - full).abs().max() <= RTOL * full.abs().max().clamp_min(1e-30))


def _plain(m: nn.Module) -> bool:
    return not (m._forward_hooks or m._forward_pre_hooks)


class Folder:
    """Folded modules for a step's nodes; unchanged pairs are folded once and shared."""

    def __init__(self, original: dict[str, nn.Module]) -> None:
        self.original = original
        self._shared: dict[tuple[str, str], nn.Module] = {}

    def modules(self, order: Sequence[fx.Node], modules: dict[str, nn.Module]
                ) -> dict[str, nn.Module]:
        """``modules`` with every Conv2d->BatchNorm2d pair of ``order`` folded into the
        convolution (channels-last) and the BatchNorm replaced by an identity."""
        out = dict(modules)
        in_order = set(order)
        for bn_node in order:
            conv_node = bn_node.args[0] if bn_node.op == "call_module" and bn_node.args else None
            if not isinstance(conv_node, fx.Node) or conv_node not in in_order:
                continue
            bt, ct = str(bn_node.target), str(conv_node.target)
            if conv_node.op != "call_module" or len(conv_node.users) != 1 or len(bn_node.args) != 1:
                continue
            bn, conv = modules[bt], modules[ct]
            if not (isinstance(bn, nn.BatchNorm2d) and isinstance(conv, nn.Conv2d)
                    and _plain(bn) and _plain(conv) and not bn.training):
                continue
            shared = bn is self.original.get(bt) and conv is self.original.get(ct)
            fused = self._shared.get((ct, bt)) if shared else None
            if fused is None:
                fused = fuse_conv_bn_eval(conv, bn).to(memory_format=torch.channels_last)
                if shared:
                    self._shared[(ct, bt)] = fused
            out[ct], out[bt] = fused, nn.Identity()
        return out

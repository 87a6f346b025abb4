"""Weight-standardised convolutions (timm's ``StdConv2d``, ``ScaledStdConv2d``: BiT, NFNets).

Their ``forward`` standardises the weight over each output's fan-in before the convolution::

    w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                     weight=(self.gain * self.scale).view(-1), training=True, eps=self.eps)
    F.conv2d(x, w.reshape_as(self.weight), ...)

The walk sees the convolution's weight as computed; :func:`standardized_weight` recognises the
pattern and gives the convolution its raw weight back. Outputs prune exactly (each row has its
own statistics; the per-output ``gain`` is sliced with them). Inputs change the statistics of
every row, like channels under a LayerNorm: the slim convolution standardises over its kept
fan-in, so the pattern is recorded as a :class:`SpanningNorm` of kind ``weight_std`` and the
sparse model standardises over the kept fan-in too (:mod:`uif_explorer.torch.kept_std`).
``scale`` (``gamma / sqrt(fan-in)``, a float set at init) stays as it is in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from uif_explorer.core.channels import ParamSlice
from uif_explorer.torch.rules.base import ParamVal, SpanningNorm, op_name

if TYPE_CHECKING:
    from uif_explorer.torch.walk import Walker

_RESHAPES = ("reshape", "view", "reshape_as", "view_as", "_unsafe_view")


@dataclass(frozen=True)
class StdWeight:
    """The raw weight of a standardised convolution, its per-output affine weights, eps."""

    weight: ParamVal
    affine: tuple[ParamVal, ...]
    eps: float


def _source(node: object, ops: tuple[str, ...]) -> object:
    """Follow ``node`` back through ops named ``ops`` (first argument) to where it starts."""
    while isinstance(node, torch.fx.Node) and node.op == "call_function" and op_name(node) in ops:
        if op_name(node) == "mul" and not isinstance(node.args[1], (int, float)):
            return node
        node = node.args[0]
    return node


def _affine(w: Walker, node: object, rows: int) -> ParamVal | None | bool:
    """A per-output weight or bias of the standardisation (a parameter, scaled by a number and
    viewed flat); None when absent, False when it is anything else."""
    if node is None:
        return None
    src = w.arg(_source(node, _RESHAPES + ("mul",)))
    return src if isinstance(src, ParamVal) and int(np.prod(src.shape)) == rows else False


def standardized_weight(w: Walker, node: object) -> StdWeight | None:
    """The raw weight when ``node`` (a convolution's weight argument) is that weight
    standardised per output by ``batch_norm(weight.reshape(1, out, -1), training=True)``."""
    bn = _source(node, _RESHAPES)
    if not (isinstance(bn, torch.fx.Node) and bn.op == "call_function"
            and op_name(bn) == "batch_norm" and len(bn.args) > 7):
        return None
    x, weight, bias, mean, var, training = bn.args[:6]
    raw = w.arg(_source(x, _RESHAPES))
    if mean is not None or var is not None or not training or not isinstance(raw, ParamVal):
        return None
    shape = w.shape(x) if isinstance(x, torch.fx.Node) else None
    rows = raw.shape[0]
    if (len(raw.shape) < 2 or shape != (1, rows, int(np.prod(raw.shape[1:])))
            or w.shape(node) != raw.shape):
        return None
    affine = [_affine(w, weight, rows), _affine(w, bias, rows)]
    if any(a is False for a in affine):
        return None
    return StdWeight(raw, tuple(a for a in affine if a is not None), float(bn.args[7]))


def record_standardized(w: Walker, std: StdWeight, module: str, in_list: np.ndarray,
                        out_list: np.ndarray, groups: int, depthwise: bool) -> None:
    """Slice the per-output affine weights with the outputs; unless the convolution is
    depthwise (one input per row: its inputs are its outputs), its fan-in statistics span the
    inputs, which the sparse model recomputes over the kept ones."""
    for p in std.affine:
        w.b.add_slice(ParamSlice(p.name, 0, out_list, role="norm"), module)
    if not depthwise:
        w.spanning.append(SpanningNorm(module, "weight_std", in_list, groups, std.eps, dim=1))

"""MACs of a Keras model, analytically from layer configs and shapes (``conventions.md``).

Counted: Conv1D/2D/3D (grouped too), their transposes, DepthwiseConv1D/2D, SeparableConv1D/2D
(depthwise + pointwise part) and Dense (on any rank: every leading position counts), at the
runner's input signature (batch included): each of these layer rules names its count below.
Element-wise ops, norms and pooling are not counted, the same definition as the PyTorch
backend's FLOP counter / 2.

    conv:            B * prod(out spatial) * C_in * C_out / groups * prod(kernel)
    conv transpose:  B * prod(in spatial) * C_in * C_out * prod(kernel)
    depthwise:       B * prod(out spatial) * C_in * multiplier * prod(kernel)
    separable:       depthwise part + B * prod(out spatial) * C_in * multiplier * C_out
    dense:           prod(out shape[:-1]) * in * units
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from uif_explorer.keras.structure import Node

CONV = {"Conv1D", "Conv2D", "Conv3D", "Convolution1D", "Convolution2D", "Convolution3D"}
CONV_T = {"Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "Convolution2DTranspose",
          "Convolution3DTranspose"}
DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
SEPARABLE = {"SeparableConv1D", "SeparableConv2D", "SeparableConvolution1D",
             "SeparableConvolution2D"}


def _split(shape: tuple, config: dict) -> tuple[int, tuple[int, ...], int]:
    """(batch, spatial dims, channels) of an N-D tensor in the layer's data format."""
    if config.get("data_format") == "channels_first":
        return shape[0], tuple(shape[2:]), shape[1]
    return shape[0], tuple(shape[1:-1]), shape[-1]


def _kernel(config: dict, nspatial: int) -> int:
    k = config.get("kernel_size", 1)
    if isinstance(k, int):
        k = [k] * nspatial
    return int(np.prod(k))


def _io(node: Node) -> tuple[int, tuple, int, tuple, int, int]:
    """(batch, in spatial, C_in, out spatial, C_out, kernel size) of a convolution call."""
    b, in_sp, c_in = _split(node.in_shapes[0], node.config)
    _, out_sp, c_out = _split(node.out_shapes[0], node.config)
    return b, in_sp, c_in, out_sp, c_out, _kernel(node.config, len(out_sp))


def conv_macs(node: Node) -> int:
    b, _, c_in, out_sp, c_out, k = _io(node)
    groups = int(node.config.get("groups", 1) or 1)
    return b * int(np.prod(out_sp)) * c_in * (c_out // groups) * k


def conv_transpose_macs(node: Node) -> int:
    b, in_sp, c_in, _, c_out, k = _io(node)
    return b * int(np.prod(in_sp)) * c_in * c_out * k


def depthwise_macs(node: Node) -> int:
    b, _, c_in, out_sp, _, k = _io(node)
    return b * int(np.prod(out_sp)) * c_in * int(node.config.get("depth_multiplier", 1)) * k


def separable_parts(node: Node) -> tuple[int, int]:
    """(depthwise MACs, pointwise MACs) of a SeparableConv call."""
    b, _, c_in, out_sp, c_out, k = _io(node)
    pos = b * int(np.prod(out_sp)) * c_in * int(node.config.get("depth_multiplier", 1))
    return pos * k, pos * c_out


def separable_macs(node: Node) -> int:
    return sum(separable_parts(node))


def dense_macs(node: Node) -> int:
    out = node.out_shapes[0]
    return int(np.prod(out[:-1])) * int(node.in_shapes[0][-1]) * int(out[-1])


def node_macs(node: Node) -> int:
    """MACs of one layer call by its rule (0 for layers whose MACs are not counted)."""
    from uif_explorer.keras.rules import rule_for

    rule = rule_for(node)
    if rule is None or rule.macs is None or not node.in_shapes or node.in_shapes[0] is None:
        return 0
    return int(rule.macs(node))


def macs_table(model: Any, input_spec: Any) -> list[dict[str, Any]]:
    """Per counted layer call: path, class, output shape and exact MACs."""
    from uif_explorer.keras.rules import rule_for
    from uif_explorer.keras.structure import structure_at

    st = structure_at(model, input_spec)
    return [
        {"layer": n.path, "type": n.class_name, "output_shape": n.out_shapes[0],
         "macs": node_macs(n)}
        for n in st.nodes if getattr(rule_for(n), "macs", None) is not None
    ]


def count_macs(model: Any, input_spec: Any) -> int:
    """Total MACs of ``model`` at ``input_spec`` (exact integer)."""
    return int(sum(row["macs"] for row in macs_table(model, input_spec)))


def count_params(model: Any) -> int:
    """Parameters in the PyTorch sense: every weight except norm running statistics."""
    from uif_explorer.keras.structure import BUFFER_NAMES

    total = 0
    for v in model.weights:
        if v.name in BUFFER_NAMES and not v.trainable:
            continue
        total += int(np.prod(v.shape)) if len(v.shape) else 1
    return total

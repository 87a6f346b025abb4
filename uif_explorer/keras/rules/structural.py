"""Layers without weights on channels: pass-through, pooling, merges, Keras ops, Concatenate,
Flatten, Reshape, Permute, and the layers that are barriers. Element-wise unification,
concatenation and reshape grouping are the framework-neutral rules of ``core.rules``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from uif_explorer.core.channels import Val, channel_list, compress, varying_dims
from uif_explorer.core.rules import (
    Barrier,
    concat_classes,
    reshape_classes,
    unify_elementwise,
)
from uif_explorer.keras.rules.base import (
    OP_RULES,
    SPANNING_ACTIVATIONS,
    KerasLayerRule,
    Walk,
    activation_name,
    channel_axis,
    register_builtins,
)

if TYPE_CHECKING:
    from uif_explorer.keras.graph import Walker
    from uif_explorer.keras.structure import Node

PASS = {
    "Activation", "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization", "Identity", "Masking", "Softmax",
}
SPATIAL = {
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D",
    "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D",
    "MaxPool1D", "MaxPool2D", "MaxPool3D", "AvgPool1D", "AvgPool2D", "AvgPool3D",
}
GLOBAL = {
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "GlobalAvgPool1D",
    "GlobalAvgPool2D", "GlobalAvgPool3D", "GlobalMaxPool1D", "GlobalMaxPool2D",
    "GlobalMaxPool3D",
}
MERGE = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
OPS_ELEMENTWISE = {"Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum",
                   "Power", "FloorDivide", "Where"}
OPS_UNARY = {"Relu", "Relu6", "Sigmoid", "HardSigmoid", "Silu", "Swish", "HardSilu",
             "HardSwish", "Gelu", "Tanh", "Elu", "Selu", "LeakyRelu", "Softplus", "Exp", "Abs",
             "Negative", "Sqrt", "Square", "Cast", "Clip", "Log", "Mish", "Erf", "Copy",
             "Round", "Floor", "Ceil", "Reciprocal", "Sign"}


def _axes(value: int | Iterable[int], ndim: int) -> set[int]:
    return {int(a) % ndim for a in ([value] if isinstance(value, int) else value)}


def pass_through(walker: Walker, node: Node, xs: list[Val]) -> list[Val]:
    """Same shape, same channels; softmax over a channel axis is a barrier."""
    x = walker.single(xs)
    shape = walker.out_shape(node)
    if tuple(shape) != tuple(x.shape):
        raise Barrier("shape-changing element-wise layer")
    spanning = node.class_name == "Softmax" or (
        node.class_name == "Activation" and activation_name(node.config) in SPANNING_ACTIVATIONS)
    if spanning and _axes(node.config.get("axis", -1), len(shape)) & set(varying_dims(x.cls)):
        raise Barrier("softmax across channels")
    return [Val(shape, x.cls)]


def spatial(walker: Walker, node: Node, xs: list[Val]) -> list[Val]:
    """Pooling, padding, cropping, upsampling: positions change, channels do not."""
    x = walker.single(xs)
    shape = walker.out_shape(node)
    axis = channel_axis(node.config, len(shape))
    if len(shape) != len(x.shape) or shape[axis] != x.shape[axis] or shape[0] != x.shape[0]:
        raise Barrier("spatial layer that changes channels")
    if any(d != axis for d in varying_dims(x.cls)):
        raise Barrier("spatial layer over positions that carry channels")
    return [Val(shape, x.cls)]


def global_pool(walker: Walker, node: Node, xs: list[Val]) -> list[Val]:
    x = walker.single(xs)
    shape = walker.out_shape(node)
    nd = len(x.shape)
    axis = channel_axis(node.config, nd)
    if any(d != axis for d in varying_dims(x.cls)):
        raise Barrier("global pooling over positions that carry channels")
    if len(shape) == nd:  # keepdims
        return [Val(shape, x.cls)]
    return [Val(shape, channel_list(x, axis).reshape([1] * (len(shape) - 1) + [-1]))]


def rescaling(walker: Walker, node: Node, xs: list[Val]) -> list[Val]:
    for key in ("scale", "offset"):
        if not isinstance(node.config.get(key, 0), (int, float)):
            raise Barrier("Rescaling with per-channel values")
    return pass_through(walker, node, xs)


def merge(walker: Walker, node: Node, xs: list[Val]) -> list[Val]:
    """Add, Multiply, ... of any number of inputs: all inputs carry the same channels."""
    return [unify_elementwise(walker.b, xs, walker.out_shape(node), node.path)]


def op_elementwise(walker: Walker, node: Node, xs: list[Val]) -> list[Val]:
    """``x + 3``, ``x * gate``: scalar constants are fine, array constants are not followed."""
    if any(kind == "c" and not isinstance(v, (int, float, type(None), bool))
           for kind, v in node.args):
        raise Barrier(f"op {node.class_name} with array constants")
    return merge(walker, node, xs)


def op_unary(walker: Walker, node: Node, xs: list[Val]) -> list[Val]:
    shape = walker.out_shape(node)
    if len(xs) != 1 or tuple(xs[0].shape) != tuple(shape):
        raise Barrier(f"op '{node.class_name}' that may mix channels")
    return [Val(shape, xs[0].cls)]


def op_unknown(walker: Walker, node: Node, xs: list[Val]) -> list[Val]:
    raise Barrier(f"op '{node.class_name}' that may mix channels")


def concatenate(walker: Walker, node: Node, xs: list[Val]) -> list[Val]:
    """Each input keeps its own channels, offset along the axis."""
    return [concat_classes(xs, int(node.config.get("axis", -1)), walker.out_shape(node))]


def flatten(walker: Walker, node: Node, xs: list[Val]) -> list[Val]:
    """Row-major merge (NHWC: the channel is the fastest axis of the flat features)."""
    x = walker.single(xs)
    shape = walker.out_shape(node)
    cls = np.broadcast_to(x.cls, x.shape)
    if node.config.get("data_format") == "channels_first" and cls.ndim > 2:
        cls = np.moveaxis(cls, 1, -1)
    return [Val(shape, compress(np.ascontiguousarray(cls).reshape(shape)))]


def _set_target(index: int, config: dict, kept_in: int, kept_out: int) -> None:
    """The slim Reshape's ``target_shape`` entry ``index`` holds the kept positions."""
    target = list(config["target_shape"])
    if target[index] != -1:
        target[index] = kept_out
    config["target_shape"] = tuple(target)


def _without_units(shape: tuple, cls: np.ndarray) -> tuple[list[int], Val]:
    """The dims of size > 1 and the value over them (a Reshape may add or drop unit dims)."""
    dims = [d for d, n in enumerate(shape) if n != 1]
    return dims, Val(tuple(shape[d] for d in dims), cls.reshape([cls.shape[d] for d in dims]))


def reshape(walker: Walker, node: Node, xs: list[Val]) -> list[Val]:
    """Flatten-like merges and unit dims only; each output dim carrying channels is resized."""
    x = walker.single(xs)
    shape = tuple(walker.out_shape(node))
    out_dims, target = _without_units(shape, np.ones([1] * len(shape)))
    merged = reshape_classes(_without_units(x.shape, x.cls)[1], target.shape).cls
    sizes = [1] * len(shape)
    for i, d in enumerate(out_dims):
        sizes[d] = merged.shape[i]
    out = Val(shape, merged.reshape(sizes))
    full = np.broadcast_to(out.cls, shape)
    for d in varying_dims(out.cls):
        positions = full[tuple(slice(None) if k == d else 0 for k in range(full.ndim))]
        walker.resize(node, partial(_set_target, d - 1), positions, positions)
    return [out]


def permute(walker: Walker, node: Node, xs: list[Val]) -> list[Val]:
    x = walker.single(xs)
    dims = [0] + [int(d) for d in node.config["dims"]]
    return [Val(walker.out_shape(node), np.transpose(x.cls, dims))]


def barrier_rule(reason: str) -> Walk:
    """A walk that stops channels with ``reason`` (shown in the groups table)."""
    def walk(walker: Walker, node: Node, xs: list[Val]) -> list[Val]:
        raise Barrier(reason)
    return walk


def _register_builtins() -> None:
    walks: dict[str, Walk] = {
        **dict.fromkeys(PASS, pass_through), **dict.fromkeys(SPATIAL, spatial),
        **dict.fromkeys(GLOBAL, global_pool), **dict.fromkeys(MERGE, merge),
        "Concatenate": concatenate, "Flatten": flatten, "Reshape": reshape,
        "Permute": permute, "Rescaling": rescaling,
        "Lambda": barrier_rule("Lambda layer (its code cannot be inspected)"),
        "Normalization": barrier_rule("Normalization layer (per-channel statistics)"),
    }
    register_builtins({name: KerasLayerRule("channelwise", walk=walk)
                       for name, walk in walks.items()})
    OP_RULES.update({**dict.fromkeys(OPS_ELEMENTWISE, op_elementwise),
                     **dict.fromkeys(OPS_UNARY, op_unary)})


_register_builtins()

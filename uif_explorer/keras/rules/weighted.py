"""Layers with weights on channels: the generic producer / channel-wise walk, written once,
the built-in entries (Conv, ConvTranspose, Dense, Depthwise, Separable, norms, PReLU,
ConvNeXt's LayerScale) and ``register_layer`` for custom layers.

A producer's first ``out_dims`` weight creates its output channels (one class per position,
the same on every call of a shared layer); every other listed weight axis is tied to the
channels it holds. A channel-wise layer's output channels are its input's, each repeated
``out / in`` times (a depthwise ``depth_multiplier``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from uif_explorer.core.channels import MacOp, ParamSlice, Val, channel_list, varying_dims
from uif_explorer.core.rules import Barrier
from uif_explorer.keras import macs as kmacs
from uif_explorer.keras.rules.base import (
    BUILTIN_RULES,
    LAYER_RULES,
    SPANNING_ACTIVATIONS,
    KerasLayerRule,
    Update,
    activation_name,
    along,
    channel_axis,
    register_builtins,
    set_config,
)

if TYPE_CHECKING:
    from uif_explorer.keras.graph import Walker
    from uif_explorer.keras.structure import Node

Weights = dict[str, tuple[str, tuple[int, ...]]]
# (walker, node, rule, weights, in channels, output channels) -> out channels
Tie = Callable[["Walker", "Node", KerasLayerRule, Weights, np.ndarray, int], np.ndarray]


def _role(rule: KerasLayerRule, name: str, default: str) -> str:
    return rule.roles.get(name) or ("bias" if name == "bias" else default)


def _present(rule: KerasLayerRule, w: Weights) -> tuple[list, list]:
    """The (name, axis) pairs of ``in_dims`` and ``out_dims`` this layer has."""
    ins = [(n, d) for n, d in rule.in_dims.items() if n in w]
    outs = [(n, d) for n, d in rule.out_dims.items() if n in w]
    named = {**rule.in_dims, **rule.out_dims}
    if not ins and not outs and len(named) == 1 and len(w) == 1:
        # one weight under another name (ConvNeXt's LayerScale may call it "variable")
        pair = [(next(iter(w)), next(iter(named.values())))]
        return (pair, []) if rule.in_dims else ([], pair)
    return ins, outs


def _tie(walker: Walker, node: Node, w: Weights, name: str, dim: int, classes: np.ndarray,
         role: str) -> None:
    """One weight axis follows ``classes`` (tied, so a shared layer's calls agree)."""
    key, shape = w[name]
    dim %= len(shape)
    if shape[dim] != len(classes):
        raise Barrier(f"weight {name} of shape {shape} does not follow {len(classes)} channels")
    walker.b.unify(walker.b.param_axis(key, dim, shape[dim], None), classes)
    walker.b.add_slice(ParamSlice(key, dim, classes, role=role), node.path)


def produce(walker: Walker, node: Node, rule: KerasLayerRule, w: Weights,
            in_list: np.ndarray, size: int) -> np.ndarray:
    """Fresh output channels on the first ``out_dims`` axis; inputs tied on ``in_dims``."""
    ins, outs = _present(rule, w)
    if not outs:
        raise Barrier(f"{node.class_name} without the weights {sorted(rule.out_dims)}")
    name, dim = outs[0]
    key, shape = w[name]
    dim %= len(shape)
    out_list = walker.b.param_axis(key, dim, shape[dim], node.path)
    walker.b.add_slice(ParamSlice(key, dim, out_list, role=_role(rule, name, "out")), node.path)
    for n, d in ins:
        _tie(walker, node, w, n, d, in_list, _role(rule, n, "in"))
    if not ins:  # nothing to slice on the input side: what feeds it keeps every channel
        walker.b.fix(in_list, f"no input weights to slice in {node.path}")
    for n, d in outs[1:]:
        _tie(walker, node, w, n, d, out_list, _role(rule, n, "out"))
    return out_list


def follow(walker: Walker, node: Node, rule: KerasLayerRule, w: Weights,
           in_list: np.ndarray, size: int) -> np.ndarray:
    """Output channels are the input's, each repeated ``size / len(in_list)`` times."""
    if size % len(in_list):
        raise Barrier(f"{size} output channels do not repeat {len(in_list)} input channels")
    out_list = np.repeat(in_list, size // len(in_list))
    ins, outs = _present(rule, w)
    if not ins and not outs:
        raise Barrier(f"{node.class_name} without the weights "
                      f"{sorted({**rule.in_dims, **rule.out_dims})}")
    for n, d in ins:
        _tie(walker, node, w, n, d, in_list, _role(rule, n, "dw"))
    for n, d in outs:
        _tie(walker, node, w, n, d, out_list, _role(rule, n, "other"))
    return out_list


def weighted(walker: Walker, node: Node, xs: list[Val], rule: KerasLayerRule, *,
             axis: int | None = None, tie: Tie | None = None) -> list[Val]:
    """The walk of every layer with weights on channels: one input, the channel axis from
    ``data_format`` (or ``rule.channel_dim`` / ``axis``), ``tie`` (by default the rule's
    kind) links the weights, then MACs, the slim-config update and softmax outputs."""
    x = walker.single(xs)
    out_shape = walker.out_shape(node)
    nd = len(out_shape)
    if axis is None:
        axis = channel_axis(node.config, nd) if rule.channel_dim is None else rule.channel_dim
    axis %= nd
    in_list = channel_list(x, axis)
    if in_list is None:
        raise Barrier(f"{node.class_name} input channels depend on position")
    channelwise = rule.kind == "channelwise"
    tie_fn = tie or (follow if channelwise else produce)
    out_list = tie_fn(walker, node, rule, walker.weights(node), in_list, out_shape[axis])
    full = rule.macs(node) if rule.macs is not None and tie is None else 0
    if full:  # a custom ``tie`` records the MACs of its parts itself
        walker.add_macs(MacOp(node.path, full, None if channelwise else in_list, out_list,
                              depthwise=channelwise))
    if rule.update is not None:
        walker.resize(node, rule.update, in_list, out_list)
    if activation_name(node.config) in SPANNING_ACTIVATIONS:  # fixed after the outputs
        walker.defer_fix(out_list, f"softmax over the channels of {node.path}")
    if channelwise and tuple(out_shape) == tuple(x.shape) and len(out_list) == len(in_list):
        return [Val(out_shape, x.cls)]
    return [Val(out_shape, along(out_list, axis, nd))]


def apply_rule(walker: Walker, node: Node, xs: list[Val], rule: KerasLayerRule) -> list[Val]:
    """A rule's own walk, or the generic one for its kind."""
    if rule.walk is not None:
        return rule.walk(walker, node, xs)
    return weighted(walker, node, xs, rule)


# -- registration ------------------------------------------------------------------------------
def register_layer(layer_type: type | str, *, out_dims: dict[str, int] | None = None,
                   in_dims: dict[str, int] | None = None, channelwise: bool = False,
                   update: Update | None = None) -> None:
    """Teach the pruner a custom Keras layer in one call (producers and channel-wise alike).

    ``layer_type`` is the layer class or its class name. ``out_dims`` / ``in_dims`` map a
    weight name (as in ``layer.weights``) to the axis holding its output / input channels;
    ``update(config, kept_in, kept_out)`` edits the layer's ``get_config()`` dict for the slim
    model (or returns a new one). Examples::

        register_layer(MyDense, out_dims={"kernel": 1, "bias": 0}, in_dims={"kernel": 0},
                       update=lambda cfg, cin, cout: cfg.update(units=cout))
        register_layer("Scale", out_dims={"gamma": 0}, channelwise=True)
    """
    for what, dims in (("out_dims", out_dims), ("in_dims", in_dims)):
        if dims is not None and not (isinstance(dims, dict) and all(
                isinstance(k, str) and isinstance(v, int) for k, v in dims.items())):
            raise TypeError(f"Expected {what} to map weight names to axes, e.g. "
                            f"{{'kernel': -1}}. Received: {what}={dims!r}")
    if update is not None and not callable(update):
        raise TypeError(f"Expected update to be callable(config, kept_in, kept_out). "
                        f"Received: update={update!r}")
    LAYER_RULES.register(layer_type, KerasLayerRule(
        "channelwise" if channelwise else "producer", dict(out_dims or {}),
        dict(in_dims or {}), update))


def unregister_layer(layer_type: type | str) -> None:
    """Forget a rule added with :func:`register_layer` (a built-in rule it overrode returns)."""
    LAYER_RULES.unregister(layer_type)
    if isinstance(layer_type, str) and layer_type in BUILTIN_RULES:
        LAYER_RULES.register(layer_type, BUILTIN_RULES[layer_type])


def register_channelwise_layer(class_name: str, weights: dict[str, int],
                               size_key: str | None = None) -> None:
    """Teach the pruner a per-channel custom layer, e.g. ConvNeXt's ``LayerScale``.

    ``register_channelwise_layer("LayerScale", {"gamma": 0}, "projection_dim")`` is
    ``register_layer("LayerScale", out_dims={"gamma": 0}, channelwise=True, update=...)``
    whose update writes the kept channels to ``projection_dim`` in the slim model.
    """
    register_layer(class_name, out_dims=weights, channelwise=True,
                   update=partial(set_config, size_key) if size_key else None)


# -- built-in entries ----------------------------------------------------------------------------
def _conv_update(config: dict, kept_in: int, kept_out: int) -> None:
    config["filters"] = kept_out
    if int(config.get("groups", 1) or 1) > 1:  # depthwise written as a grouped Conv
        config["groups"] = kept_in


_CONV = KerasLayerRule("producer", {"kernel": -1, "bias": 0}, {"kernel": -2}, _conv_update,
                       macs=kmacs.conv_macs)  # groups == 1
_DW_CONV = KerasLayerRule("channelwise", {"kernel": -1, "bias": 0}, {}, _conv_update,
                          roles={"kernel": "dw"}, macs=kmacs.conv_macs)


def _conv(walker: Walker, node: Node, xs: list[Val]) -> list[Val]:
    groups = int(node.config.get("groups", 1) or 1)
    if groups == 1:
        return weighted(walker, node, xs, _CONV)
    x = walker.single(xs)
    if groups == x.shape[channel_axis(node.config, len(x.shape))]:
        return weighted(walker, node, xs, _DW_CONV)
    raise Barrier(f"grouped convolution (groups={groups}) is not pruned")


_SEP_DW = KerasLayerRule("channelwise", {}, {"depthwise_kernel": -2})
_SEP_PW = KerasLayerRule("producer", {"pointwise_kernel": -1, "bias": 0},
                         {"pointwise_kernel": -2})


def _separable_tie(walker: Walker, node: Node, rule: KerasLayerRule, w: Weights,
                   in_list: np.ndarray, size: int) -> np.ndarray:
    """Depthwise part follows the input, the pointwise part produces; MACs per part."""
    mid = follow(walker, node, _SEP_DW, w, in_list, w["pointwise_kernel"][1][-2])
    out_list = produce(walker, node, _SEP_PW, w, mid, size)
    dw_macs, pw_macs = kmacs.separable_parts(node)
    walker.add_macs(MacOp(node.path + ":depthwise", dw_macs, None, mid, depthwise=True))
    walker.add_macs(MacOp(node.path + ":pointwise", pw_macs, mid, out_list))
    return out_list


def _separable(walker: Walker, node: Node, xs: list[Val]) -> list[Val]:
    return weighted(walker, node, xs, _SEPARABLE, tie=_separable_tie)


_SEPARABLE = KerasLayerRule("producer", {"pointwise_kernel": -1, "bias": 0},
                            {"depthwise_kernel": -2}, _conv_update, walk=_separable,
                            macs=kmacs.separable_macs)


_BATCH_NORM = KerasLayerRule(
    "channelwise", {"gamma": 0, "beta": 0, "moving_mean": 0, "moving_variance": 0},
    roles={"gamma": "norm", "beta": "stat", "moving_mean": "stat", "moving_variance": "stat"})


def _norm_axes(node: Node, ndim: int) -> list[int]:
    axes = node.config.get("axis", -1)
    return [int(a) % ndim for a in ([axes] if isinstance(axes, int) else axes)]


def _batch_norm(walker: Walker, node: Node, xs: list[Val]) -> list[Val]:
    axes = _norm_axes(node, len(walker.single(xs).shape))
    if len(axes) != 1:
        raise Barrier("BatchNormalization over several axes")
    return weighted(walker, node, xs, _BATCH_NORM, axis=axes[0])


def _layer_norm(walker: Walker, node: Node, xs: list[Val]) -> list[Val]:
    x = walker.single(xs)
    if set(_norm_axes(node, len(x.shape))) & set(varying_dims(x.cls)):
        raise Barrier("LayerNormalization statistics span the channels")
    return [Val(x.shape, x.cls)]


def _group_count(config: dict, kept_in: int, kept_out: int) -> None:
    if int(config.get("groups", -1)) != -1:
        config["groups"] = kept_out


_INSTANCE_NORM = KerasLayerRule("channelwise", {"gamma": 0, "beta": 0}, {}, _group_count,
                                roles={"gamma": "norm", "beta": "stat"})


def _group_norm(walker: Walker, node: Node, xs: list[Val]) -> list[Val]:
    """One channel per group (instance norm) is per-channel; wider groups span channels."""
    x = walker.single(xs)
    axis = _norm_axes(node, len(x.shape))[0]
    if int(node.config.get("groups", 32)) not in (-1, x.shape[axis]):
        raise Barrier("GroupNormalization statistics span the channels of each group")
    return weighted(walker, node, xs, _INSTANCE_NORM, axis=axis)


def _prelu(walker: Walker, node: Node, xs: list[Val]) -> list[Val]:
    """``alpha`` has the input's shape without batch (shared axes 1): slice varying dims."""
    x = walker.single(xs)
    key, shape = walker.weights(node)["alpha"]
    for d in varying_dims(x.cls):
        if d == 0 or shape[d - 1] <= 1:
            continue
        lst = channel_list(x, d)
        if lst is None:
            raise Barrier("PReLU over position-dependent channels")
        walker.b.add_slice(ParamSlice(key, d - 1, lst, role="other"), node.path)
    return [Val(x.shape, x.cls)]


def _register_builtins() -> None:
    conv_t = KerasLayerRule("producer", {"kernel": -2, "bias": 0}, {"kernel": -1},
                            partial(set_config, "filters"), macs=kmacs.conv_transpose_macs)
    depthwise = KerasLayerRule("channelwise", {"bias": 0},
                               {"kernel": -2, "depthwise_kernel": -2},
                               macs=kmacs.depthwise_macs)
    dense = KerasLayerRule("producer", {"kernel": 1, "bias": 0}, {"kernel": 0},
                           partial(set_config, "units"), channel_dim=-1, macs=kmacs.dense_macs)
    conv = replace(_CONV, walk=_conv)
    table: dict[str, KerasLayerRule] = {
        **dict.fromkeys(kmacs.CONV, conv), **dict.fromkeys(kmacs.CONV_T, conv_t),
        **dict.fromkeys(kmacs.DEPTHWISE, depthwise),
        **dict.fromkeys(kmacs.SEPARABLE, _SEPARABLE), "Dense": dense,
        "BatchNormalization": replace(_BATCH_NORM, walk=_batch_norm),
        "LayerNormalization": KerasLayerRule("channelwise", walk=_layer_norm),
        "GroupNormalization": replace(_INSTANCE_NORM, walk=_group_norm),
        "PReLU": KerasLayerRule("channelwise", walk=_prelu),
        # keras.applications ConvNeXt
        "LayerScale": KerasLayerRule("channelwise", {"gamma": 0}, {},
                                     partial(set_config, "projection_dim")),
    }
    register_builtins(table)


_register_builtins()

"""Graph rules both backends share, and the contract of a layer rule.

A backend's walk carries a channel-class array (:class:`~uif_explorer.core.channels.Val`) per
tensor. How those arrays combine at an element-wise op, a concatenation or a reshape does not
depend on the framework, nor does what a *barrier* does (fix every channel reaching an op), nor
what an unknown weighted layer on prunable channels is (:class:`UnsupportedLayerError`). They
live here once; the backends only translate their ops' arguments into these calls.

:class:`LayerRule` and :class:`LayerRegistry` are the one contract for layer rules: how a
layer's channels tie to its inputs and outputs (a *producer* makes new channels, a
*channel-wise* layer carries its input's), which weight axes follow them, and how the layer's
attributes or config are rebuilt for fewer channels. Nothing here imports torch or TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from uif_explorer.core.channels import (
    ChannelGraph,
    ChannelGraphBuilder,
    Group,
    Val,
    compress,
    varying_dims,
)

NO_RULE = "no pruning rule"
BROADCAST = "broadcast against channels"


class UnsupportedLayerError(RuntimeError):
    """A layer with weights receives prunable channels and no rule says how to prune it."""


class Barrier(Exception):
    """Raised by a rule that cannot follow channels through an op (the op becomes a barrier)."""


# -- layer rules ---------------------------------------------------------------------------------
@dataclass
class LayerRule:
    """How one layer type's weights follow channels, and how it is rebuilt narrower.

    ``kind`` is ``"producer"`` (its output axis holds channels of its own; its input axis
    follows what feeds it) or ``"channelwise"`` (output channels are the input's, e.g. a
    per-channel scale). ``out_dims`` / ``in_dims`` map a weight name to the axis holding the
    output / input channels (a channel-wise layer only has ``out_dims``). ``update(layer,
    kept_in, kept_out)`` rebuilds the layer's size attributes (or returns a new config) after
    its weights were sliced. ``channel_dim`` is the channel axis of the layer's input and output
    tensors; ``None`` means the backend's layout (1 for PyTorch NCHW, -1 for Keras NHWC).
    ``traced`` marks a built-in rule whose ops the walk follows one by one (only ``update`` is
    used); a rule with ``traced=False`` makes the whole layer one opaque node of the graph.
    """

    kind: Literal["producer", "channelwise"] = "producer"
    out_dims: dict[str, int] = field(default_factory=dict)
    in_dims: dict[str, int] = field(default_factory=dict)
    update: Callable[[Any, int, int], Any] | None = None
    channel_dim: int | None = None
    traced: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("producer", "channelwise"):
            raise ValueError(
                f"Expected kind='producer' or kind='channelwise'. Received: kind={self.kind!r}"
            )
        if self.kind == "producer" and not self.out_dims and not self.traced:
            raise ValueError(
                "Expected out_dims for a producer layer (the weight axes holding its output "
                "channels, e.g. out_dims={'weight': 0}); pass channelwise=True for a layer "
                "whose output channels are its input's. Received: out_dims={}"
            )


def make_rule(
    *,
    out_dims: dict[str, int] | None = None,
    in_dims: dict[str, int] | None = None,
    channelwise: bool = False,
    update: Callable[[Any, int, int], Any] | None = None,
    channel_dim: int | None = None,
) -> LayerRule:
    """The rule a backend's ``register_layer(layer_type, ...)`` call describes."""
    return LayerRule("channelwise" if channelwise else "producer", dict(out_dims or {}),
                     dict(in_dims or {}), update, channel_dim)


class LayerRegistry:
    """Layer rules by type (looked up along the MRO) or by class name (for configs)."""

    def __init__(self) -> None:
        self._rules: dict[type | str, LayerRule] = {}

    def register(self, layer_type: type | str, rule: LayerRule) -> None:
        if not isinstance(layer_type, (type, str)):
            raise TypeError(
                f"Expected a layer class or class name. Received: layer_type={layer_type!r}"
            )
        self._rules[layer_type] = rule

    def unregister(self, layer_type: type | str) -> None:
        self._rules.pop(layer_type, None)

    def lookup(self, layer: object) -> LayerRule | None:
        """The rule of a layer object, class or class name; the nearest base class wins."""
        if isinstance(layer, str):
            return self._rules.get(layer)
        cls = layer if isinstance(layer, type) else type(layer)
        for base in cls.__mro__:
            rule = self._rules.get(base)
            if rule is None:
                rule = self._rules.get(base.__name__)
            if rule is not None:
                return rule
        return None

    def __contains__(self, layer_type: object) -> bool:
        return layer_type in self._rules

    def __iter__(self) -> Iterator[tuple[type | str, LayerRule]]:
        return iter(list(self._rules.items()))

    def __len__(self) -> int:
        return len(self._rules)


# -- barriers -------------------------------------------------------------------------------------
def fixed_val(b: ChannelGraphBuilder, shape: Sequence[int], reason: str) -> Val:
    """A value whose every position carries one fixed class (model inputs, constants...)."""
    cid = b.fresh_fixed(1, reason)[0]
    return Val(tuple(shape), np.full([1] * len(shape), cid, dtype=np.int64))


def barrier(b: ChannelGraphBuilder, values: Iterable[object], reason: str) -> None:
    """Fix every channel that reaches an op; the groups holding them are excluded for it."""
    for v in values:
        if isinstance(v, Val):
            b.fix(v.cls, reason)


# -- element-wise ---------------------------------------------------------------------------------
def _expand(v: Val, nd: int) -> Val:
    pad = nd - len(v.shape)
    return Val((1,) * pad + tuple(v.shape), v.cls.reshape((1,) * pad + v.cls.shape))


def _single_class(v: Val) -> bool:
    return bool(np.all(v.cls == v.cls.flat[0]))


def unify_elementwise(b: ChannelGraphBuilder, operands: Sequence[Val], shape: Sequence[int],
                      where: str) -> Val:
    """Element-wise op: operands carrying the same channels are tied (residual adds, gates).

    An operand broadcast against the channels of another is not unified (it is fixed; the
    channels it meets stay prunable). An operand with one class for all its positions (a
    constant, a view of a weight, a model input) next to channels fixes them both without
    merging them, so they stay whole and the groups table shows their real count.
    Raises :class:`Barrier` when no operand has the output's full shape.
    """
    nd = len(shape)
    tensors = [_expand(v, nd) for v in operands]
    full = [v for v in tensors if tuple(v.shape) == tuple(shape)]
    if not full:
        raise Barrier("element-wise op without a full-shape operand")
    ref = max(full, key=lambda v: len(varying_dims(v.cls)))
    ref_vary = varying_dims(ref.cls)
    for v in tensors:
        if v is ref:
            continue
        if any(v.shape[d] == 1 and shape[d] > 1 for d in ref_vary):
            b.fix(v.cls, f"{BROADCAST} in {where}")
        elif ref_vary and _single_class(v):
            b.fix(ref.cls, f"{BROADCAST} in {where}")
            b.fix(v.cls, f"{BROADCAST} in {where}")
        else:
            b.unify(ref.cls, v.cls)
    return Val(tuple(shape), ref.cls)


# -- concatenation and reshapes -------------------------------------------------------------------
def concat_classes(parts: Sequence[Val], dim: int, shape: Sequence[int]) -> Val:
    """Concatenate class arrays along ``dim`` (the classes of every input stay distinct)."""
    nd = len(shape)
    dim %= nd
    target = [max(p.cls.shape[d] for p in parts) for d in range(nd)]
    cls_parts = [
        np.broadcast_to(p.cls, [p.shape[dim] if d == dim else target[d] for d in range(nd)])
        for p in parts
    ]
    return Val(tuple(shape), compress(np.concatenate(cls_parts, axis=dim)))


def reshape_groups(a: Sequence[int], b: Sequence[int]) -> list[tuple[list[int], list[int]]] | None:
    """Pair up dims of two shapes into runs with equal products (None if they do not line up)."""
    i = j = 0
    groups = []
    while i < len(a) or j < len(b):
        gi, gj = [], []
        pa = pb = 1
        if i < len(a):
            gi.append(i)
            pa = a[i]
            i += 1
        if j < len(b):
            gj.append(j)
            pb = b[j]
            j += 1
        while pa != pb:
            if pa < pb:
                if i >= len(a):
                    return None
                gi.append(i)
                pa *= a[i]
                i += 1
            else:
                if j >= len(b):
                    return None
                gj.append(j)
                pb *= b[j]
                j += 1
        groups.append((gi, gj))
    return groups


def reshape_classes(x: Val, out: Sequence[int], sizes: Sequence[object] | None = None) -> Val:
    """Follow a reshape that merges dims row-major (flatten -> dense drops spatial blocks).

    A reshape that splits a channel dim, or mixes two of them (channel shuffle), raises
    :class:`Barrier`. ``sizes`` are the literal target sizes when the model's code gave them:
    a merged run over channels written as a constant (not -1) cannot follow a narrower model.
    """
    out = tuple(out)
    vary = varying_dims(x.cls)
    if not vary:
        return Val(out, np.full([1] * len(out), x.cls.ravel()[0], dtype=np.int64))
    groups = reshape_groups(x.shape, out)
    if groups is None:
        raise Barrier("reshape that regroups channels")
    idx: list[slice] = []
    new_shape: list[int] = []
    for in_dims, out_dims in groups:
        gv = [d for d in in_dims if d in vary]
        if not gv:
            idx.extend(slice(0, 1) for _ in in_dims)
            new_shape.extend([1] * len(out_dims))
            continue
        if len(out_dims) != 1 or len(gv) != 1:
            raise Barrier("reshape that splits or mixes channel dims (e.g. channel shuffle)")
        if sizes is not None and len(in_dims) > 1:
            lit = sizes[out_dims[0]]
            if not (isinstance(lit, int) and lit == -1):
                raise Barrier("reshape with a hard-coded size over channels")
        idx.extend(slice(None) for _ in in_dims)
        new_shape.append(int(np.prod([x.shape[d] for d in in_dims])))
    # Merged runs keep row-major order, so reshaping the materialised classes is exact; runs
    # without channels are cut to one position first (keeps large activations cheap).
    full = np.broadcast_to(x.cls, x.shape)
    return Val(out, np.ascontiguousarray(full[tuple(idx)]).reshape(new_shape))


# -- after the walk -------------------------------------------------------------------------------
def groups_of(graph: ChannelGraph, classes: np.ndarray) -> list[Group]:
    """The groups that hold any of these classes, in id order."""
    gids = {graph.root_group.get(int(r)) for r in np.unique(graph.uf.roots(np.asarray(classes)))}
    gids.discard(None)
    return [graph.groups[g] for g in sorted(gids)]


def exclude_classes(graph: ChannelGraph, classes: np.ndarray, reason: str) -> None:
    """Exclude the prunable groups holding these classes, with the reason shown to the user."""
    for g in groups_of(graph, classes):
        if g.prunable:
            g.excluded_reason = reason


def nothing_prunable(graph: ChannelGraph, limit: int = 6) -> str:
    """One line saying that no group can be pruned, naming the frozen layers and why."""
    if not graph.groups:
        return ("No channel group of this model can be pruned: it has no layer that produces "
                "channels (convolution, linear, or a registered custom layer).")
    by_reason: dict[str, list[str]] = {}
    for g in graph.groups:
        by_reason.setdefault(g.excluded_reason or "not prunable", []).append(g.name)
    parts = []
    for reason, names in list(by_reason.items())[:limit]:
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        parts.append(f"{', '.join(names[:3])}{more} ({reason})")
    if len(by_reason) > limit:
        parts.append(f"{len(by_reason) - limit} more reasons")
    return (f"No channel group of this model can be pruned; frozen: {'; '.join(parts)}. "
            "See groups_table() for every group.")


def check_unknown(graph: ChannelGraph, records: Iterable[tuple[str, str, np.ndarray]],
                  message: Callable[[str, str, Group], str]) -> None:
    """Raise :class:`UnsupportedLayerError` where only a rule-less weighted layer stops a group.

    ``records`` are (layer kind, where, classes reaching it); ``message(kind, where, group)``
    words the error in the backend's terms (its excludes and ``register_layer`` spelling).
    """
    for kind, where, classes in records:
        for g in groups_of(graph, classes):
            if g.fix_reasons and all(NO_RULE in why for why in g.fix_reasons):
                raise UnsupportedLayerError(message(kind, where, g))


__all__ = [
    "BROADCAST", "NO_RULE", "Barrier", "LayerRegistry", "LayerRule", "UnsupportedLayerError",
    "barrier", "check_unknown", "concat_classes", "exclude_classes", "fixed_val", "groups_of",
    "make_rule", "nothing_prunable", "reshape_classes", "reshape_groups", "unify_elementwise",
]

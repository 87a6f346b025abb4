"""Walk a Keras model's structure and describe its channels to the core (``capture``).

The walk is the PyTorch backend's in NHWC: every tensor gets an integer *class array*
broadcastable to its shape; each layer call is handed to its entry in the layer-rule registry
(``uif_explorer.keras.rules``), which ties the classes of its inputs, outputs and weights
(:class:`ParamSlice` records whose ``dim`` is the axis of the *Keras* weight layout, e.g. a
Conv2D kernel ``(kh, kw, in, out)``). A layer without a rule is a barrier; with weights on
prunable channels it is an :class:`UnsupportedLayerError` naming the layer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from uif_explorer.core.channels import (
    FIXED_INPUT,
    FIXED_OUTPUT,
    ChannelGraph,
    ChannelGraphBuilder,
    Group,
    MacOp,
    Val,
)
from uif_explorer.core.rules import (
    NO_RULE,
    Barrier,
    UnsupportedLayerError,
    check_unknown,
    fixed_val,
)
from uif_explorer.keras import macs as kmacs
from uif_explorer.keras.rules import (
    OP_RULES,
    apply_rule,
    op_unknown,
    register_channelwise_layer,
    register_layer,
    rule_for,
    unregister_layer,
)
from uif_explorer.keras.rules.base import Update
from uif_explorer.keras.structure import (
    BUFFER_NAMES,
    KerasGraphError,
    ModelStructure,
    Node,
    check_model,
    digest_weights,
    read_structure,
    resolve_excludes,
    resolve_layer,
    spec_shape,
    structure_at,
    weight_items,
)


@dataclass
class Resize:
    """A slim-config edit recorded by a rule: ``update(config, kept(in), kept(out))``."""

    update: Update
    in_classes: np.ndarray
    out_classes: np.ndarray


@dataclass
class KerasCapture:
    """The core's channel graph plus the Keras-side facts needed to apply plans."""

    graph: ChannelGraph
    structure: ModelStructure
    weight_keys: dict[str, tuple[str, str]]  # param key -> (layer path, weight name)
    resizes: dict[str, list[Resize]]  # layer path -> its config edits for the slim model
    nested_inputs: dict[str, list[tuple[np.ndarray, tuple]]]  # nested model -> its inputs
    excluded: list[str]
    input_shape: tuple[int, ...]
    notes: list[str] = field(default_factory=list)


_DIGEST_DROP = ("name", "trainable", "dtype", "build_config", "seed")


def _digest_config(config: dict) -> str:
    clean = {
        k: v for k, v in config.items()
        if k not in _DIGEST_DROP and not k.endswith(("_initializer", "_regularizer",
                                                     "_constraint"))
    }
    return json.dumps(clean, sort_keys=True, default=str)


class Walker:
    """The state of one walk, and what a layer rule may do with it."""

    def __init__(self, st: ModelStructure, excluded: set[str]) -> None:
        self.st = st
        self.b = ChannelGraphBuilder()
        self.vals: dict[str, Val] = {}
        self.excluded = excluded
        self.weight_keys: dict[str, tuple[str, str]] = {}
        self.param_shapes: dict[str, tuple[int, ...]] = {}
        self.buffer_shapes: dict[str, tuple[int, ...]] = {}
        self.resizes: dict[str, list[Resize]] = {}
        self.unknown_with_weights: list[tuple[str, str, np.ndarray]] = []
        self.digest: list[str] = []
        self.total_macs = 0
        self.deferred: list[tuple[np.ndarray, str]] = []

    # -- for rules ---------------------------------------------------------------------------
    def weights(self, node: Node) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Weight name -> (param key, shape); registers the layer's weights once."""
        out = {}
        for name, v in weight_items(node.layer):
            key = f"{node.path}/{name}"
            shape = tuple(int(s) for s in v.shape)
            out[name] = (key, shape)
            if key not in self.weight_keys:
                self.weight_keys[key] = (node.path, name)
                if v.name in BUFFER_NAMES and not v.trainable:
                    self.buffer_shapes[key] = shape
                else:
                    self.param_shapes[key] = shape
        return out

    def single(self, xs: list[Val]) -> Val:
        if len(xs) != 1:
            raise Barrier("expected one input tensor")
        return xs[0]

    def out_shape(self, node: Node) -> tuple:
        s = node.out_shapes[0] if node.out_shapes else None
        if s is None:
            raise Barrier("output shape unknown")
        return s

    def add_macs(self, op: MacOp) -> None:
        """A counted op whose MACs follow kept channels (the total counts every layer)."""
        self.b.mac_ops.append(op)

    def resize(self, node: Node, update: Update, in_classes: np.ndarray,
               out_classes: np.ndarray) -> None:
        """Record how the slim model's config of ``node`` follows its kept channels."""
        edits = self.resizes.setdefault(node.path, [])
        if not any(e.update is update for e in edits):  # a shared layer's second call
            edits.append(Resize(update, in_classes, out_classes))

    def defer_fix(self, classes: np.ndarray, reason: str) -> None:
        """Fix classes after the walk (their own reasons, e.g. model outputs, come first)."""
        self.deferred.append((classes, reason))

    # -- walk --------------------------------------------------------------------------------
    def is_excluded(self, node: Node) -> bool:
        return any(node.path == e or node.path.startswith(e + "/") for e in self.excluded)

    def barrier(self, node: Node, xs: list[Val], reason: str) -> list[Val]:
        where = f"{reason} ({node.class_name} {node.path})"
        for v in xs:
            self.b.fix(v.cls, where)
        return [fixed_val(self.b, s or (), where) for s in node.out_shapes]

    def run(self) -> None:
        index_of = {}
        for node in self.st.nodes:
            for t, k in enumerate(node.outputs):
                index_of[k] = f"{node.index}.{t}"
            self.digest.append(json.dumps([
                node.index, f"{node.module}.{node.class_name}", _digest_config(node.config),
                [index_of.get(k, "?") if kind == "t" else repr(k)
                 for kind, k in ((a[0], a[1]) for a in node.args)],
                node.in_shapes, node.out_shapes,
            ], default=str))
            if node.class_name == "InputLayer":
                shape = self.st.shapes[node.outputs[0]]
                self.vals[node.outputs[0]] = fixed_val(self.b, shape, FIXED_INPUT)
                continue
            self.weights(node)  # every weight counts as a parameter (or buffer)
            self.total_macs += kmacs.node_macs(node)
            xs = [self.vals[k] for k in node.inputs if k in self.vals]
            excluded = self.is_excluded(node)
            if excluded:  # before the rule runs, so the exclusion is the recorded reason
                for v in xs:
                    self.b.fix(v.cls, f"excluded layer {node.path}")
            outs = self._call(node, xs)
            if excluded:
                for v in outs:
                    self.b.fix(v.cls, f"excluded layer {node.path}")
            for k, v in zip(node.outputs, outs, strict=False):
                self.vals[k] = v
        for k in self.st.outputs:
            if k in self.vals:
                self.b.fix(self.vals[k].cls, FIXED_OUTPUT)
        for classes, reason in self.deferred:
            self.b.fix(classes, reason)

    def _call(self, node: Node, xs: list[Val]) -> list[Val]:
        if any(s is None for s in node.out_shapes):
            return self.barrier(node, xs, "output shape unknown")
        if len(xs) != len(node.inputs):
            return self.barrier(node, xs, "input not produced by the graph")
        try:
            if node.is_op:
                return OP_RULES.get(node.class_name, op_unknown)(self, node, xs)
            rule = rule_for(node)
            if rule is None:
                return self._unknown(node, xs)
            return apply_rule(self, node, xs, rule)
        except Barrier as exc:
            return self.barrier(node, xs, str(exc))

    def _unknown(self, node: Node, xs: list[Val]) -> list[Val]:
        if self.weights(node):
            for v in xs:
                self.unknown_with_weights.append((node.class_name, node.path, v.cls.ravel()))
        return self.barrier(node, xs, f"{NO_RULE} for layer class '{node.class_name}'")


def capture(model: keras.Model, input_spec: Any,
            excludes: Iterable[object] | None = None) -> KerasCapture:
    """Read ``model`` (never mutated) at ``input_spec`` and build its channel graph."""
    st = structure_at(model, input_spec)
    excluded = resolve_excludes(st, excludes)
    walker = Walker(st, excluded)
    walker.run()
    graph = walker.b.build(walker.param_shapes, walker.buffer_shapes, walker.total_macs,
                           walker.digest)
    check_unknown(graph, walker.unknown_with_weights, _unsupported_message)
    nested = {path: [(walker.vals[k].cls, walker.vals[k].shape) for k in ins]
              for path, (_, ins) in st.models.items()}
    return KerasCapture(graph, st, walker.weight_keys, walker.resizes, nested,
                        sorted(excluded), spec_shape(input_spec))


def _unsupported_message(cls_name: str, path: str, g: Group) -> str:
    return (
        f"Layer '{path}' ({cls_name}) holds weights and receives the channels of group "
        f"'{g.name}' ({g.num_channels} channels), but there is no rule for pruning a "
        f"{cls_name}. Pass excludes=['{path}'] (the channels reaching it then stay unpruned), "
        "or teach it with uif_explorer.keras.register_layer(...) (out_dims / in_dims: the "
        "weight axes holding its channels; channelwise=True for a per-channel layer)."
    )


__all__ = [
    "KerasCapture", "KerasGraphError", "Node", "Resize", "UnsupportedLayerError", "Walker",
    "capture", "check_model", "digest_weights", "read_structure", "register_channelwise_layer",
    "register_layer", "resolve_excludes", "resolve_layer", "spec_shape", "structure_at",
    "unregister_layer", "weight_items",
]

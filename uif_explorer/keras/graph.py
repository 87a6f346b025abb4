"""Read a Functional or Sequential Keras model as a graph and describe its channels to the core.

The graph comes from the model's public structure: ``model.get_config()`` (layer configs and
``inbound_nodes`` with each input tensor's shape and ``keras_history``), ``model.operations``
for the layer objects and their weights, ``model.inputs`` / ``model.outputs``. A Sequential
model (or a nested one) is read through ``keras.Model(seq.inputs, seq.outputs)``, which lists
the same layers with their connections; nested models are expanded in place, their layers
named ``outer/inner``.

The walk is the PyTorch backend's (``uif_explorer.torch.capture``) in NHWC: every tensor gets
an integer *class array* broadcastable to its shape, producers (Conv, Dense, SeparableConv's
pointwise part) create fresh classes, element-wise merges unify them, Concatenate and Flatten
rearrange them, and weights are tied to classes through :class:`ParamSlice` records whose
``dim`` is the axis of the *Keras* weight layout (a Conv2D kernel is ``(kh, kw, in, out)``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from uif_explorer.core.channels import (
    FIXED_INPUT,
    FIXED_OUTPUT,
    ChannelGraph,
    ChannelGraphBuilder,
    MacOp,
    ParamSlice,
    Val,
    channel_list,
    compress,
    varying_dims,
)
from uif_explorer.keras import macs as kmacs

BUFFER_NAMES = {"moving_mean", "moving_variance", "mean", "variance", "count"}
NO_RULE = "no pruning rule"


class KerasGraphError(RuntimeError):
    """The model cannot be read as a graph (subclassed, unbuilt, wrong input_spec...)."""


class UnsupportedLayerError(RuntimeError):
    """A layer with weights receives prunable channels and no rule says how to prune it."""


# -- reading the structure -------------------------------------------------------------------
@dataclass
class Node:
    """One call of one layer (or Keras op) in topological order."""

    index: int
    path: str  # "conv2d", or "outer/inner" inside a nested model
    layer: Any  # the keras Layer / Operation object
    class_name: str
    module: str
    config: dict
    args: list  # flattened positional arguments: ("t", tensor key) or ("c", constant)
    inputs: list[str]  # tensor keys, in argument order
    outputs: list[str]
    in_shapes: list[tuple] = field(default_factory=list)
    out_shapes: list[tuple | None] = field(default_factory=list)


@dataclass
class ModelStructure:
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    shapes: dict[str, tuple]
    layers: dict[str, Any]  # path -> layer object (only layers with a path)
    models: dict[str, tuple[Any, list[str]]] = field(default_factory=dict)  # nested: inputs


def is_functional(model: object) -> bool:
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


def check_model(model: object) -> None:
    """Functional or Sequential only; a subclassed model gets the why and the what-to-do."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Expected a keras.Model (Functional or Sequential). Received: "
            f"model={type(model).__name__}"
        )
    if isinstance(model, keras.Sequential):
        if not model.built or not getattr(model, "inputs", None):
            raise KerasGraphError(
                f"The Sequential model {model.name!r} is not built, so it has no graph yet. "
                "Start it with keras.Input(shape=...) or call model.build((None, ...)) first."
            )
        return
    if not is_functional(model):
        raise KerasGraphError(
            f"{type(model).__name__} is a subclassed keras.Model: its layers are connected by "
            "Python code in call(), so there is no inspectable graph of layers to follow "
            "channels through. Rebuild it with the Functional API (keras.Model(inputs, "
            "outputs)) or as a keras.Sequential and copy the weights over with "
            "set_weights(), or export it to PyTorch and use uif_explorer.get_pruning_runner."
        )


def _functional_view(model: keras.Model) -> keras.Model:
    """A plain Functional over the same layers (Sequential, or a Functional subclass whose
    ``get_config`` is its own), so that ``get_config()`` lists layers and connections."""
    from keras.src.models.functional import Functional

    if type(model) is Functional:
        return model
    return keras.Model(model.inputs, model.outputs, name=model.name)


def _tensor_refs(obj: Any, out: list) -> None:
    """Flatten serialized call arguments into ("t", history) / ("c", constant) items."""
    if isinstance(obj, dict) and obj.get("class_name") == "__keras_tensor__":
        out.append(("t", tuple(obj["config"]["keras_history"]), obj["config"].get("shape")))
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _tensor_refs(item, out)
    elif isinstance(obj, dict):
        for value in obj.values():
            _tensor_refs(value, out)
    else:
        out.append(("c", obj, None))


class _Reader:
    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.raw: list[Node] = []
        self.alias: dict[str, str] = {}
        self.shapes: dict[str, tuple] = {}
        self.layers: dict[str, Any] = {}
        self.models: dict[str, tuple[Any, list[str]]] = {}

    def resolve(self, key: str) -> str:
        seen = 0
        while key in self.alias:
            key = self.alias[key]
            seen += 1
            if seen > 10_000:
                raise KerasGraphError("cyclic tensor aliases while reading the model graph")
        return key

    def shape(self, raw: Any) -> tuple | None:
        if raw is None:
            return None
        dims = list(raw)
        if dims and dims[0] is None:
            dims[0] = self.batch
        return tuple(dims)

    def read(self, model: keras.Model, lprefix: str, tprefix: str,
             in_keys: list[str] | None) -> tuple[list[str], list[str]]:
        view = _functional_view(model)
        cfg = view.get_config()
        ops = {op.name: op for op in view.operations}

        def key(hist: tuple) -> str:
            return f"{tprefix}{hist[0]}:{hist[1]}:{hist[2]}"

        inputs = [key(tuple(h)) for h in _as_list_of_refs(cfg["input_layers"])]
        outputs = [key(tuple(h)) for h in _as_list_of_refs(cfg["output_layers"])]
        for k, t in zip(inputs, view.inputs, strict=True):
            self.shapes.setdefault(k, self.shape(t.shape))
        for k, t in zip(outputs, view.outputs, strict=True):
            self.shapes.setdefault(k, self.shape(t.shape))
        if in_keys is not None:
            if len(in_keys) != len(inputs):
                raise KerasGraphError(f"nested model {model.name} is called with "
                                      f"{len(in_keys)} inputs but has {len(inputs)}")
            for inner, outer in zip(inputs, in_keys, strict=True):
                self.alias[inner] = outer
        for entry in cfg["layers"]:
            name = entry.get("name") or entry["config"]["name"]
            obj = ops.get(name)
            if entry["class_name"] == "InputLayer":
                if in_keys is None:
                    k0 = key((name, 0, 0))
                    self.raw.append(Node(-1, lprefix + name, obj, "InputLayer",
                                         entry.get("module", ""), entry["config"], [], [],
                                         [k0]))
                continue
            for k, call in enumerate(entry.get("inbound_nodes", [])):
                items: list = []
                _tensor_refs(call.get("args", []), items)
                kw_items: list = []
                _tensor_refs(call.get("kwargs", {}), kw_items)
                args, ins = [], []
                for kind, value, shp in items + [i for i in kw_items if i[0] == "t"]:
                    if kind == "t":
                        tk = key(value)
                        ins.append(tk)
                        args.append(("t", tk))
                        if shp is not None:
                            self.shapes.setdefault(tk, self.shape(shp))
                    else:
                        args.append(("c", value))
                out_key = key((name, k, 0))
                if isinstance(obj, keras.Model):
                    self.models.setdefault(f"{lprefix}{name}", (obj, list(ins)))
                    sub_out_prefix = f"{tprefix}{name}@{k}/"
                    sub_ins, sub_outs = self.read(obj, f"{lprefix}{name}/", sub_out_prefix, ins)
                    for t, inner in enumerate(sub_outs):
                        self.alias[key((name, k, t))] = inner
                    continue
                path = lprefix + name
                self.layers[path] = obj
                self.raw.append(Node(-1, path, obj, entry["class_name"],
                                     entry.get("module", ""), entry["config"], args, ins,
                                     [out_key]))
        return inputs, outputs


def _as_list_of_refs(value: Any) -> list:
    """``input_layers`` is a ref [name, node, tensor] or a (nested) list of them."""
    if isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str) \
            and isinstance(value[1], int):
        return [value]
    out: list = []
    for v in value:
        out.extend(_as_list_of_refs(v))
    return out


def read_structure(model: keras.Model, batch: int = 1) -> ModelStructure:
    """Nodes of ``model`` in topological order with shapes (batch dim set to ``batch``)."""
    check_model(model)
    r = _Reader(batch)
    inputs, outputs = r.read(model, "", "", None)
    # resolve aliases, find how many outputs each call has
    n_out: dict[str, int] = {}
    for node in r.raw:
        node.inputs = [r.resolve(k) for k in node.inputs]
        node.args = [("t", r.resolve(v)) if kind == "t" else (kind, v) for kind, v in node.args]
    outputs = [r.resolve(k) for k in outputs]
    for k in [k for n in r.raw for k in n.inputs] + outputs:
        base, t = k.rsplit(":", 1)
        n_out[base] = max(n_out.get(base, 1), int(t) + 1)
    for k in list(r.shapes):
        rk = r.resolve(k)
        if rk != k:
            r.shapes.setdefault(rk, r.shapes[k])
    for node in r.raw:
        base = node.outputs[0].rsplit(":", 1)[0]
        node.outputs = [f"{base}:{t}" for t in range(n_out.get(base, 1))]
    # topological order (a shared layer's second call may come after later layers)
    produced: dict[str, int] = {}
    for i, node in enumerate(r.raw):
        for k in node.outputs:
            produced[k] = i
    done = [False] * len(r.raw)
    order: list[Node] = []
    available: set[str] = set()
    progress = True
    while progress and len(order) < len(r.raw):
        progress = False
        for i, node in enumerate(r.raw):
            if done[i] or any(k not in available for k in node.inputs if k in produced):
                continue
            done[i] = True
            progress = True
            node.index = len(order)
            order.append(node)
            available.update(node.outputs)
    if len(order) != len(r.raw):
        raise KerasGraphError("the model's graph has a cycle or a dangling input")
    for node in order:
        node.in_shapes = [r.shapes.get(k) for k in node.inputs]
        node.out_shapes = [r.shapes.get(k) for k in node.outputs]
    models = {p: (obj, [r.resolve(k) for k in ins]) for p, (obj, ins) in r.models.items()}
    return ModelStructure(order, [r.resolve(k) for k in inputs], outputs, r.shapes, r.layers,
                          models)


def has_unknown_dims(st: ModelStructure) -> bool:
    return any(s is not None and any(d is None for d in s) for s in st.shapes.values())


def spec_shape(input_spec: Any) -> tuple[int, ...]:
    """Shape of a tf.TensorSpec / KerasTensor / array / tuple, batch None -> 1."""
    shape = getattr(input_spec, "shape", input_spec)
    try:
        dims = [None if d is None else int(d) for d in shape]
    except TypeError as exc:
        raise TypeError(
            "Expected input_spec to be a tf.TensorSpec((1, 28, 28, 1), tf.float32), an array "
            f"or a shape tuple. Received: input_spec={input_spec!r}"
        ) from exc
    if not dims:
        raise ValueError(f"Expected an input shape with a batch dim. Received: {input_spec!r}")
    if dims[0] is None:
        dims[0] = 1
    if any(d is None or d < 1 for d in dims):
        raise ValueError(f"Expected input_spec with known positive dims (batch may be None). "
                         f"Received: shape={tuple(dims)}")
    return tuple(dims)


def structure_at(model: keras.Model, input_spec: Any) -> ModelStructure:
    """The structure with every shape concrete at ``input_spec`` (checked against the model)."""
    shape = spec_shape(input_spec)
    check_model(model)
    if len(model.inputs) != 1:
        raise KerasGraphError(f"Only single-input models are supported; {model.name} has "
                              f"{len(model.inputs)} inputs.")
    declared = tuple(model.inputs[0].shape)
    if len(declared) != len(shape) or any(
        d is not None and d != s for d, s in zip(declared[1:], shape[1:], strict=False)
    ):
        raise ValueError(
            f"Expected input_spec to match the model input {declared}. Received: "
            f"input_spec shape={shape}"
        )
    st = read_structure(model, shape[0])
    if has_unknown_dims(st):
        # A fully convolutional model (None spatial dims): read a clone built at the spec.
        dtype = getattr(getattr(input_spec, "dtype", None), "name", None) or "float32"
        clone = keras.models.clone_model(
            model, input_tensors=keras.Input(batch_shape=shape, dtype=dtype)
        )
        st = read_structure(clone, shape[0])
        orig = read_structure(model, shape[0])  # weights live in the original
        st.layers = orig.layers
        st.models = {p: (orig.models[p][0], ins) for p, (_, ins) in st.models.items()}
    return st


def weight_items(layer: Any) -> list[tuple[str, Any]]:
    """(unique name, variable) of a layer's weights; a repeated name gets ``#i`` appended."""
    weights = list(getattr(layer, "weights", None) or [])
    names = [v.name for v in weights]
    return [(n if names.count(n) == 1 else f"{n}#{i}", v)
            for i, (n, v) in enumerate(zip(names, weights, strict=True))]


def resolve_layer(model: keras.Model, path: str) -> Any:
    """The layer object at ``outer/inner`` in ``model`` (or a clone of it)."""
    obj: Any = model
    for part in path.split("/"):
        found = None
        for op in getattr(obj, "operations", None) or obj.layers:
            if op.name == part:
                found = op
                break
        if found is None:
            raise KeyError(f"no layer {path!r} in model {model.name!r}")
        obj = found
    return obj


# -- channel classes ---------------------------------------------------------------------------
def _along(lst: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    axis %= ndim
    return lst.reshape([-1 if d == axis else 1 for d in range(ndim)])


class _Barrier(Exception):
    """Raised by a rule that cannot follow channels through a layer."""


@dataclass
class ChannelwiseRule:
    """A custom layer that scales each channel (output = input's channels, same shape).

    ``weights`` maps a weight name to the axis of that weight that holds the channels;
    ``size_key`` is the config entry holding the channel count (edited in the slim model).
    """

    weights: dict[str, int]
    size_key: str | None = None


_CHANNELWISE: dict[str, ChannelwiseRule] = {
    "LayerScale": ChannelwiseRule({"gamma": 0}, "projection_dim"),  # keras.applications ConvNeXt
}


def register_channelwise_layer(class_name: str, weights: dict[str, int],
                               size_key: str | None = None) -> None:
    """Teach the pruner a per-channel custom layer, e.g. ConvNeXt's ``LayerScale``.

    ``register_channelwise_layer("LayerScale", {"gamma": 0}, "projection_dim")``: its output
    carries the input's channels, ``gamma`` is sliced along axis 0, and the slim model's layer
    gets ``projection_dim`` = kept channels.
    """
    _CHANNELWISE[class_name] = ChannelwiseRule(dict(weights), size_key)


@dataclass
class KerasCapture:
    """The core's channel graph plus the Keras-side facts needed to apply plans."""

    graph: ChannelGraph
    structure: ModelStructure
    weight_keys: dict[str, tuple[str, str]]  # param key -> (layer path, weight name)
    # path -> (config key, param key, axis, divisor): config[key] = kept along axis // divisor
    size_edits: dict[str, list[tuple[str, str, int, int]]]
    reshapes: dict[str, tuple[np.ndarray, tuple]]  # path -> (output classes, output shape)
    nested_inputs: dict[str, list[tuple[np.ndarray, tuple]]]  # nested model -> its inputs
    excluded: list[str]
    input_shape: tuple[int, ...]
    notes: list[str] = field(default_factory=list)


_PASS = {
    "Activation", "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization", "Identity", "Masking", "Softmax",
}
_SPATIAL = {
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D",
    "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D",
    "MaxPool1D", "MaxPool2D", "MaxPool3D", "AvgPool1D", "AvgPool2D", "AvgPool3D",
}
_GLOBAL = {
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "GlobalAvgPool1D",
    "GlobalAvgPool2D", "GlobalAvgPool3D", "GlobalMaxPool1D", "GlobalMaxPool2D",
    "GlobalMaxPool3D",
}
_MERGE = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
_CONV = {"Conv1D", "Conv2D", "Conv3D", "Convolution1D", "Convolution2D", "Convolution3D"}
_CONV_T = {"Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "Convolution2DTranspose",
           "Convolution3DTranspose"}
_DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
_SEPARABLE = {"SeparableConv1D", "SeparableConv2D", "SeparableConvolution1D",
              "SeparableConvolution2D"}
_OPS_ELEMENTWISE = {"Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum",
                    "Power", "FloorDivide", "Where"}
_OPS_UNARY = {"Relu", "Relu6", "Sigmoid", "HardSigmoid", "Silu", "Swish", "HardSilu",
              "HardSwish", "Gelu", "Tanh", "Elu", "Selu", "LeakyRelu", "Softplus", "Exp", "Abs",
              "Negative", "Sqrt", "Square", "Cast", "Clip", "Log", "Mish", "Erf", "Copy",
              "Round", "Floor", "Ceil", "Reciprocal", "Sign"}
_SPANNING_ACTIVATIONS = {"softmax", "log_softmax"}


def _activation_name(config: dict) -> str:
    act = config.get("activation")
    if isinstance(act, dict):
        act = act.get("config", {}).get("name") or act.get("class_name")
    return str(act or "linear").lower()


def _channel_axis(config: dict, ndim: int) -> int:
    return 1 if config.get("data_format") == "channels_first" else ndim - 1


_DIGEST_DROP = ("name", "trainable", "dtype", "build_config", "seed")


def _digest_config(config: dict) -> str:
    clean = {
        k: v for k, v in config.items()
        if k not in _DIGEST_DROP and not k.endswith(("_initializer", "_regularizer",
                                                     "_constraint"))
    }
    return json.dumps(clean, sort_keys=True, default=str)


class _Walker:
    def __init__(self, st: ModelStructure, excluded: set[str]) -> None:
        self.st = st
        self.b = ChannelGraphBuilder()
        self.vals: dict[str, Val] = {}
        self.excluded = excluded
        self.weight_keys: dict[str, tuple[str, str]] = {}
        self.param_shapes: dict[str, tuple[int, ...]] = {}
        self.buffer_shapes: dict[str, tuple[int, ...]] = {}
        self.size_edits: dict[str, list[tuple[str, str, int, int]]] = {}
        self.reshapes: dict[str, tuple[np.ndarray, tuple]] = {}
        self.unknown_with_weights: list[tuple[str, str, np.ndarray]] = []
        self.digest: list[str] = []
        self.total_macs = 0
        self.deferred: list[tuple[np.ndarray, str]] = []
        self.handlers: dict[str, Callable[[Node, list[Val]], list[Val]]] = {
            **{c: self._conv for c in _CONV}, **{c: self._conv_t for c in _CONV_T},
            **{c: self._depthwise for c in _DEPTHWISE},
            **{c: self._separable for c in _SEPARABLE},
            "Dense": self._dense, "BatchNormalization": self._batch_norm,
            "LayerNormalization": self._layer_norm, "PReLU": self._prelu,
            **{c: self._pass for c in _PASS}, **{c: self._spatial for c in _SPATIAL},
            **{c: self._global_pool for c in _GLOBAL}, **{c: self._merge for c in _MERGE},
            "Concatenate": self._concat, "Flatten": self._flatten, "Reshape": self._reshape,
            "Permute": self._permute, "Rescaling": self._rescaling,
        }

    # -- helpers -----------------------------------------------------------------------------
    def fixed_val(self, shape: tuple, reason: str) -> Val:
        cid = self.b.fresh_fixed(1, reason)[0]
        return Val(tuple(shape), np.full([1] * len(shape), cid, dtype=np.int64))

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

    def is_excluded(self, node: Node) -> bool:
        return any(node.path == e or node.path.startswith(e + "/") for e in self.excluded)

    def barrier(self, node: Node, xs: list[Val], reason: str) -> list[Val]:
        where = f"{reason} ({node.class_name} {node.path})"
        for v in xs:
            self.b.fix(v.cls, where)
        return [self.fixed_val(s or (), where) for s in node.out_shapes]

    def out_shape(self, node: Node) -> tuple:
        s = node.out_shapes[0] if node.out_shapes else None
        if s is None:
            raise _Barrier("output shape unknown")
        return s

    # -- walk --------------------------------------------------------------------------------
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
                self.vals[node.outputs[0]] = self.fixed_val(shape, FIXED_INPUT)
                continue
            self.weights(node)  # every weight counts as a parameter (or buffer)
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
            if node.module.startswith("keras.src.ops") or node.module.startswith("keras.ops"):
                return self._op(node, xs)
            handler = self.handlers.get(node.class_name)
            if handler is None and node.class_name in _CHANNELWISE:
                handler = self._channelwise
            if handler is not None:
                return handler(node, xs)
            if node.class_name == "Lambda":
                raise _Barrier("Lambda layer (its code cannot be inspected)")
            if node.class_name == "Normalization":
                raise _Barrier("Normalization layer (per-channel statistics)")
            return self._unknown(node, xs)
        except _Barrier as exc:
            return self.barrier(node, xs, str(exc))

    def _unknown(self, node: Node, xs: list[Val]) -> list[Val]:
        if self.weights(node):
            for v in xs:
                self.unknown_with_weights.append((node.class_name, node.path, v.cls.ravel()))
        return self.barrier(node, xs, f"{NO_RULE} for layer class '{node.class_name}'")

    def _single(self, xs: list[Val]) -> Val:
        if len(xs) != 1:
            raise _Barrier("expected one input tensor")
        return xs[0]

    # -- producers ---------------------------------------------------------------------------
    def _finish_producer(self, node: Node, out_list: np.ndarray) -> None:
        if _activation_name(node.config) in _SPANNING_ACTIVATIONS:  # fixed after the outputs
            self.deferred.append((out_list, f"softmax over the channels of {node.path}"))

    def _conv(self, node: Node, xs: list[Val]) -> list[Val]:
        x = self._single(xs)
        out_shape = self.out_shape(node)
        nd = len(out_shape)
        axis = _channel_axis(node.config, nd)
        in_list = channel_list(x, axis)
        if in_list is None:
            raise _Barrier("convolution input channels depend on position")
        w = self.weights(node)
        kkey, kshape = w["kernel"]
        groups = int(node.config.get("groups", 1) or 1)
        c_in, filters = x.shape[axis], kshape[-1]
        kin, kout = len(kshape) - 2, len(kshape) - 1
        if groups > 1 and groups == c_in:  # depthwise written as a grouped Conv
            mult = filters // groups
            out_list = np.repeat(in_list, mult)
            self.b.unify(self.b.param_axis(kkey, kout, filters, None), out_list)
            self.b.add_slice(ParamSlice(kkey, kout, out_list, role="dw"), node.path)
            self.size_edits[node.path] = [("filters", kkey, kout, 1), ("groups", kkey, kout, mult)]
            depthwise = True
        elif groups > 1:
            raise _Barrier(f"grouped convolution (groups={groups}) is not pruned")
        else:
            out_list = self.b.param_axis(kkey, kout, filters, node.path)
            self.b.unify(self.b.param_axis(kkey, kin, c_in, None), in_list)
            self.b.add_slice(ParamSlice(kkey, kout, out_list, role="out"), node.path)
            self.b.add_slice(ParamSlice(kkey, kin, in_list, role="in"), node.path)
            self.size_edits[node.path] = [("filters", kkey, kout, 1)]
            depthwise = False
        if "bias" in w:
            self.b.add_slice(ParamSlice(w["bias"][0], 0, out_list, role="bias"), node.path)
        full = kmacs.node_macs(node)
        self.total_macs += full
        self.b.mac_ops.append(MacOp(node.path, full, None if depthwise else in_list, out_list,
                                    depthwise=depthwise))
        self._finish_producer(node, out_list)
        return [Val(out_shape, _along(out_list, axis, nd))]

    def _conv_t(self, node: Node, xs: list[Val]) -> list[Val]:
        x = self._single(xs)
        out_shape = self.out_shape(node)
        nd = len(out_shape)
        axis = _channel_axis(node.config, nd)
        in_list = channel_list(x, axis)
        if in_list is None:
            raise _Barrier("convolution input channels depend on position")
        w = self.weights(node)
        kkey, kshape = w["kernel"]  # (*k, filters, in)
        kout, kin = len(kshape) - 2, len(kshape) - 1
        out_list = self.b.param_axis(kkey, kout, kshape[kout], node.path)
        self.b.unify(self.b.param_axis(kkey, kin, kshape[kin], None), in_list)
        self.b.add_slice(ParamSlice(kkey, kout, out_list, role="out"), node.path)
        self.b.add_slice(ParamSlice(kkey, kin, in_list, role="in"), node.path)
        if "bias" in w:
            self.b.add_slice(ParamSlice(w["bias"][0], 0, out_list, role="bias"), node.path)
        self.size_edits[node.path] = [("filters", kkey, kout, 1)]
        full = kmacs.node_macs(node)
        self.total_macs += full
        self.b.mac_ops.append(MacOp(node.path, full, in_list, out_list))
        self._finish_producer(node, out_list)
        return [Val(out_shape, _along(out_list, axis, nd))]

    def _depthwise(self, node: Node, xs: list[Val]) -> list[Val]:
        x = self._single(xs)
        out_shape = self.out_shape(node)
        nd = len(out_shape)
        axis = _channel_axis(node.config, nd)
        in_list = channel_list(x, axis)
        if in_list is None:
            raise _Barrier("depthwise input channels depend on position")
        w = self.weights(node)
        kkey, kshape = w.get("kernel") or w["depthwise_kernel"]  # (*k, in, mult)
        mult = kshape[-1]
        kin = len(kshape) - 2
        # follows its producer (no space of its own: depthwise never leads or links groups)
        self.b.unify(self.b.param_axis(kkey, kin, kshape[kin], None), in_list)
        self.b.add_slice(ParamSlice(kkey, kin, in_list, role="dw"), node.path)
        out_list = np.repeat(in_list, mult)
        if "bias" in w:
            self.b.add_slice(ParamSlice(w["bias"][0], 0, out_list, role="bias"), node.path)
        full = kmacs.node_macs(node)
        self.total_macs += full
        self.b.mac_ops.append(MacOp(node.path, full, None, out_list, depthwise=True))
        self._finish_producer(node, out_list)
        return [Val(out_shape, _along(out_list, axis, nd))]

    def _separable(self, node: Node, xs: list[Val]) -> list[Val]:
        x = self._single(xs)
        out_shape = self.out_shape(node)
        nd = len(out_shape)
        axis = _channel_axis(node.config, nd)
        in_list = channel_list(x, axis)
        if in_list is None:
            raise _Barrier("separable conv input channels depend on position")
        w = self.weights(node)
        dkey, dshape = w["depthwise_kernel"]  # (*k, in, mult)
        pkey, pshape = w["pointwise_kernel"]  # (1.., in*mult, filters)
        mult = dshape[-1]
        din = len(dshape) - 2
        self.b.unify(self.b.param_axis(dkey, din, dshape[din], None), in_list)
        self.b.add_slice(ParamSlice(dkey, din, in_list, role="dw"), node.path)
        mid = np.repeat(in_list, mult)
        pin, pout = len(pshape) - 2, len(pshape) - 1
        out_list = self.b.param_axis(pkey, pout, pshape[pout], node.path)
        self.b.unify(self.b.param_axis(pkey, pin, pshape[pin], None), mid)
        self.b.add_slice(ParamSlice(pkey, pin, mid, role="in"), node.path)
        self.b.add_slice(ParamSlice(pkey, pout, out_list, role="out"), node.path)
        if "bias" in w:
            self.b.add_slice(ParamSlice(w["bias"][0], 0, out_list, role="bias"), node.path)
        self.size_edits[node.path] = [("filters", pkey, pout, 1)]
        dw_macs, pw_macs = kmacs.separable_parts(node)
        self.total_macs += dw_macs + pw_macs
        self.b.mac_ops.append(MacOp(node.path + ":depthwise", dw_macs, None, mid,
                                    depthwise=True))
        self.b.mac_ops.append(MacOp(node.path + ":pointwise", pw_macs, mid, out_list))
        self._finish_producer(node, out_list)
        return [Val(out_shape, _along(out_list, axis, nd))]

    def _dense(self, node: Node, xs: list[Val]) -> list[Val]:
        x = self._single(xs)
        out_shape = self.out_shape(node)
        nd = len(out_shape)
        in_list = channel_list(x, -1)
        if in_list is None:
            raise _Barrier("Dense input features depend on position")
        w = self.weights(node)
        kkey, kshape = w["kernel"]  # (in, units)
        out_list = self.b.param_axis(kkey, 1, kshape[1], node.path)
        self.b.unify(self.b.param_axis(kkey, 0, kshape[0], None), in_list)
        self.b.add_slice(ParamSlice(kkey, 1, out_list, role="out"), node.path)
        self.b.add_slice(ParamSlice(kkey, 0, in_list, role="in"), node.path)
        if "bias" in w:
            self.b.add_slice(ParamSlice(w["bias"][0], 0, out_list, role="bias"), node.path)
        self.size_edits[node.path] = [("units", kkey, 1, 1)]
        full = kmacs.node_macs(node)
        self.total_macs += full
        self.b.mac_ops.append(MacOp(node.path, full, in_list, out_list))
        self._finish_producer(node, out_list)
        return [Val(out_shape, _along(out_list, -1, nd))]

    # -- per-channel layers ------------------------------------------------------------------
    def _per_channel(self, node: Node, x: Val, axis: int, names: dict[str, str]) -> None:
        lst = channel_list(x, axis)
        if lst is None:
            raise _Barrier("per-channel layer whose input channels depend on position")
        w = self.weights(node)
        for name, role in names.items():
            if name in w:
                key, shape = w[name]
                if len(shape) != 1 or shape[0] != len(lst):
                    raise _Barrier(f"weight {name} of shape {shape} does not follow channels")
                self.b.add_slice(ParamSlice(key, 0, lst, role=role), node.path)

    def _batch_norm(self, node: Node, xs: list[Val]) -> list[Val]:
        x = self._single(xs)
        axis = node.config.get("axis", -1)
        if isinstance(axis, (list, tuple)):
            if len(axis) != 1:
                raise _Barrier("BatchNormalization over several axes")
            axis = axis[0]
        axis = int(axis) % len(x.shape)
        self._per_channel(node, x, axis, {"gamma": "norm", "beta": "stat",
                                          "moving_mean": "stat", "moving_variance": "stat"})
        return [Val(x.shape, x.cls)]

    def _layer_norm(self, node: Node, xs: list[Val]) -> list[Val]:
        x = self._single(xs)
        axes = node.config.get("axis", -1)
        axes = [axes] if isinstance(axes, int) else list(axes)
        nd = len(x.shape)
        if {int(a) % nd for a in axes} & set(varying_dims(x.cls)):
            raise _Barrier("LayerNormalization statistics span the channels")
        return [Val(x.shape, x.cls)]

    def _prelu(self, node: Node, xs: list[Val]) -> list[Val]:
        x = self._single(xs)
        w = self.weights(node)
        key, shape = w["alpha"]  # input shape without batch, shared axes set to 1
        for d in varying_dims(x.cls):
            if d == 0:
                continue
            if shape[d - 1] > 1:
                lst = channel_list(x, d)
                if lst is None:
                    raise _Barrier("PReLU over position-dependent channels")
                self.b.add_slice(ParamSlice(key, d - 1, lst, role="other"), node.path)
        return [Val(x.shape, x.cls)]

    def _channelwise(self, node: Node, xs: list[Val]) -> list[Val]:
        x = self._single(xs)
        rule = _CHANNELWISE[node.class_name]
        out_shape = self.out_shape(node)
        if tuple(out_shape) != tuple(x.shape):
            raise _Barrier("channel-wise layer that changes the shape")
        axis = len(x.shape) - 1
        lst = channel_list(x, axis)
        if lst is None:
            raise _Barrier("channel-wise layer over position-dependent channels")
        w = self.weights(node)
        for name, dim in rule.weights.items():
            if name not in w and len(w) == 1:
                name = next(iter(w))  # e.g. ConvNeXt's LayerScale names its weight "variable"
            if name not in w:
                raise _Barrier(f"channel-wise layer without weight {name!r}")
            key, shape = w[name]
            self.b.add_slice(ParamSlice(key, dim, lst, role="other"), node.path)
            if rule.size_key:
                self.size_edits[node.path] = [(rule.size_key, key, dim, 1)]
        return [Val(x.shape, x.cls)]

    # -- structure-preserving layers ---------------------------------------------------------
    def _pass(self, node: Node, xs: list[Val]) -> list[Val]:
        x = self._single(xs)
        shape = self.out_shape(node)
        if tuple(shape) != tuple(x.shape):
            raise _Barrier("shape-changing element-wise layer")
        spanning = node.class_name == "Softmax" or (
            node.class_name == "Activation"
            and _activation_name(node.config) in _SPANNING_ACTIVATIONS)
        if spanning:
            axes = node.config.get("axis", -1)
            axes = [axes] if isinstance(axes, int) else list(axes)
            if {int(a) % len(shape) for a in axes} & set(varying_dims(x.cls)):
                raise _Barrier("softmax across channels")
        return [Val(shape, x.cls)]

    def _spatial(self, node: Node, xs: list[Val]) -> list[Val]:
        x = self._single(xs)
        shape = self.out_shape(node)
        nd = len(shape)
        axis = _channel_axis(node.config, nd)
        if len(shape) != len(x.shape) or shape[axis] != x.shape[axis] or shape[0] != x.shape[0]:
            raise _Barrier("spatial layer that changes channels")
        if any(d not in (axis,) for d in varying_dims(x.cls)):
            raise _Barrier("spatial layer over positions that carry channels")
        return [Val(shape, x.cls)]

    def _global_pool(self, node: Node, xs: list[Val]) -> list[Val]:
        x = self._single(xs)
        shape = self.out_shape(node)
        nd = len(x.shape)
        axis = _channel_axis(node.config, nd)
        if any(d != axis for d in varying_dims(x.cls)):
            raise _Barrier("global pooling over positions that carry channels")
        lst = channel_list(x, axis)
        if len(shape) == nd:
            return [Val(shape, x.cls)]
        return [Val(shape, lst.reshape([1] * (len(shape) - 1) + [-1]))]

    def _rescaling(self, node: Node, xs: list[Val]) -> list[Val]:
        for key in ("scale", "offset"):
            value = node.config.get(key, 0)
            if not isinstance(value, (int, float)):
                raise _Barrier("Rescaling with per-channel values")
        return self._pass(node, xs)

    def _elementwise(self, node: Node, xs: list[Val], shape: tuple) -> list[Val]:
        nd = len(shape)

        def expand(v: Val) -> Val:
            pad = nd - len(v.shape)
            return Val((1,) * pad + tuple(v.shape), v.cls.reshape((1,) * pad + v.cls.shape))

        tensors = [expand(v) for v in xs]
        full = [v for v in tensors if tuple(v.shape) == tuple(shape)]
        if not full:
            raise _Barrier("element-wise merge without a full-shape operand")
        ref = full[0]
        for v in full[1:]:
            self.b.unify(ref.cls, v.cls)
        ref_vary = set(varying_dims(ref.cls))
        for v in tensors:
            if any(v is f for f in full):
                continue
            bdims = {d for d in range(nd) if v.shape[d] == 1 and shape[d] > 1}
            if bdims & ref_vary:
                self.b.fix(v.cls, f"broadcast against channels in {node.path}")
            else:
                self.b.unify(ref.cls, v.cls)
        return [Val(tuple(shape), ref.cls)]

    def _merge(self, node: Node, xs: list[Val]) -> list[Val]:
        return self._elementwise(node, xs, self.out_shape(node))

    def _op(self, node: Node, xs: list[Val]) -> list[Val]:
        shape = self.out_shape(node)
        name = node.class_name
        if name in _OPS_ELEMENTWISE:
            consts = [v for kind, v in node.args if kind == "c"]
            if any(not isinstance(c, (int, float, type(None), bool)) for c in consts):
                raise _Barrier(f"op {name} with array constants")
            return self._elementwise(node, xs, shape)
        if name in _OPS_UNARY and len(xs) == 1 and tuple(xs[0].shape) == tuple(shape):
            return [Val(shape, xs[0].cls)]
        raise _Barrier(f"op '{name}' that may mix channels")

    def _concat(self, node: Node, xs: list[Val]) -> list[Val]:
        shape = self.out_shape(node)
        nd = len(shape)
        dim = int(node.config.get("axis", -1)) % nd
        parts = []
        for v in xs:
            target = [v.shape[d] if d == dim else max(p.cls.shape[d] for p in xs)
                      for d in range(nd)]
            parts.append(np.broadcast_to(v.cls, target))
        return [Val(shape, compress(np.concatenate(parts, axis=dim)))]

    def _flatten(self, node: Node, xs: list[Val]) -> list[Val]:
        x = self._single(xs)
        shape = self.out_shape(node)
        cls = np.broadcast_to(x.cls, x.shape)
        if node.config.get("data_format") == "channels_first" and cls.ndim > 2:
            cls = np.moveaxis(cls, 1, -1)
        return [Val(shape, compress(np.ascontiguousarray(cls).reshape(shape)))]

    def _reshape(self, node: Node, xs: list[Val]) -> list[Val]:
        """Flatten-like merges and unit dims only; a reshape that splits channels is a barrier."""
        x = self._single(xs)
        shape = self.out_shape(node)
        vary = varying_dims(x.cls)
        if not vary:
            return [Val(shape, np.full([1] * len(shape), x.cls.ravel()[0], dtype=np.int64))]
        a = [(d, s) for d, s in enumerate(x.shape) if s != 1]
        b = [(d, s) for d, s in enumerate(shape) if s != 1]
        i = j = 0
        while i < len(a) or j < len(b):
            gi, gj = [a[i][0]] if i < len(a) else [], [b[j][0]] if j < len(b) else []
            pa = a[i][1] if i < len(a) else 1
            pb = b[j][1] if j < len(b) else 1
            i, j = i + 1, j + 1
            while pa != pb:
                if pa < pb and i < len(a):
                    gi.append(a[i][0])
                    pa *= a[i][1]
                    i += 1
                elif pb < pa and j < len(b):
                    gj.append(b[j][0])
                    pb *= b[j][1]
                    j += 1
                else:
                    raise _Barrier("reshape whose sizes do not line up")
            gv = [d for d in gi if d in vary]
            if gv and (len(gv) != 1 or len(gj) != 1):
                raise _Barrier("reshape that splits or mixes channel dims")
        cls = np.ascontiguousarray(np.broadcast_to(x.cls, x.shape)).reshape(shape)
        cls = compress(cls)
        self.reshapes[node.path] = (cls, tuple(shape))
        return [Val(shape, cls)]

    def _permute(self, node: Node, xs: list[Val]) -> list[Val]:
        x = self._single(xs)
        dims = [0] + [int(d) for d in node.config["dims"]]
        return [Val(self.out_shape(node), np.transpose(x.cls, dims))]


def resolve_excludes(st: ModelStructure, excludes: Iterable[object] | None) -> set[str]:
    """Layer paths from names or layer objects; an unknown name is an error with hints."""
    if not excludes:
        return set()
    if isinstance(excludes, (str, bytes)) or not isinstance(excludes, Iterable):
        excludes = [excludes]
    by_id = {id(obj): path for path, obj in st.layers.items()}
    prefixes = {p.rsplit("/", i)[0] for p in st.layers for i in range(p.count("/") + 1)}
    out = set()
    for e in excludes:
        if isinstance(e, str):
            if e not in prefixes:
                close = difflib.get_close_matches(e, sorted(prefixes), n=3)
                raise ValueError(
                    f"Expected excludes to name layers of the model. Received: {e!r}"
                    + (f"; did you mean one of {close}?" if close else "")
                )
            out.add(e)
        elif id(e) in by_id:
            out.add(by_id[id(e)])
        else:
            raise ValueError(
                f"Expected excludes to hold layer names or layers of this model. Received: {e!r}"
            )
    return out


def capture(model: keras.Model, input_spec: Any,
            excludes: Iterable[object] | None = None) -> KerasCapture:
    """Read ``model`` (never mutated) at ``input_spec`` and build its channel graph."""
    st = structure_at(model, input_spec)
    excluded = resolve_excludes(st, excludes)
    walker = _Walker(st, excluded)
    walker.run()
    graph = walker.b.build(walker.param_shapes, walker.buffer_shapes, walker.total_macs,
                           walker.digest)
    _check_unknown(graph, walker.unknown_with_weights)
    nested = {path: [(walker.vals[k].cls, walker.vals[k].shape) for k in ins]
              for path, (_, ins) in st.models.items()}
    return KerasCapture(graph, st, walker.weight_keys, walker.size_edits, walker.reshapes,
                        nested, sorted(excluded), spec_shape(input_spec))


def _check_unknown(graph: ChannelGraph, records: list[tuple[str, str, np.ndarray]]) -> None:
    for cls_name, path, classes in records:
        for r in np.unique(graph.uf.roots(classes)):
            gid = graph.root_group.get(int(r))
            if gid is None:
                continue
            g = graph.groups[gid]
            if g.fix_reasons and all(NO_RULE in why for why in g.fix_reasons):
                raise UnsupportedLayerError(
                    f"Layer '{path}' ({cls_name}) holds weights and receives the channels of "
                    f"group '{g.name}' ({g.num_channels} channels), but there is no rule for "
                    f"pruning a {cls_name}. Pass excludes=['{path}'] (the channels reaching it "
                    "then stay unpruned), or, for a layer that only scales each channel, "
                    "register it with uif_explorer.keras.register_channelwise_layer(...)."
                )


def digest_weights(model: keras.Model) -> str:
    """SHA-256 (16 hex) of the float32 values of every weight, in the model's order."""
    h = hashlib.sha256()
    for v in model.weights:
        h.update(str(v.path).encode())
        a = np.asarray(keras.ops.convert_to_numpy(v))
        if np.issubdtype(a.dtype, np.floating):
            a = a.astype(np.float32)
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]

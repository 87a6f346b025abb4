"""Read a Functional or Sequential Keras model's public structure as nodes in topological order.

The graph comes from ``model.get_config()`` (layer configs and ``inbound_nodes`` with each
input tensor's shape and ``keras_history``), ``model.operations`` for the layer objects and
their weights, ``model.inputs`` / ``model.outputs``. A Sequential model (or a nested one) is read
through ``keras.Model(seq.inputs, seq.outputs)``, which lists the same layers with their
connections; nested models are expanded in place, their layers named ``outer/inner``.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

BUFFER_NAMES = {"moving_mean", "moving_variance", "mean", "variance", "count"}


class KerasGraphError(RuntimeError):
    """The model cannot be read as a graph (subclassed, unbuilt, wrong input_spec...)."""



# -- reading the structure -------------------------------------------------------------------
@dataclass
class Node:
    """One call of one layer (or Keras op) in topological order."""

    index: int
    path: str  # "conv2d", or "outer/inner" inside a nested model
    layer: Any  # the keras Layer / Operation object
    class_name: str
    module: str  # "" for a class defined in a script or notebook (``__main__``)
    config: dict
    args: list  # flattened positional arguments: ("t", tensor key) or ("c", constant)
    inputs: list[str]  # tensor keys, in argument order
    outputs: list[str]
    in_shapes: list[tuple] = field(default_factory=list)
    out_shapes: list[tuple | None] = field(default_factory=list)

    @property
    def is_op(self) -> bool:
        """A Keras op (``x + 3``, ``ops.mean``) rather than a layer: its class names (``Add``)
        overlap with layer names, so ops have rules of their own."""
        return self.module.startswith(("keras.src.ops", "keras.ops"))


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
                                         entry.get("module") or "", entry["config"], [], [],
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
                                     entry.get("module") or "", entry["config"], args, ins,
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

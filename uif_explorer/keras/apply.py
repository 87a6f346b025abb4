"""Apply a pruning plan to a Keras model: sparse (masked clone) or slim (rebuilt smaller).

Both start from a clone; the user's model is never touched. Every pruned weight gets one
boolean keep-vector per pruned axis, so the sparse model zeroes everything outside
``np.ix_(*keeps)`` and the slim model keeps exactly ``w[np.ix_(*keeps)]``: one mechanism,
hence slim == sparse by design.

The sparse model keeps its masks as *constraints on the variables* (``variable.constraint``),
which every Keras optimizer applies after each update, so ``compile()`` + ``fit()`` keep the
pruned channels exactly zero with no extra work; constraints are not weights, so
``save_weights()`` of the sparse model loads into the original model.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from uif_explorer.core.plan import PruningPlan
from uif_explorer.keras.graph import KerasCapture
from uif_explorer.keras.structure import resolve_layer, weight_items


class MaskConstraint(keras.constraints.Constraint):
    """Multiply a weight by a fixed 0/1 mask after every optimizer update."""

    def __init__(self, mask: np.ndarray) -> None:
        self.mask = np.asarray(mask)

    def __call__(self, w: Any) -> Any:
        # a fresh constant per call: a cached tensor would belong to one traced graph only
        return keras.ops.multiply(w, keras.ops.convert_to_tensor(self.mask, dtype=w.dtype))

    def get_config(self) -> dict:
        return {}  # masks live in the spec, not in saved models


def tensor_keeps(cap: KerasCapture, plan: PruningPlan) -> dict[str, dict[int, np.ndarray]]:
    """Per pruned weight: axis -> boolean keep vector (only weights that lose something)."""
    removed = plan.removed_roots(cap.graph)
    out: dict[str, dict[int, np.ndarray]] = {}
    for sl in cap.graph.slices:
        keep = ~removed[cap.graph.uf.roots(sl.classes)]
        axes = out.setdefault(sl.param, {})
        axes[sl.dim] = axes[sl.dim] & keep if sl.dim in axes else keep
    return {k: v for k, v in out.items() if any(not keep.all() for keep in v.values())}


def full_mask(shape: tuple[int, ...], axes: dict[int, np.ndarray]) -> np.ndarray:
    mask = np.ones(shape, dtype=bool)
    for dim, keep in axes.items():
        view = [1] * len(shape)
        view[dim] = shape[dim]
        mask &= keep.reshape(view)
    return mask


def slim_array(a: np.ndarray, axes: dict[int, np.ndarray]) -> np.ndarray:
    index = [np.flatnonzero(axes[d]) if d in axes else np.arange(a.shape[d])
             for d in range(a.ndim)]
    return np.ascontiguousarray(a[np.ix_(*index)])


def _variables(model: keras.Model, cap: KerasCapture) -> dict[str, Any]:
    """Param key -> variable of ``model`` (the original or a clone with the same names)."""
    out = {}
    for key, (path, wname) in cap.weight_keys.items():
        for name, v in weight_items(resolve_layer(model, path)):
            if name == wname:
                out[key] = v
                break
    return out


def copy_model(model: keras.Model) -> keras.Model:
    """An independent clone with the same layer names and weight values."""
    # an explicit clone_function keeps Functional subclasses on the graph-cloning path
    clone = keras.models.clone_model(
        model, clone_function=lambda layer: layer.__class__.from_config(layer.get_config()))
    clone.set_weights(model.get_weights())
    return clone


class MaskedCopy:
    """One clone of the model whose masks change per evaluation (analysis, search)."""

    def __init__(self, model: keras.Model, cap: KerasCapture) -> None:
        self.cap = cap
        self.model = copy_model(model)
        self.base = model.get_weights()
        self.vars = _variables(self.model, cap)
        self._constrained: list[Any] = []

    def apply(self, plan: PruningPlan | None) -> keras.Model:
        self.model.set_weights(self.base)
        for v in self._constrained:
            v.constraint = None
        self._constrained = []
        if plan is not None:
            self._constrained = mask_variables(self.vars, tensor_keeps(self.cap, plan))
        return self.model


def mask_variables(variables: dict[str, Any], keeps: dict[str, dict[int, np.ndarray]]) -> list:
    """Zero the pruned entries and pin them there with constraints; returns the variables."""
    touched = []
    for key, axes in keeps.items():
        v = variables[key]
        mask = full_mask(tuple(v.shape), axes)
        value = keras.ops.convert_to_numpy(v)
        v.assign(np.where(mask, value, np.zeros_like(value)))
        if v.trainable:
            v.constraint = MaskConstraint(mask.astype(value.dtype))
            touched.append(v)
    return touched


def make_sparse(model: keras.Model, cap: KerasCapture, plan: PruningPlan) -> keras.Model:
    """A clone with pruned channels zeroed that stay zero through ``fit()``."""
    sparse = copy_model(model)
    mask_variables(_variables(sparse, cap), tensor_keeps(cap, plan))
    return sparse


def slim_shape(cap: KerasCapture, cls: np.ndarray, shape: tuple, removed: np.ndarray) -> tuple:
    """A tensor's shape in the slim model: kept positions along each channel-carrying dim."""
    full = np.broadcast_to(cls, shape)
    out = list(shape)
    for d in range(1, len(shape)):
        if cls.shape[d] <= 1:
            continue
        idx = [0] * len(shape)
        idx[d] = slice(None)
        out[d] = int((~removed[cap.graph.uf.roots(full[tuple(idx)])]).sum())
    return tuple(out)


def kept(cap: KerasCapture, classes: np.ndarray, removed: np.ndarray) -> int:
    """How many positions of a class list the plan keeps."""
    return int((~removed[cap.graph.uf.roots(np.asarray(classes))]).sum())


def slim_config(cap: KerasCapture, path: str, config: dict, removed: np.ndarray) -> dict:
    """``config`` of the layer at ``path`` after its rules' updates (filters, units...)."""
    for edit in cap.resizes.get(path, ()):
        new = edit.update(config, kept(cap, edit.in_classes, removed),
                          kept(cap, edit.out_classes, removed))
        if isinstance(new, dict):  # an update may return a new config instead of editing
            config = new
    return config


def make_slim(model: keras.Model, cap: KerasCapture, plan: PruningPlan) -> keras.Model:
    """A smaller model: edited configs via ``clone_model``, then the kept weights copied."""
    keeps = tensor_keeps(cap, plan)
    removed = plan.removed_roots(cap.graph)
    path_of = {id(obj): path for path, obj in cap.structure.layers.items()}
    model_path = {id(obj): path for path, (obj, _) in cap.structure.models.items()}

    def clone_function(layer: Any) -> Any:
        if isinstance(layer, keras.Model):  # a nested model: its input may be narrower now
            path = model_path.get(id(layer))
            if isinstance(layer, keras.Sequential):
                return keras.Sequential([clone_function(lay) for lay in layer.layers],
                                        name=layer.name, trainable=layer.trainable)
            inputs = [keras.Input(batch_shape=(None, *slim_shape(cap, c, s, removed)[1:]),
                                  dtype=t.dtype)
                      for (c, s), t in zip(cap.nested_inputs[path], layer.inputs, strict=True)]
            return keras.models.clone_model(
                layer, input_tensors=inputs[0] if len(inputs) == 1 else inputs,
                clone_function=clone_function)
        config = layer.get_config()
        path = path_of.get(id(layer))
        if path is not None:
            config = slim_config(cap, path, config, removed)
        return layer.__class__.from_config(config)

    slim = keras.models.clone_model(model, clone_function=clone_function)
    done = set()
    for path, layer in cap.structure.layers.items():
        if path in done or not getattr(layer, "weights", None):
            continue
        done.add(path)
        new = resolve_layer(slim, path)
        arrays = []
        for (name, v), nv in zip(weight_items(layer), new.weights, strict=True):
            a = keras.ops.convert_to_numpy(v)
            key = f"{path}/{name}"
            if key in keeps:
                a = slim_array(a, keeps[key])
            if tuple(a.shape) != tuple(nv.shape):
                raise RuntimeError(
                    f"Slim model: weight {key} was sliced to {a.shape} but the rebuilt layer "
                    f"expects {tuple(nv.shape)}; this layer's config was not adapted."
                )
            arrays.append(a)
        new.set_weights(arrays)
    return slim


def sparse_weights_from_slim(slim: keras.Model, model: keras.Model, cap: KerasCapture,
                             plan: PruningPlan) -> list[np.ndarray]:
    """The slim model's weights scattered back to the original shapes (zeros elsewhere)."""
    keeps = tensor_keeps(cap, plan)
    by_key = {}
    for path, layer in cap.structure.layers.items():
        new = resolve_layer(slim, path) if getattr(layer, "weights", None) else None
        for (name, v), nv in zip(weight_items(layer), new.weights if new is not None else [],
                                 strict=False):
            key = f"{path}/{name}"
            a = keras.ops.convert_to_numpy(nv)
            if key in keeps:
                full = np.zeros(tuple(v.shape), dtype=a.dtype)
                full[np.ix_(*[np.flatnonzero(keeps[key][d]) if d in keeps[key]
                              else np.arange(full.shape[d]) for d in range(full.ndim)])] = a
                a = full
            by_key[id(v)] = a
    return [by_key.get(id(v), keras.ops.convert_to_numpy(v)) for v in model.weights]

"""Measure a Keras model's latency table: each conv / dense layer alone, over its channel counts.

The Keras counterpart of :mod:`uif_explorer.torch.latency`, through the same
:mod:`uif_explorer.core.latency`: every counted layer (Conv1D/2D/3D and their transposes,
DepthwiseConv, Dense) is rebuilt from its config with other ``filters`` / ``units`` / input
channels, called eagerly at the input shape it sees in the model (``layer(x)``) and timed at
the counts of :func:`~uif_explorer.core.latency.count_grid`; the whole model is timed as
``model(x, training=False)`` at full width and as a half-width slim model (the overhead split).
SeparableConv parts are left to the overhead (they cannot be rebuilt alone from one config).

Runtime: ``"keras"`` (eager calls, the backend Keras runs on). TFLite is not timed per layer:
converting one model per channel count costs seconds each, far more than the table is worth;
time the exported ``.tflite`` of the slim model instead (the Export page does).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from uif_explorer.core.latency import (
    DEFAULT_POINTS,
    LatencyModel,
    LatencyTable,
    cached_table,
    machine_fingerprint,
)
from uif_explorer.core.latency_measure import (
    OpShape,
    Progress,
    add_probe,
    best_seconds,
    measure_curves,
)
from uif_explorer.core.pruner import BasePruner
from uif_explorer.keras.structure import Node, spec_shape

KERAS_RUNTIMES = ("keras",)
_CHANNEL_KEYS = ("filters", "units")  # the config key holding a layer's output channels


def keras_threads() -> int:
    """Intra-op threads TensorFlow runs with (its default, 0, means one per logical CPU)."""
    try:
        import tensorflow as tf

        return int(tf.config.threading.get_intra_op_parallelism_threads()) or (
            os.cpu_count() or 1)
    except ImportError:  # another Keras backend: its own default
        return os.cpu_count() or 1


def keras_fingerprint(runtime: str = "keras") -> dict[str, Any]:
    """The machine plus Keras' version, backend (and its version) and thread count."""
    if runtime not in KERAS_RUNTIMES:
        raise ValueError(f"Expected runtime in {KERAS_RUNTIMES} for a Keras model. Received: "
                         f"runtime={runtime!r}")
    versions: dict[str, Any] = {"keras": keras.__version__, "backend": keras.backend.backend(),
                                "threads": keras_threads()}
    if versions["backend"] == "tensorflow":
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    return machine_fingerprint(**versions)


def _nodes_by_path(pruner: BasePruner) -> dict[str, Node]:
    nodes: dict[str, Node] = {}
    for node in pruner.capture.structure.nodes:
        if node.in_shapes and node.out_shapes and node.out_shapes[0] is not None:
            nodes.setdefault(node.path, node)
    return nodes


def _axis(node: Node) -> int:
    return 1 if node.config.get("data_format") == "channels_first" else -1


def _shape_of(node: Node, min_time: float) -> OpShape | None:
    """How to time ``node``'s layer alone, or None when it has no channel key to change."""
    cfg = dict(node.layer.get_config())
    cfg.pop("name", None)
    axis = _axis(node)
    in_shape = tuple(node.in_shapes[0])
    c_in, c_out = int(in_shape[axis]), int(node.out_shapes[0][axis])
    key = next((k for k in _CHANNEL_KEYS if k in cfg), None)
    depthwise = "depth_multiplier" in cfg and key is None
    if key is None and not depthwise:
        return None
    groups = int(cfg.get("groups", 1) or 1)
    cls = type(node.layer)

    def timed(i: int, o: int, g: int) -> float:
        c = dict(cfg)
        if key is not None:
            c[key] = o
        if "groups" in c:
            c["groups"] = g
        layer = cls.from_config(c)
        shape = list(in_shape)
        shape[axis] = i
        x = keras.ops.convert_to_tensor(np.random.default_rng(0).standard_normal(
            shape).astype("float32"))
        layer(x)  # build
        return best_seconds(lambda: layer(x), min_time)

    size = int(np.prod(node.out_shapes[0]))
    mult = int(cfg.get("depth_multiplier", 1) or 1) if depthwise else 1
    return OpShape(c_in, c_out, c_in if depthwise else groups, size, timed, mult)


def measure_keras_table(pruner: BasePruner, model: keras.Model, input_spec: Any,
                        runtime: str = "keras", max_points: int = DEFAULT_POINTS,
                        min_time: float = 0.01, progress: Progress | None = None
                        ) -> LatencyTable:
    """Time every counted layer of ``pruner``'s graph (a :class:`KerasPruner`) over its
    channel counts, and the whole model; ``model`` is not modified."""
    fingerprint = keras_fingerprint(runtime)
    nodes = _nodes_by_path(pruner)

    def shape_of(op) -> OpShape | None:
        node = nodes.get(op.name)
        return None if node is None else _shape_of(node, min_time)

    curves = measure_curves(pruner.graph, pruner.cost, shape_of, max_points, progress)
    shape = spec_shape(input_spec)
    x = keras.ops.convert_to_tensor(np.random.default_rng(0).standard_normal(
        shape).astype("float32"))

    def time_model(m: keras.Model) -> float:
        return best_seconds(lambda: m(x, training=False), min_time * 5)

    table = LatencyTable(runtime, fingerprint, pruner.graph.graph_digest(), time_model(model),
                         curves, shape[0])
    add_probe(table, pruner, time_model)
    return table


def keras_latency_model(pruner: BasePruner, model: keras.Model, input_spec: Any,
                        path: str | Path, runtime: str = "keras",
                        progress: Progress | None = None, **measure: Any) -> LatencyModel:
    """The latency model of ``pruner``'s graph, from the table at ``path`` when it was
    measured on this machine, Keras version, thread count and graph; else measured now and
    saved there (atomically)."""
    table = cached_table(
        path, keras_fingerprint(runtime), pruner.graph.graph_digest(), runtime,
        lambda: measure_keras_table(pruner, model, input_spec, runtime, progress=progress,
                                    **measure))
    return LatencyModel(table, pruner.cost)

"""Measure a PyTorch model's latency table: each conv / linear alone, over its channel counts.

Each counted op of the captured graph is rebuilt as a single layer with the same kernel,
stride, padding, dilation, groups and input size, then timed at the input and output counts
of :func:`~uif_explorer.core.latency.count_grid` (the fastest of at least 10 single calls,
fixed threads): in PyTorch eager, or in ONNX Runtime as a one-node ONNX graph
(no export per width). The whole model is timed the same way, at full width and as a
uniformly half-width slim model; what the ops do not explain is the overhead. Tables are
cached in the workspace per machine and model.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from uif_explorer.core.latency import (
    DEFAULT_POINTS,
    RUNTIMES,
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
    calibrate_to_measured,
    measure_curves,
)
from uif_explorer.core.pruner import BasePruner

LatencyProgress = Progress  # (done, total, op name)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def runtime_fingerprint(runtime: str, threads: int) -> dict[str, Any]:
    """The machine plus this runtime's versions and thread count."""
    check_runtime(runtime)
    versions: dict[str, Any] = {"torch": torch.__version__, "threads": int(threads)}
    if runtime == "onnxruntime":
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    return machine_fingerprint(**versions)


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ValueError(f"Expected runtime in {RUNTIMES}. Received: runtime={runtime!r}")
    return runtime


def seconds(fn: Callable[[], object], threads: int, min_time: float,
            min_calls: int = 10) -> float:
    """Seconds per call with ``threads`` intra-op threads: the fastest of at least
    ``min_calls`` single calls (:func:`~uif_explorer.core.latency_measure.best_seconds`).
    Single calls, not ``torch.utils.benchmark`` blocks, because on a loaded machine a block of
    one slow call spoils the minimum: per-layer times differed by up to 1000x that way."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return best_seconds(fn, min_time, min_calls)
    finally:
        torch.set_num_threads(old)


def _input_shapes(model: nn.Module, names: list[str], inputs: Any
                  ) -> tuple[dict[str, tuple], dict[str, int]]:
    """Input shape and output size of each named module, from one forward pass with hooks."""
    modules = dict(model.named_modules())
    shapes: dict[str, tuple] = {}
    sizes: dict[str, int] = {}

    def hook(name: str) -> Callable:
        def record(_m: nn.Module, args: tuple, out: object) -> None:
            shapes.setdefault(name, tuple(args[0].shape))
            sizes.setdefault(name, int(out.numel()) if torch.is_tensor(out) else 0)
        return record

    hooks = [modules[n].register_forward_hook(hook(n)) for n in set(names)
             if isinstance(modules.get(n), (*_CONVS, nn.Linear))]
    try:
        with torch.inference_mode():
            model(*inputs) if isinstance(inputs, tuple) else model(inputs)
    finally:
        for h in hooks:
            h.remove()
    return shapes, sizes


def _layer(mod: nn.Module, c_in: int, c_out: int, groups: int) -> nn.Module:
    if isinstance(mod, nn.Linear):
        return nn.Linear(c_in, c_out, bias=mod.bias is not None)
    return type(mod)(c_in, c_out, mod.kernel_size, mod.stride, mod.padding, mod.dilation,
                     groups, bias=mod.bias is not None)


def _onnx_runner(layer: nn.Module, x: torch.Tensor, threads: int) -> Callable[[], object]:
    """A one-node ONNX Runtime session computing ``layer`` (Conv, or MatMul + Add)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = layer.weight.detach().numpy()
    inits = []
    if isinstance(layer, nn.Linear):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w.T), "w"))
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y" if layer.bias is None else "m"])]
    else:
        inits.append(numpy_helper.from_array(w, "w"))
        pad = layer.padding
        attrs: dict[str, Any] = {"kernel_shape": list(layer.kernel_size),
                                 "strides": list(layer.stride), "group": layer.groups,
                                 "dilations": list(layer.dilation)}
        if isinstance(pad, str):
            attrs["auto_pad"] = "SAME_UPPER" if pad == "same" else "VALID"
        else:
            attrs["pads"] = list(pad) * 2
        nodes = [helper.make_node("Conv", ["x", "w"], ["y" if layer.bias is None else "m"],
                                  **attrs)]
    if layer.bias is not None:
        shape = [-1] + [1] * (x.dim() - 2) if not isinstance(layer, nn.Linear) else [-1]
        b = layer.bias.detach().numpy().reshape(shape)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(b), "b"))
        nodes.append(helper.make_node("Add", ["m", "b"], ["y"]))
    graph = helper.make_graph(
        nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 9
    sess = ort.InferenceSession(onnx_model.SerializeToString(), _ort_options(threads),
                                providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    return lambda: sess.run(None, feed)


def _ort_options(threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return opts


def _caller(layer: nn.Module, shape: tuple, c_in: int, runtime: str,
            threads: int) -> Callable[[], object]:
    x = torch.randn(*shape[:-1], c_in) if isinstance(layer, nn.Linear) else torch.randn(
        shape[0], c_in, *shape[2:])
    layer = layer.eval()
    if runtime == "onnxruntime":
        return _onnx_runner(layer, x, threads)

    def call() -> object:
        with torch.inference_mode():
            return layer(x)
    return call


def _whole_model(model: nn.Module, inputs: Any, runtime: str, threads: int):
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    if runtime == "eager":
        def call() -> object:
            with torch.inference_mode():
                return model(*args)
        return call
    import onnxruntime as ort

    path = Path(tempfile.mkdtemp()) / "model.onnx"
    torch.onnx.export(model, args, str(path), dynamo=True, external_data=False)
    sess = ort.InferenceSession(str(path), _ort_options(threads),
                                providers=["CPUExecutionProvider"])
    feed = {i.name: a.detach().numpy() for i, a in zip(sess.get_inputs(), args, strict=False)}
    return lambda: sess.run(None, feed)


def measure_latency_table(pruner: BasePruner, model: nn.Module, inputs: Any,
                          runtime: str = "eager", threads: int | None = None,
                          max_points: int = DEFAULT_POINTS, min_time: float = 0.01,
                          progress: LatencyProgress | None = None) -> LatencyTable:
    """Time every conv / linear of ``pruner``'s graph over its channel counts (see module
    doc); other counted ops are left to the overhead. ``model`` is not modified."""
    check_runtime(runtime)
    threads = int(threads or torch.get_num_threads())
    model = model.eval()
    modules = dict(model.named_modules())
    shapes, sizes = _input_shapes(model, [op.name for op in pruner.graph.mac_ops], inputs)

    def shape_of(op) -> OpShape | None:
        mod, shape = modules.get(op.name), shapes.get(op.name)
        if mod is None or shape is None or not isinstance(mod, (*_CONVS, nn.Linear)):
            return None
        linear = isinstance(mod, nn.Linear)

        def timed(i: int, o: int, g: int) -> float:
            return seconds(_caller(_layer(mod, i, o, g), shape, i, runtime, threads),
                           threads, min_time)

        return OpShape(shape[-1] if linear else shape[1],
                       mod.out_features if linear else mod.out_channels,
                       1 if linear else mod.groups, sizes.get(op.name, 0), timed)

    curves = measure_curves(pruner.graph, pruner.cost, shape_of, max_points, progress)

    def time_model(m: nn.Module) -> float:
        return seconds(_whole_model(m.eval(), inputs, runtime, threads), threads, min_time * 5)

    batch = int(shapes[next(iter(shapes))][0]) if shapes else 1
    table = LatencyTable(runtime, runtime_fingerprint(runtime, threads),
                         pruner.graph.graph_digest(), time_model(model), curves, batch)
    add_probe(table, pruner, time_model)
    return table


def latency_model(pruner: BasePruner, model: nn.Module, inputs: Any, path: str | Path,
                  runtime: str = "eager", threads: int | None = None,
                  progress: LatencyProgress | None = None, **measure: Any) -> LatencyModel:
    """The latency model of ``pruner``'s graph, from the table at ``path`` when it was
    measured on this machine, runtime and graph, else measured now and saved there."""
    threads = int(threads or torch.get_num_threads())
    table = cached_table(
        path, runtime_fingerprint(runtime, threads), pruner.graph.graph_digest(), runtime,
        lambda: measure_latency_table(pruner, model, inputs, runtime, threads,
                                      progress=progress, **measure))
    return LatencyModel(table, pruner.cost)


def measured_removal(model: nn.Module, slim: nn.Module, inputs: Any, runtime: str = "eager",
                     threads: int | None = None, repeats: int = 5) -> float:
    """``1 - t_slim / t_original``: both whole models timed interleaved (original, slim,
    original, ...) so machine load hits them alike; the fastest of ``repeats`` blocks each."""
    threads = int(threads or torch.get_num_threads())
    calls = [_whole_model(m.eval(), inputs, runtime, threads) for m in (model, slim)]
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, call in enumerate(calls):
            best[i] = min(best[i], seconds(call, threads, 0.0, min_calls=1))
    return 1.0 - best[1] / best[0]


def plan_to_measured(pruner: BasePruner, lat: LatencyModel, model: nn.Module, inputs: Any,
                     ratio: float, *, runtime: str = "eager", threads: int | None = None,
                     rounds: int = 4, repeats: int = 3, criterion: str = "l1",
                     channel_divisible: int = 2):
    """A latency-targeted plan corrected on whole-model timings of its slim model
    (:func:`~uif_explorer.core.latency_measure.calibrate_to_measured`): ``(plan, steps)``.
    Each round builds and times one slim model: ``rounds`` times a few model runs."""
    def plan_at(r: float):
        return pruner.plan_for_removal(r, criterion, channel_divisible, latency=lat,
                                       strict=False)

    def measure(plan) -> float:
        return measured_removal(model, pruner.slim_model(plan), inputs, runtime, threads,
                                repeats)

    return calibrate_to_measured(plan_at, lat.removal, measure, ratio, rounds=rounds)

"""The Keras side of ``services.backends.Backend``: the only service module importing Keras
(imported by ``backend_for('keras')`` alone, so a PyTorch session never loads TensorFlow)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from uif_explorer.services.backends import ExportFormat, cpu_note, fp32_beside
from uif_explorer.services.eval_data import LABEL_FREE_NAME


def summarize_keras_model(model: Any, input_shape: Sequence[int]) -> Any:
    """The Keras counterpart of ``summarize_torch_model``: MACs of conv/dense layers (the
    same definition), params in the PyTorch sense, one row per layer with params or MACs."""
    import pandas as pd

    from uif_explorer.keras.graph import resolve_layer
    from uif_explorer.keras.macs import count_params, macs_table
    from uif_explorer.services.summary import TABLE_COLUMNS, ModelSummary, shape_label

    rows = macs_table(model, tuple(input_shape))
    seen = {r["layer"] for r in rows}
    table = []
    for r in rows:
        try:
            params = count_params(resolve_layer(model, r["layer"]))
        except Exception:  # noqa: BLE001 - a nested path the resolver does not know
            params = 0
        table.append({"name": r["layer"], "type": r["type"], "params": params,
                      "macs": int(r["macs"]), "output_shape": shape_label(r["output_shape"])})
    for layer in model.layers:
        if layer.name in seen:
            continue
        params = count_params(layer)
        if params:
            shape = getattr(getattr(layer, "output", None), "shape", None)
            table.append({"name": layer.name, "type": type(layer).__name__, "params": params,
                          "macs": 0, "output_shape": shape_label(
                              (1, *shape[1:]) if shape is not None else None)})
    macs = int(sum(r["macs"] for r in table))
    df = pd.DataFrame(table, columns=[c for c in TABLE_COLUMNS if c != "macs_share"])
    df["macs_share"] = df["macs"].astype(float) * 100.0 / max(macs, 1)
    df = df.loc[:, list(TABLE_COLUMNS)].reset_index(drop=True)
    return ModelSummary(params=count_params(model), macs=macs,
                        input_shape=(tuple(int(d) for d in input_shape),), table=df)


def keras_agreement(reference: Any) -> Callable[..., float]:
    """A label-free ``eval_fn(model, x)`` for Keras: % of argmax predictions equal to the
    reference model's (computed once per input array)."""
    cache: dict[int, np.ndarray] = {}

    def predict(model: Any, x: np.ndarray) -> np.ndarray:
        out = [keras.ops.convert_to_numpy(model(x[i:i + 256], training=False)).argmax(-1)
               for i in range(0, len(x), 256)]
        return np.concatenate(out)

    def eval_fn(model: Any, x: np.ndarray) -> float:
        key = id(x)
        if key not in cache:
            cache[key] = predict(reference, x)
        return 100.0 * float((predict(model, x) == cache[key]).mean())

    eval_fn.score_name = LABEL_FREE_NAME  # type: ignore[attr-defined]
    return eval_fn


class KerasBackend:
    """Keras 3 models: ``IterativePruningRunner`` (one runner for both methods), ``.keras``
    export. Runners never mutate their model (they work on masked copies)."""

    framework = "keras"
    title = "Keras"
    export_formats = (ExportFormat("keras", "Slim Keras model (.keras)", ".keras"),)
    file_formats = ("keras",)
    int8_format = ExportFormat("int8_tflite", "int8 (TFLite)", ".int8.tflite",
                               make_label="Make int8 (TFLite)")
    finetune_lr = 0.001
    finetune_help = "Adam; the masks keep pruned channels at zero"

    def example_input(self, shape: Sequence[int]) -> np.ndarray:
        return np.zeros(tuple(shape), dtype="float32")

    def private_copy(self, model: Any) -> Any:
        return model  # the runners clone; Keras models do not deep-copy reliably

    def make_runner(self, model: Any, shape: Sequence[int], method: str, workdir: Path,
                    name: str | None, excludes: Sequence[str] | None = None) -> Any:
        from uif_explorer.keras import IterativePruningRunner

        return IterativePruningRunner(model, tuple(shape), workdir=workdir, name=name,
                                      excludes=list(excludes) if excludes else None)

    def scoring(self, model: Any, x: np.ndarray, y: np.ndarray | None, calib_x: np.ndarray,
                batch_fixed: bool = False) -> tuple[Any, tuple, Any, tuple]:
        """``(eval_fn, eval_args, calibration_fn, calib_args)`` over numpy arrays: top-1 with
        labels, else the label-free agreement with ``model``; adaptive BN on ``calib_x``."""
        from uif_explorer.keras.evaluation import adaptive_bn_calibration, top1_accuracy

        if y is not None:
            return top1_accuracy, (x, y), adaptive_bn_calibration, (calib_x,)
        return keras_agreement(model), (x,), adaptive_bn_calibration, (calib_x,)

    def groups_table(self, model: Any, shape: Sequence[int],
                     excludes: Sequence[str] | None = None) -> Any:
        from uif_explorer.keras import KerasPruner

        return KerasPruner(model, tuple(shape), list(excludes or [])).groups_table()

    def summarize(self, model: Any, shape: Sequence[int]) -> Any:
        return summarize_keras_model(model, shape)

    def prune(self, runner: Any, ratio: float, mode: str, channel_divisible: int = 2,
              target: str = "macs") -> Any:
        return runner.prune(ratio=ratio, mode=mode, channel_divisible=channel_divisible,
                            target=target)

    def search(self, runner: Any, ev: Any, num_subnet: int, ratio: float, forced: bool,
               progress: Any = None, executor: Any = None, target: str = "macs"
               ) -> dict[str, Any]:
        if executor not in (None, "inline"):
            raise ValueError("Expected the inline executor for a Keras model (Keras runners "
                             f"score in this process). Received: executor={executor!r}")
        return runner.search(calibration_fn=ev.calib_fn, calib_args=ev.calib_args,
                             eval_fn=ev.eval_fn, eval_args=ev.eval_args, num_subnet=num_subnet,
                             ratio=ratio, forced=forced, progress=progress, target=target)

    def build_candidate(self, runner: Any, ratio: float, index: int | None,
                        mode: str = "slim", target: str = "macs") -> Any:
        return runner.prune_candidate(ratio, index=index, mode=mode, target=target)

    def slim_of(self, pruned: Any, original: Any, runner: Any) -> Any:
        """A slim model is returned; a sparse one is sliced with its own (possibly fine-tuned)
        weights: the spec's plan applied to a capture of the sparse model, so what the user
        fine-tuned is what they export (the runner's original weights would undo it)."""
        if pruned.kind != "sparse":
            return pruned.model
        from uif_explorer.keras.runner import KerasPruner

        pr = KerasPruner(pruned.model, runner.input_spec, runner.excludes)
        return pr.slim_model(runner._spec_plan(pr, pruned.spec_path))

    def out_widths(self, model: Any) -> dict[str, int]:
        """Output channels of every Conv / Dense layer, by layer name."""
        widths = {}
        for layer in model.layers:
            config = layer.get_config()
            for key in ("filters", "units"):
                if isinstance(config.get(key), int):
                    widths[layer.name] = int(config[key])
        return widths

    def cost(self, model: Any, shape: Sequence[int]) -> tuple[float, float]:
        from uif_explorer.keras.macs import count_macs, count_params

        return count_macs(model, tuple(shape)) / 1e6, count_params(model) / 1e6

    def forward(self, model: Any, inputs: Any) -> Any:
        return model(inputs, training=False)

    def export_bytes(self, model: Any, inputs: Any, fmt: str, workdir: Path) -> bytes:
        return self.export_file(model, inputs, fmt, Path(workdir) / "exports" / "slim.keras"
                                ).read_bytes()

    def export_file(self, model: Any, inputs: Any, fmt: str, path: Path) -> Path:
        from uif_explorer.keras.export import export_keras

        if fmt != "keras":
            raise ValueError(f"Expected format 'keras' for a Keras model. Received: {fmt!r}")
        return export_keras(model, Path(path))

    def export_checked(self, model: Any, inputs: Any, fmt: str,
                       workdir: Path) -> dict[str, Any]:
        raise ValueError(f"Expected a format made on demand; Keras models have none. "
                         f"Received: {fmt!r}")

    def export_note(self, ofa_subnet: bool) -> str:
        return ("The .keras file loads with keras.saving.load_model(path, safe_mode=True): it "
                "holds only built-in Keras layers with fewer filters.")

    def quantize_int8(self, model: Any, inputs: Any, calibration: Any, path: Path,
                      check_x: Any = None, check_y: Any = None) -> Any:
        """TFLite int8 at ``path`` (``keras.quantize``), checked on ``check_x`` against the
        Keras model before it is written; returns the ``QuantizationReport``."""
        from uif_explorer.keras.quantize import quantize_tflite

        return quantize_tflite(model, calibration, path, check_data=check_x,  # fp32 kept
                               check_labels=check_y,  # beside it: the Export page times both
                               fp32_path=fp32_beside(path))

    def file_call(self, path: Path, inputs: Any) -> Callable[[], Any]:
        """One invoke of a ``.tflite`` file in TensorFlow's TFLite interpreter (CPU)."""
        from uif_explorer.keras.quantize import tflite_interpreter

        interp = tflite_interpreter(path)
        index = interp.get_input_details()[0]["index"]
        x = np.ascontiguousarray(np.asarray(inputs), np.float32)

        def call() -> None:
            interp.set_tensor(index, x)
            interp.invoke()

        return call

    def file_note(self) -> str:
        import tensorflow as tf

        return f"TFLite interpreter (TensorFlow {tf.__version__}), CPU"

    def slim_state(self, model: Any) -> dict[str, Any]:
        return {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}

    def finetune(self, pruned: Any, original: Any, runner: Any, epochs: int, lr: float,
                 batches: int, data: Callable[[], tuple[Any, Any]] | None = None
                 ) -> Callable[[Any], tuple[Any, Any]]:
        """A fresh sparse copy rebuilt from the spec (Keras models do not deep-copy reliably),
        trained with ``fit()`` (masks keep zeros at zero) on ``data()`` (the user's fine-tuning
        images as ``(x, y)``, read in the job) or the bundled training images."""
        spec_path = pruned.spec_path

        def train(progress: Any) -> tuple[Any, Any]:
            from uif_explorer import data as bundled
            from uif_explorer.keras.finetune import fine_tune

            model = runner.prune(spec_path=spec_path, mode="sparse")
            x, y = data() if data is not None else bundled.numpy_dataset(
                "train", limit=batches * 128)
            return model, fine_tune(model, x, y, epochs=epochs, lr=lr, batch_size=128,
                                    max_batches=batches, progress=progress)

        return train

    def machine_note(self) -> str:
        return cpu_note(f"Keras {keras.__version__} ({keras.backend.backend()} backend)")


KERAS = KerasBackend()

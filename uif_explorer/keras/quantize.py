"""The int8 handoff for Keras models: (slim) model -> TFLite int8, checked against Keras.

TensorFlow's own converter does the quantization (``tf.lite.TFLiteConverter`` with a
representative dataset): int8 weights (per output channel for convolutions, the converter's
default) and int8 activations whose ranges come from calibration images, restricted to the
integer builtin ops so no layer silently stays in float. Inputs and outputs stay float32, so
the file takes the same images as the Keras model and callers need no scale/zero-point. The
file is run in ``tf.lite.Interpreter`` on images and compared with the Keras model before it is
written (atomically), see :class:`~uif_explorer.core.quantization.QuantizationReport`.

    from uif_explorer.keras.quantize import quantize_tflite
    report = quantize_tflite(slim, calib_x, "slim.int8.tflite", check_data=x, check_labels=y)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from uif_explorer.core import quantization as quant
from uif_explorer.io.workspace import atomic_write_bytes

__all__ = ["quantize_tflite", "tflite_interpreter",
           "tflite_outputs", "to_tflite"]


def to_tflite(model: keras.Model, calibration: np.ndarray | None = None) -> bytes:
    """The TFLite flatbuffer of ``model``: fp32 without ``calibration``, int8 with it."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if calibration is not None:
        def representative() -> Iterator[list[np.ndarray]]:
            for i in range(len(calibration)):
                yield [calibration[i:i + 1]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        with warnings.catch_warnings():  # about int8 inputs; ours stay float32
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            return converter.convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises many types
        kind = "int8" if calibration is not None else "fp32"
        raise quant.QuantizationError(
            f"TensorFlow's converter could not make a {kind} TFLite file of "
            f"{model.name}: {type(exc).__name__}: {exc}") from exc


def tflite_interpreter(model: bytes | str | os.PathLike,
                       threads: int | None = None) -> tf.lite.Interpreter:
    """A ready ``tf.lite.Interpreter`` over a flatbuffer (bytes) or a ``.tflite`` path."""
    kwargs = ({"model_content": model} if isinstance(model, bytes)
              else {"model_path": str(model)})
    with warnings.catch_warnings():  # TF points to ai_edge_litert; this one still works
        warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprec")
        interp = tf.lite.Interpreter(**kwargs, num_threads=threads)
    interp.allocate_tensors()
    if len(interp.get_input_details()) != 1:
        raise quant.QuantizationError("Expected a model with one input. Received: "
                                f"{len(interp.get_input_details())} inputs")
    return interp


def tflite_outputs(model: Any, images: np.ndarray, threads: int | None = None) -> np.ndarray:
    """First output of a TFLite model (interpreter, bytes or path), one image at a time."""
    interp = model if hasattr(model, "invoke") else tflite_interpreter(model, threads)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    want = tuple(int(d) for d in inp["shape"][1:])
    if tuple(images.shape[1:]) != want:
        raise ValueError(f"Expected images of shape (N, {', '.join(map(str, want))}) for this "
                         f"model. Received: shape={images.shape}")
    results = []
    for i in range(len(images)):
        interp.set_tensor(inp["index"], np.ascontiguousarray(images[i:i + 1], np.float32))
        interp.invoke()
        results.append(interp.get_tensor(out["index"]).copy())
    return np.concatenate(results)


def quantize_tflite(
    model: keras.Model,
    calibration: Any,
    path: str | os.PathLike,
    *,
    check_data: Any = None,
    check_labels: Any = None,
    fp32_path: str | os.PathLike | None = None,
    calibration_limit: int = quant.CALIBRATION_IMAGES,
    check_limit: int = quant.CHECK_IMAGES,
    tolerance: quant.Tolerance = quant.DEFAULT_TOLERANCE,
    strict: bool = True,
) -> quant.QuantizationReport:
    """Convert ``model`` to an int8 ``.tflite`` at ``path``, checked against the Keras model.

    ``calibration``: images in the model's layout (NHWC array or an iterable of batches), the
    first ``calibration_limit`` used. The check compares the Keras model and the int8 file on
    ``check_data`` (default: the calibration images); labels add an accuracy comparison. The
    fp32 size is that of the fp32 TFLite file (written to ``fp32_path`` when given). With
    ``strict`` a file outside ``tolerance`` raises ``QuantizationError``, nothing written.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a keras.Model. Received: model={type(model).__name__}")
    path = Path(path)
    calib, _ = quant.collect_images(calibration, calibration_limit)
    check_x, check_y = (quant.collect_images(check_data, check_limit, check_labels)
                        if check_data is not None else (calib[:check_limit], None))
    fp32 = to_tflite(model)
    int8 = to_tflite(model, calib)
    reference = np.asarray(model.predict(check_x, batch_size=64, verbose=0))
    agreement = quant.compare_outputs(reference, tflite_outputs(int8, check_x), check_y)
    settings = {"format": "TFLite int8 (float32 input/output)", "per_channel": True,
                "supported_ops": "TFLITE_BUILTINS_INT8", "calibration_images": len(calib),
                "tensorflow": tf.__version__}
    report = quant.QuantizationReport(
        "tflite", str(path), len(fp32), len(int8), agreement, tolerance,
        settings, None if fp32_path is None else str(fp32_path))
    if strict:
        report.raise_if_failed()
    if fp32_path is not None:
        atomic_write_bytes(fp32_path, fp32)
    atomic_write_bytes(path, int8)
    return report

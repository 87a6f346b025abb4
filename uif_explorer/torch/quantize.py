"""The int8 handoff for PyTorch models: (slim) model -> checked fp32 ONNX -> int8 ONNX.

The guide hands pruned models to a quantizer; here that is ONNX Runtime's static quantization,
the well-kept path that runs anywhere ONNX Runtime does: QDQ format (QuantizeLinear /
DequantizeLinear pairs that the CPU provider fuses into integer kernels), int8 weights per
output channel (pruned layers have uneven channel ranges, one scale per tensor would crush the
small ones), uint8 activations whose ranges come from calibration images (MinMax). Weights use
7 bits by default (``reduce_range``): CPUs without VNNI (AVX2-only, most laptops) can overflow
the 16-bit intermediate sums of u8 x s8 products otherwise; it costs little accuracy on the
others. The fp32 ONNX comes from :func:`export_torch` (checked against PyTorch), and the int8
file is checked against it on images before it is written (atomically), see
:class:`~uif_explorer.core.quantization.QuantizationReport`.

    from uif_explorer.torch.quantize import quantize_onnx
    report = quantize_onnx(slim, torch.zeros(1, 1, 28, 28), calib_loader, "slim.int8.onnx",
                           check_data=test_loader)
    print(report.summary())
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from uif_explorer.core import quantization as quant
from uif_explorer.io.workspace import atomic_write_with
from uif_explorer.torch.evaluation import module_modes
from uif_explorer.torch.export import export_torch
from uif_explorer.torch.macs import Inputs

__all__ = ["onnx_outputs", "onnx_session",
           "quantize_onnx", "quantize_onnx_file"]


def onnx_session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """A CPU ``InferenceSession`` (``threads``: intra-op threads; None: ONNX Runtime's choice)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    if len(sess.get_inputs()) != 1:
        raise quant.QuantizationError(f"Expected a model with one input. Received: "
                                f"{len(sess.get_inputs())} inputs in {path}")
    return sess


def _batch_of(sess: Any, images: np.ndarray) -> int:
    """The file's batch size (the export's, fixed) after checking the image shape fits it."""
    shape = sess.get_inputs()[0].shape
    want = [d if isinstance(d, int) else None for d in shape[1:]]
    got = list(images.shape[1:])
    if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got,
                                                                           strict=True)):
        raise ValueError(f"Expected images of shape (N, {', '.join(map(str, shape[1:]))}) for "
                         f"this model. Received: shape={images.shape}")
    batch = shape[0] if isinstance(shape[0], int) else len(images)
    if len(images) < batch:
        raise ValueError(f"Expected at least {batch} images (the model's batch size). "
                         f"Received: {len(images)}")
    return batch


def _chunks(images: np.ndarray, batch: int) -> list[np.ndarray]:
    """Whole batches only (a fixed-batch file cannot take a short last one)."""
    return [images[i:i + batch] for i in range(0, len(images) - batch + 1, batch)]


def onnx_outputs(model: Any, images: np.ndarray, threads: int | None = None) -> np.ndarray:
    """First output of an ONNX file (path or session) on ``images``, batch by batch.

    A file exported at batch size b sees ``len(images) // b`` whole batches; the rest is left.
    """
    sess = model if hasattr(model, "run") else onnx_session(model, threads)
    images = np.ascontiguousarray(images, dtype=np.float32)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x})[0] for x in
                           _chunks(images, _batch_of(sess, images))])


def _reader(name: str, images: np.ndarray, batch: int) -> Any:
    """ONNX Runtime's calibration protocol over an array (one whole batch per call)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _ArrayReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter([{name: x} for x in _chunks(images, batch)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    return _ArrayReader()


def _pre_process(fp32_path: Path, folder: Path) -> tuple[Path, bool]:
    """ONNX Runtime's recommended pre-processing (shape inference, Conv+BN folding) so whole
    fused ops are quantized; a model it cannot handle is quantized as exported."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = folder / "pre.onnx"
    try:
        quant_pre_process(str(fp32_path), str(out))
    except Exception:  # noqa: BLE001 - optional step; quantize_static reports real problems
        return fp32_path, False
    return out, True


def quantize_onnx_file(
    fp32_path: str | os.PathLike,
    calibration: Any,
    path: str | os.PathLike,
    *,
    check_data: Any = None,
    check_labels: Any = None,
    calibration_limit: int = quant.CALIBRATION_IMAGES,
    check_limit: int = quant.CHECK_IMAGES,
    per_channel: bool = True,
    reduce_range: bool = True,
    tolerance: quant.Tolerance = quant.DEFAULT_TOLERANCE,
    strict: bool = True,
) -> quant.QuantizationReport:
    """Quantize an fp32 ONNX file to int8 QDQ at ``path``, checked against the fp32 file.

    ``calibration``: images in the model's layout (array, tensor or DataLoader; labels are
    ignored), the first ``calibration_limit`` used. The check runs both files on
    ``check_data`` (default: the calibration images); labels from its batches or
    ``check_labels`` add an accuracy comparison. With ``strict`` a file outside ``tolerance``
    raises :class:`quant.QuantizationError` and nothing is written; otherwise the report says so.
    """
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    fp32_path = Path(fp32_path)
    if not fp32_path.is_file():
        raise FileNotFoundError(f"Expected an fp32 ONNX file. Received: {fp32_path} (missing)")
    calib, _ = quant.collect_images(calibration, calibration_limit)
    check_x, check_y = (quant.collect_images(check_data, check_limit, check_labels)
                        if check_data is not None else (calib[:check_limit], None))
    fp32_sess = onnx_session(fp32_path)
    batch = _batch_of(fp32_sess, calib)
    fp32_out = onnx_outputs(fp32_sess, check_x)
    if check_y is not None:
        check_y = check_y[: len(fp32_out)]
    settings = {
        "format": "QDQ", "per_channel": per_channel, "reduce_range": reduce_range,
        "weight_type": "QInt8", "activation_type": "QUInt8", "calibrate_method": "MinMax",
        "calibration_images": len(_chunks(calib, batch)) * batch,
        "onnxruntime": onnxruntime.__version__,
    }
    reports: list[quant.QuantizationReport] = []
    with tempfile.TemporaryDirectory(prefix="uif-quant-") as folder:
        source, settings["pre_processed"] = _pre_process(fp32_path, Path(folder))

        def write(tmp: str) -> None:
            try:
                quantize_static(
                    str(source), tmp, _reader(fp32_sess.get_inputs()[0].name, calib, batch),
                    quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
            except Exception as exc:  # noqa: BLE001 - the quantizer raises many types
                raise quant.QuantizationError(f"ONNX Runtime could not quantize {fp32_path.name}: "
                                        f"{type(exc).__name__}: {exc}") from exc
            agreement = quant.compare_outputs(fp32_out, onnx_outputs(tmp, check_x), check_y)
            report = quant.QuantizationReport(
                "onnxruntime", str(path), fp32_path.stat().st_size, os.path.getsize(tmp),
                agreement, tolerance, settings, str(fp32_path))
            if strict:
                report.raise_if_failed()
            reports.append(report)

        atomic_write_with(path, write, suffix=".onnx")
    return reports[0]


def quantize_onnx(
    model: nn.Module,
    inputs: Inputs,
    calibration: Any,
    path: str | os.PathLike,
    *,
    fp32_path: str | os.PathLike | None = None,
    **options: Any,
) -> quant.QuantizationReport:
    """Export ``model`` (fp32 ONNX, checked against PyTorch) and quantize it to ``path``.

    ``inputs`` is the input signature (its batch size is the files' batch size). The fp32
    file is kept at ``fp32_path`` when given. ``options`` are those of
    :func:`quantize_onnx_file`. The model's train/eval flags are left as they were.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected a torch.nn.Module. Received: model={type(model).__name__}")
    with tempfile.TemporaryDirectory(prefix="uif-quant-") as folder:
        target = Path(fp32_path) if fp32_path is not None else Path(folder) / "fp32.onnx"
        with module_modes(model, False):
            export_torch(model, inputs, "onnx", target)
        report = quantize_onnx_file(target, calibration, path, **options)
    if fp32_path is None:
        return replace(report, fp32_path=None)
    return report

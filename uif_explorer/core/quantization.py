"""The int8 handoff's report, framework-neutral: fp32 vs int8 size and output agreement.

A quantized file is only worth handing over if it computes what the fp32 model computes. Both
backends (ONNX Runtime for PyTorch models, TFLite for Keras models) run the fp32 model and the
int8 file on the same images and fill one :class:`QuantizationReport`; the checks against a
stated :class:`Tolerance` live here so the two backends cannot drift apart. numpy only: no
torch, TensorFlow or streamlit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


class QuantizationError(RuntimeError):
    """The model could not be quantized, or the int8 file disagrees with the fp32 model."""


@dataclass(frozen=True)
class Tolerance:
    """How far the int8 file may drift from the fp32 model before it is rejected.

    ``min_top1_agreement``: fraction of images on which both pick the same class.
    ``max_accuracy_drop``: percentage points of top-1 accuracy lost (checked only with labels).
    ``max_abs_diff``: largest elementwise output difference (None: reported, not checked;
    logits have no common scale, so a fixed bound would reject good files).
    """

    min_top1_agreement: float = 0.95
    max_accuracy_drop: float = 1.5
    max_abs_diff: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_top1_agreement <= 1.0:
            raise ValueError("Expected min_top1_agreement in [0, 1]. Received: "
                             f"min_top1_agreement={self.min_top1_agreement!r}")
        if not self.max_accuracy_drop >= 0:
            raise ValueError("Expected max_accuracy_drop >= 0 (percentage points). Received: "
                             f"max_accuracy_drop={self.max_accuracy_drop!r}")
        if self.max_abs_diff is not None and not self.max_abs_diff >= 0:
            raise ValueError(f"Expected max_abs_diff >= 0 or None. Received: "
                             f"max_abs_diff={self.max_abs_diff!r}")


DEFAULT_TOLERANCE = Tolerance()
CALIBRATION_IMAGES = 200  # images for the int8 calibration (both backends)
CHECK_IMAGES = 200  # images the int8 file is checked on against fp32


@dataclass(frozen=True)
class Agreement:
    """fp32 vs int8 outputs on the same ``images`` (accuracies in percent, with labels only)."""

    images: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    fp32_accuracy: float | None = None
    int8_accuracy: float | None = None

    @property
    def accuracy_drop(self) -> float | None:
        """Points lost by int8 (negative: int8 scored higher); None without labels."""
        if self.fp32_accuracy is None or self.int8_accuracy is None:
            return None
        return self.fp32_accuracy - self.int8_accuracy


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent of (N, classes) outputs against (N,) integer labels."""
    outputs = np.asarray(outputs)
    labels = np.asarray(labels).reshape(-1)
    if outputs.ndim != 2 or len(outputs) != len(labels) or not len(labels):
        raise ValueError(f"Expected (N, classes) outputs and N labels, N > 0. Received: "
                         f"outputs.shape={outputs.shape}, labels.shape={labels.shape}")
    return float(100.0 * np.mean(outputs.argmax(axis=1) == labels))


def compare_outputs(fp32: np.ndarray, int8: np.ndarray,
                    labels: np.ndarray | None = None) -> Agreement:
    """How closely ``int8`` follows ``fp32`` (both (N, classes), same images, same order)."""
    fp32 = np.asarray(fp32, dtype=np.float64)
    int8 = np.asarray(int8, dtype=np.float64)
    if fp32.shape != int8.shape or fp32.ndim != 2 or not len(fp32):
        raise ValueError(f"Expected fp32 and int8 outputs of one (N, classes) shape, N > 0. "
                         f"Received: fp32.shape={fp32.shape}, int8.shape={int8.shape}")
    diff = np.abs(fp32 - int8)
    agree = float(np.mean(fp32.argmax(axis=1) == int8.argmax(axis=1)))
    fp32_acc = int8_acc = None
    if labels is not None:
        labels = np.asarray(labels)[: len(fp32)]
        fp32_acc, int8_acc = accuracy(fp32, labels), accuracy(int8, labels)
    return Agreement(len(fp32), float(diff.max()), float(diff.mean()), agree, fp32_acc, int8_acc)


@dataclass(frozen=True)
class QuantizationReport:
    """One int8 handoff: where the files are, how big, how well int8 follows fp32.

    ``runtime`` is ``"onnxruntime"`` or ``"tflite"``; ``settings`` records how the file was
    made (format, per-channel, calibration images, library versions) so it can be redone.
    """

    runtime: str
    int8_path: str
    fp32_bytes: int
    int8_bytes: int
    agreement: Agreement
    tolerance: Tolerance
    settings: dict[str, Any] = field(default_factory=dict)
    fp32_path: str | None = None

    @property
    def size_ratio(self) -> float:
        """fp32 size / int8 size (4x is the most weights alone can give)."""
        return self.fp32_bytes / max(self.int8_bytes, 1)

    def failures(self) -> list[str]:
        """Each tolerance the int8 file misses, as an "Expected ... Received ..." sentence."""
        a, t = self.agreement, self.tolerance
        out = []
        if a.top1_agreement < t.min_top1_agreement:
            out.append(f"Expected int8 and fp32 to pick the same class on at least "
                       f"{t.min_top1_agreement:.1%} of the images. Received: "
                       f"top1_agreement={a.top1_agreement:.1%} on {a.images} images")
        drop = a.accuracy_drop
        if drop is not None and drop > t.max_accuracy_drop:
            out.append(f"Expected int8 to lose at most {t.max_accuracy_drop:g} accuracy points. "
                       f"Received: fp32 {a.fp32_accuracy:.2f}% -> int8 {a.int8_accuracy:.2f}%")
        if t.max_abs_diff is not None and not a.max_abs_diff <= t.max_abs_diff:
            out.append(f"Expected outputs within {t.max_abs_diff:g} of fp32. Received: "
                       f"max_abs_diff={a.max_abs_diff:.4g}")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    def raise_if_failed(self) -> None:
        """Raise :class:`QuantizationError` naming every missed tolerance and what to try."""
        failures = self.failures()
        if failures:
            raise QuantizationError(
                "The int8 file does not follow the fp32 model: " + "; ".join(failures)
                + ". Try more or more representative calibration images, exclude sensitive "
                "layers, or pass strict=False to keep the file anyway.")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the workspace and the app store this)."""
        data = asdict(self)
        data["size_ratio"] = self.size_ratio
        data["passed"] = self.passed
        data["agreement"]["accuracy_drop"] = self.agreement.accuracy_drop
        return data

    def summary(self) -> str:
        """One line for logs and the CLI."""
        a = self.agreement
        acc = ("" if a.accuracy_drop is None else
               f", accuracy {a.fp32_accuracy:.2f}% -> {a.int8_accuracy:.2f}%")
        return (f"{self.runtime} int8: {self.fp32_bytes / 1e6:.2f} MB -> "
                f"{self.int8_bytes / 1e6:.2f} MB ({self.size_ratio:.1f}x smaller), top-1 "
                f"agreement {a.top1_agreement:.1%} on {a.images} images{acc}, max |diff| "
                f"{a.max_abs_diff:.3g} ({'passed' if self.passed else 'FAILED'})")


def collect_images(data: Any, limit: int | None = None,
                   labels: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 images (and labels when known) from an array, a tensor or a loader of batches.

    ``data`` is one array-like of images (numpy array, CPU tensor), or an iterable of batches,
    each a bare array-like or a ``(images, labels, ...)`` tuple (a DataLoader). Reading stops
    after ``limit`` images, so a large loader costs only what is used.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise ValueError(f"Expected a positive number of images. Received: limit={limit!r}")
    found_labels: list[np.ndarray] | None = None
    if hasattr(data, "shape"):
        images = np.asarray(data, dtype=np.float32)[:limit]
    elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, dict)):
        chunks, found_labels, count = [], [], 0
        for batch in data:
            x, y = (batch[0], batch[1] if len(batch) > 1 else None) \
                if isinstance(batch, (tuple, list)) else (batch, None)
            chunks.append(np.asarray(x, dtype=np.float32))
            if y is not None and found_labels is not None:
                found_labels.append(np.asarray(y).reshape(-1))
            else:
                found_labels = None
            count += len(chunks[-1])
            if limit is not None and count >= limit:
                break
        if not chunks:
            raise ValueError("Expected at least one batch of images. Received: an empty "
                             f"{type(data).__name__}")
        images = np.concatenate(chunks)[:limit]
    else:
        raise TypeError(f"Expected images as an array, a tensor or an iterable of batches. "
                        f"Received: {type(data).__name__}")
    if images.ndim < 2 or not len(images) or not np.isfinite(images).all():
        raise ValueError(f"Expected a non-empty batch of finite images (N, ...). Received: "
                         f"shape={images.shape}")
    if labels is not None:
        return images, np.asarray(labels).reshape(-1)[: len(images)]
    if found_labels:
        return images, np.concatenate(found_labels)[: len(images)]
    return images, None


"""The framework-neutral int8 report: agreement numbers, tolerance checks, image collection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uif_explorer.core.quantization import (
    Agreement,
    QuantizationError,
    QuantizationReport,
    Tolerance,
    collect_images,
    compare_outputs,
)
from uif_explorer.data import numpy_dataset, torch_loader


def test_compare_outputs_counts_agreement_and_accuracy():
    fp32 = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5], [0.2, 0.1]])
    int8 = np.array([[1.9, 1.0], [0.1, 2.9], [0.4, 0.6], [0.2, 0.1]])
    a = compare_outputs(fp32, int8, labels=np.array([0, 1, 0, 1]))
    assert a.images == 4 and a.top1_agreement == 0.75
    assert a.max_abs_diff == pytest.approx(0.6) and a.mean_abs_diff == pytest.approx(1.0 / 8)
    assert (a.fp32_accuracy, a.int8_accuracy, a.accuracy_drop) == (75.0, 50.0, 25.0)
    with pytest.raises(ValueError, match=r"Received: fp32.shape=\(4, 2\), int8.shape=\(3, 2\)"):
        compare_outputs(fp32, int8[:3])


def _report(agreement: Agreement, tolerance: Tolerance = Tolerance()) -> QuantizationReport:
    return QuantizationReport("onnxruntime", "m.int8.onnx", 4000, 1000, agreement, tolerance)


def test_report_names_every_missed_tolerance_and_serialises():
    good = _report(Agreement(200, 0.2, 0.02, 0.99, 92.0, 91.5))
    assert good.passed and good.size_ratio == 4.0
    good.raise_if_failed()
    data = json.loads(json.dumps(good.to_dict()))
    assert data["agreement"]["accuracy_drop"] == 0.5 and data["passed"] is True
    bad = _report(Agreement(200, 3.0, 0.5, 0.90, 92.0, 88.0), Tolerance(max_abs_diff=1.0))
    assert len(bad.failures()) == 3 and "FAILED" in bad.summary()
    with pytest.raises(QuantizationError, match=r"at least 95.0% .*Received: top1_agreement="
                                                r"90.0% on 200 images.*strict=False"):
        bad.raise_if_failed()
    no_labels = _report(Agreement(200, 3.0, 0.5, 0.99))
    assert no_labels.passed and no_labels.agreement.accuracy_drop is None


def test_tolerance_rejects_nonsense():
    with pytest.raises(ValueError, match="min_top1_agreement in \\[0, 1\\]"):
        Tolerance(min_top1_agreement=95)
    with pytest.raises(ValueError, match="max_accuracy_drop >= 0"):
        Tolerance(max_accuracy_drop=-1)


def test_collect_images_from_arrays_and_loaders():
    x, y = numpy_dataset("test", limit=30)
    images, labels = collect_images(x, limit=10, labels=y)
    assert images.shape == (10, 28, 28, 1) and np.array_equal(labels, y[:10])
    images, labels = collect_images(torch_loader("test", limit=100, batch_size=16), limit=40)
    assert images.shape == (40, 1, 28, 28) and images.dtype == np.float32
    assert len(labels) == 40
    images, labels = collect_images([x[:5, ..., 0], x[5:9, ..., 0]])  # bare batches, no labels
    assert images.shape == (9, 28, 28) and labels is None
    with pytest.raises(ValueError, match="Expected at least one batch"):
        collect_images([])
    with pytest.raises(ValueError, match="Received: limit=0"):
        collect_images(x, limit=0)

"""The Keras int8 handoff (issue 16, item 3): sample models -> TFLite int8 files that load in
``tf.lite.Interpreter`` and follow the Keras model on the bundled Fashion-MNIST images.

Tolerance (the defaults, stated in docs/quantization.md): int8 and the Keras model pick the
same class on >= 95 % of 200 bundled test images and int8 loses <= 1.5 accuracy points.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from uif_explorer.core.quantization import QuantizationError, Tolerance
from uif_explorer.data import numpy_dataset
from uif_explorer.keras import (
    IterativePruningRunner,
    adaptive_bn_calibration,
    top1_accuracy,
)
from uif_explorer.keras.quantize import (
    quantize_tflite,
    tflite_interpreter,
    tflite_outputs,
)
from uif_explorer.zoo import load_keras_sample

pytestmark = [pytest.mark.tf, pytest.mark.slow]
CALIB = numpy_dataset("train", limit=200)[0]
X, Y = numpy_dataset("test", limit=200)


def _assert_int8(path) -> None:
    """Float32 in and out, integer kernels inside (nothing silently left in float)."""
    interp = tflite_interpreter(path)
    assert interp.get_input_details()[0]["dtype"] == np.float32
    assert interp.get_output_details()[0]["dtype"] == np.float32
    dtypes = {d["dtype"] for d in interp.get_tensor_details()}
    assert np.int8 in dtypes


@pytest.mark.parametrize("name", ["keras_convnet", "keras_functional"])
def test_sample_int8_follows_keras(name, tmp_path):
    model = load_keras_sample(name)
    weights = [w.copy() for w in model.get_weights()]
    out = tmp_path / f"{name}.int8.tflite"
    report = quantize_tflite(model, CALIB, out, check_data=X, check_labels=Y,
                             fp32_path=tmp_path / f"{name}.tflite")
    _assert_int8(out)
    a = report.agreement
    assert report.passed and a.images == 200 and report.runtime == "tflite"
    assert a.top1_agreement >= 0.95 and a.accuracy_drop <= 1.5 and a.fp32_accuracy > 85
    assert report.int8_bytes == out.stat().st_size
    assert report.fp32_bytes == (tmp_path / f"{name}.tflite").stat().st_size
    assert report.size_ratio > 2.5
    int8_acc = 100 * np.mean(tflite_outputs(out, X).argmax(1) == Y)
    assert int8_acc == pytest.approx(a.int8_accuracy)
    assert all(np.array_equal(w, v) for w, v in zip(weights, model.get_weights(), strict=True))


def test_slim_model_from_the_runner_quantizes(tmp_path):
    """A one-step-pruned slim functional net (50 % of its MACs removed) hands off too."""
    model = load_keras_sample("keras_functional")
    runner = IterativePruningRunner(model, tf.TensorSpec((1, 28, 28, 1), tf.float32),
                                    workdir=tmp_path / ".vai")
    runner.search(calibration_fn=adaptive_bn_calibration, calib_args=(CALIB,),
                  eval_fn=top1_accuracy, eval_args=(CALIB, numpy_dataset("train", limit=200)[1]),
                  num_subnet=2, ratio=0.5)
    slim = runner.prune_candidate(0.5)
    adaptive_bn_calibration(slim, CALIB)
    assert slim.count_params() < model.count_params()
    report = quantize_tflite(slim, CALIB, tmp_path / "slim.int8.tflite", check_data=X,
                             check_labels=Y)
    _assert_int8(tmp_path / "slim.int8.tflite")
    assert report.passed and report.agreement.top1_agreement >= 0.95


def test_out_of_tolerance_raises_and_writes_nothing(tmp_path):
    model = load_keras_sample("keras_convnet")
    with pytest.raises(QuantizationError, match=r"Expected outputs within 1e-06 .*Received: "
                                                r"max_abs_diff="):
        quantize_tflite(model, CALIB[:20], tmp_path / "m.int8.tflite",
                        fp32_path=tmp_path / "m.tflite", tolerance=Tolerance(max_abs_diff=1e-6))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"Expected images of shape \(N, 28, 28, 1\).*"
                                         r"Received: shape=\(4, 1, 28, 28\)"):
        tflite_outputs(tflite_interpreter(_bytes(model)), np.zeros((4, 1, 28, 28), np.float32))
    with pytest.raises(TypeError, match="Expected a keras.Model"):
        quantize_tflite(object(), CALIB, tmp_path / "m.int8.tflite")


def _bytes(model) -> bytes:
    from uif_explorer.keras.quantize import to_tflite

    return to_tflite(model)

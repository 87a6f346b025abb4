"""The Keras runner on the shared loop: the guide's iterative loop (a model named "mnist", a
runner on the sparse model and on the original with the fine-tuned weights loaded, prune(0.5)
without a new analysis), the ratio as an approximate target, calibration in ``ana``.

The guide's MNIST convnet shape, scaled down (8 and 16 filters), on bundled Fashion-MNIST.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from uif_explorer.core.plan import PlanError
from uif_explorer.data import numpy_dataset
from uif_explorer.io.workspace import WorkspaceError, read_json
from uif_explorer.keras import (
    IterativePruningRunner,
    adaptive_bn_calibration,
    top1_accuracy,
)

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def data():
    x_train, y_train = numpy_dataset("train", limit=256)
    x_test, y_test = numpy_dataset("test", limit=128)
    return x_train, y_train, x_test, y_test


def _mnist(name: str | None = "mnist") -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(8, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(16, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(), layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ], **({"name": name} if name else {}))


def _zeroed(model: keras.Model, index: int) -> set[int]:
    w = keras.ops.convert_to_numpy(model.layers[index].kernel)
    return set(np.flatnonzero(np.abs(w).reshape(-1, w.shape[-1]).sum(0) == 0).tolist())


def test_guide_loop_from_the_sparse_model_and_from_loaded_weights(data, tmp_path, monkeypatch,
                                                                  capsys) -> None:
    monkeypatch.chdir(tmp_path)
    x_train, y_train, x_test, y_test = data
    model = _mnist()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    model.fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)
    input_spec = tf.TensorSpec((1, 28, 28, 1), tf.float32)
    runner = IterativePruningRunner(model, input_spec)
    assert runner.name == "mnist"

    def evaluate(model):
        return top1_accuracy(model, x_test, y_test)

    runner.ana(evaluate, ratios=(0.5,))
    sparse_model = runner.prune(ratio=0.2)
    zeroed = _zeroed(sparse_model, 2)
    sparse_model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    sparse_model.fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)
    sparse_model.save_weights("model_sparse_0.2.weights.h5")
    sens_before = Path(".vai/mnist.sens").read_bytes()

    # a runner on the sparse model itself
    capsys.readouterr()
    on_sparse = IterativePruningRunner(sparse_model, input_spec)
    assert on_sparse.name == "mnist"
    half = on_sparse.prune(ratio=0.5)
    assert "reusing the finished analysis" in capsys.readouterr().err
    assert zeroed <= _zeroed(half, 2)

    # the guide's way: the weights loaded into the original model, a new runner
    model.load_weights("model_sparse_0.2.weights.h5")
    runner = IterativePruningRunner(model, input_spec)
    runner.prune(ratio=0.5)
    assert json.loads(Path(".vai/latest_spec").read_text()) == ".vai/mnist_ratio_0.5.spec"
    assert Path(".vai/mnist.sens").read_bytes() == sens_before  # no new analysis
    assert runner.get_slim_model(".vai/mnist_ratio_0.5.spec").layers[2].filters < 16


def test_an_unreachable_exact_ratio_gives_the_closest_plan_with_a_warning(data,
                                                                          tmp_path) -> None:
    x_test, y_test = data[2], data[3]
    runner = IterativePruningRunner(_mnist(None), (1, 28, 28, 1), workdir=tmp_path)
    assert runner.name.startswith("Sequential-")  # Keras' automatic name is not used
    runner.ana(lambda m: top1_accuracy(m, x_test, y_test), ratios=(0.3, 0.6))
    with pytest.warns(UserWarning, match=r"ratio=0.3 is an approximate target") as rec:
        sparse = runner.prune(ratio=0.3)
    achieved = runner.plan(0.3, strict=False).achieved_removal
    assert abs(achieved - 0.3) > 0.01
    assert f"{achieved:.1%}" in str(rec.pop(UserWarning).message)
    assert sparse is not None
    with pytest.raises(PlanError, match="channel_divisible=1"):
        runner.prune(ratio=0.3, strict=True)
    with pytest.raises(PlanError) as info:
        runner.prune(ratio=0.3, strict=True, channel_divisible=1)
    assert "channel_divisible=1" not in str(info.value)


def test_ana_with_calibration_records_its_protocol(data, tmp_path) -> None:
    x_train, x_test, y_test = data[0], data[2], data[3]
    i = keras.Input((28, 28, 1))
    x = layers.Conv2D(8, 3, use_bias=False, name="conv")(i)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(8, 3, name="conv2")(x)
    model = keras.Model(i, layers.Dense(10)(layers.GlobalAveragePooling2D()(x)), name="bn_net")
    runner = IterativePruningRunner(model, (1, 28, 28, 1), workdir=tmp_path)
    with pytest.raises(TypeError, match=r"Expected args to be a tuple.*args=\(val_loader,\)"):
        runner.ana(top1_accuracy, args=x_test)
    assert not list(tmp_path.iterdir())
    sens = runner.ana(top1_accuracy, args=(x_test, y_test), ratios=(0.5,),
                      calibration_fn=adaptive_bn_calibration, calib_args=(x_train, 2))
    assert sens["complete"] and sens["protocol"] == {
        "calibration": "adaptive_bn_calibration", "score": "top1_accuracy",
        "bn_reestimation": True}
    assert read_json(tmp_path / "bn_net.sens")["protocol"]["bn_reestimation"]
    plain = runner.ana(top1_accuracy, args=(x_test, y_test), ratios=(0.5,), forced=True)
    assert plain["protocol"]["calibration"] is None
    with pytest.raises(WorkspaceError, match="No search"):
        runner.prune_candidate(0.3)

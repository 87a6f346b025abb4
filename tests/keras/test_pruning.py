"""The guide's TensorFlow/Keras pruning workflow and the Keras runner's behaviour.

The guide's calls run with its names (``IterativePruningRunner(model, input_spec)``,
``ana(evaluate)``, ``prune(ratio=...)``, ``save_weights`` / ``load_weights``,
``get_slim_model()``) on the sample convnet and the bundled Fashion-MNIST subset, scaled down
(a few hundred images, one short epoch). torch is imported by conftest before TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from uif_explorer.core.estimate import WHOLE_MODEL_RATIOS
from uif_explorer.data import numpy_dataset
from uif_explorer.io.workspace import WorkspaceError, read_json
from uif_explorer.keras import (
    AnalysisError,
    IterativePruningRunner,
    KerasGraphError,
    UnsupportedLayerError,
    adaptive_bn_calibration,
    count_macs,
    export_keras,
    top1_accuracy,
)
from uif_explorer.keras.graph import digest_weights
from uif_explorer.models.keras_models import functional_net, mnist_convnet

pytestmark = pytest.mark.tf
SPEC = (1, 28, 28, 1)
RATIOS = (0.3, 0.6, 0.9)


@pytest.fixture(scope="module")
def data():
    x_train, y_train = numpy_dataset("train", limit=512)
    x_test, y_test = numpy_dataset("test", limit=256)
    return x_train, y_train, x_test, y_test


def _trained(build, data, epochs: int = 1) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = build()
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    model.fit(data[0], data[1], batch_size=64, epochs=epochs, verbose=0)
    return model


@pytest.fixture(scope="module")
def functional(data):
    return _trained(functional_net, data)


def _rel(a, b) -> float:
    a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _zero_filters(model: keras.Model, name: str) -> set[int]:
    w = keras.ops.convert_to_numpy(model.get_layer(name).kernel)
    return set(np.flatnonzero(np.abs(w).reshape(-1, w.shape[-1]).sum(0) == 0).tolist())


# -- the guide's workflow ---------------------------------------------------------------------
@pytest.mark.slow
def test_guide_tf_workflow(data, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    x_train, y_train, x_test, y_test = data
    y_train_1h = keras.utils.to_categorical(y_train, 10)
    y_test_1h = keras.utils.to_categorical(y_test, 10)

    # 4.1.4.1 baseline
    keras.utils.set_random_seed(0)
    model = mnist_convnet()
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(x_train, y_train_1h, batch_size=128, epochs=1, verbose=0)

    # 4.1.4.2 runner
    input_shape = [28, 28, 1]
    input_spec = tf.TensorSpec((1, *input_shape), tf.float32)
    runner = IterativePruningRunner(model, input_spec)

    # 4.1.4.3 evaluate, ana, prune
    def evaluate(model):
        model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
        score = model.evaluate(x_test, y_test_1h, verbose=0)
        return score[1]

    before = digest_weights(model)
    runner.ana(evaluate)
    sens = read_json(Path(".vai") / f"{runner.name}.sens", kind="uif-explorer-sensitivity")
    assert sens["complete"] and sens["baseline"] is not None
    assert all(len(g["curve"]) == 9 for g in sens["groups"] if g["prunable"])
    sparse_model = runner.prune(ratio=0.2)
    assert digest_weights(model) == before  # the user's model is never touched
    spec02 = Path(".vai") / f"{runner.name}_ratio_0.2.spec"
    assert json.loads(Path(".vai/latest_spec").read_text()) == f".vai/{spec02.name}"
    removed = 1 - count_macs(runner.get_slim_model(), input_spec) / count_macs(model, input_spec)
    assert abs(removed - 0.2) <= 0.01
    assert all(w.shape == v.shape for w, v in zip(sparse_model.weights, model.weights,
                                                   strict=True))
    zeroed_02 = _zero_filters(sparse_model, "conv2d")

    # 4.1.4.4 fine-tune the sparse model
    sparse_model.compile(loss="categorical_crossentropy", optimizer="adam",
                         metrics=["accuracy"])
    sparse_model.fit(x_train, y_train_1h, batch_size=128, epochs=1, validation_split=0.1,
                     verbose=0)
    assert _zero_filters(sparse_model, "conv2d") == zeroed_02
    sparse_model.save_weights("model_sparse_0.2.weights.h5")

    # 4.1.4.5 iterate: load into the original model, new runner, prune(0.5) without a new ana
    model.load_weights("model_sparse_0.2.weights.h5")
    runner = IterativePruningRunner(model, input_spec)
    capsys.readouterr()
    sparse_model = runner.prune(ratio=0.5)
    assert "reusing the finished analysis" in capsys.readouterr().err
    assert zeroed_02 <= _zero_filters(sparse_model, "conv2d")  # zeroed channels chosen again
    sparse_model.compile(loss="categorical_crossentropy", optimizer="adam",
                         metrics=["accuracy"])
    sparse_model.fit(x_train, y_train_1h, batch_size=128, epochs=1, verbose=0)
    sparse_model.save_weights("model_sparse_0.5.weights.h5")

    # 4.1.4.6 the slim model from latest_spec
    model.load_weights("model_sparse_0.5.weights.h5")
    runner = IterativePruningRunner(model, input_spec)
    assert json.loads(Path(".vai/latest_spec").read_text()) == \
        f".vai/{runner.name}_ratio_0.5.spec"
    slim = runner.get_slim_model()
    assert _rel(slim(x_test), sparse_model(x_test)) <= 1e-5
    removed = 1 - count_macs(slim, input_spec) / count_macs(mnist_convnet(), input_spec)
    assert abs(removed - 0.5) <= 0.01  # relative to the original dense architecture
    assert slim.get_layer("conv2d").filters < 32
    assert runner.get_slim_model(Path(".vai") / f"{runner.name}_ratio_0.5.spec") is not None


# -- sparse models ----------------------------------------------------------------------------
def _sigmoid_net() -> keras.Model:
    """Sigmoid(0) = 0.5 flows out of pruned channels, so pruned weights get real gradients."""
    i = keras.Input((10, 10, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="sigmoid", name="c1")(i)
    x = layers.Conv2D(16, 3, padding="same", name="c2")(x)  # linear
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(i, layers.Dense(4, name="head")(x))


def test_sparse_stays_zero_through_fit_and_loads_into_original(tmp_path) -> None:
    from uif_explorer.keras import KerasPruner
    from uif_explorer.keras.apply import tensor_keeps

    keras.utils.set_random_seed(1)
    model = _sigmoid_net()
    snapshot = [w.copy() for w in model.get_weights()]
    pr = KerasPruner(model, (1, 10, 10, 3))
    plan = pr.plan_for_removal(0.4)
    sparse = pr.sparse_model(plan)
    keeps = tensor_keeps(pr.capture, plan)
    assert {"c1/kernel", "c1/bias", "c2/kernel", "c2/bias", "bn/gamma", "bn/beta"} <= set(keeps)
    x = np.random.default_rng(0).normal(size=(64, 10, 10, 3)).astype("float32")
    y = np.random.default_rng(1).integers(0, 4, 64)
    # the test means something: the pruned input rows of c2 get non-zero gradients
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(y, sparse(x), from_logits=True)
    grad = tape.gradient(loss, sparse.get_layer("c2").kernel).numpy()
    pruned_rows = ~keeps["c2/kernel"][2]
    assert np.abs(grad[:, :, pruned_rows, :]).sum() > 0
    start = {v.path: keras.ops.convert_to_numpy(v).copy() for v in sparse.weights}
    sparse.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   optimizer=keras.optimizers.Adam(0.01))
    sparse.fit(x, y, batch_size=16, epochs=2, verbose=0)
    for key, axes in keeps.items():
        path, wname = pr.capture.weight_keys[key]
        var = next(v for v in sparse.get_layer(path).weights if v.name == wname)
        value = keras.ops.convert_to_numpy(var)
        mask = np.ones(value.shape, dtype=bool)
        for dim, keep in axes.items():
            view = [1] * value.ndim
            view[dim] = -1
            mask &= keep.reshape(view)
        assert np.all(value[~mask] == 0), key
        if var.trainable:
            assert not np.array_equal(value[mask], start[var.path][mask]), key  # it trained
    # saved weights load into the original architecture (masks are not weights)
    sparse.save_weights(tmp_path / "sparse.weights.h5")
    fresh = _sigmoid_net()
    fresh.load_weights(tmp_path / "sparse.weights.h5")
    assert _rel(fresh(x), sparse(x)) == 0.0
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), snapshot, strict=True))


# -- sample models: prune, slim == sparse, MACs -----------------------------------------------
@pytest.mark.parametrize("build", [mnist_convnet, functional_net])
def test_slim_equals_sparse_and_macs_land(build, data, tmp_path) -> None:
    x_test, y_test = data[2][:128], data[3][:128]
    model = _trained(build, data) if build is mnist_convnet else build()
    before = digest_weights(model)
    runner = IterativePruningRunner(model, SPEC, workdir=tmp_path / "ws")
    sens = runner.ana(lambda m: top1_accuracy(m, x_test, y_test), ratios=RATIOS)
    assert sens["kind"] == "uif-explorer-sensitivity" and sens["complete"]
    sparse = runner.prune(ratio=0.3)
    slim = runner.get_slim_model()
    assert _rel(slim(x_test), sparse(x_test)) <= 1e-5
    spec = read_json(tmp_path / "ws" / f"{runner.name}_ratio_0.3.spec", kind="uif-explorer-spec")
    macs0, macs1 = count_macs(model, SPEC), count_macs(slim, SPEC)
    assert abs(1 - macs1 / macs0 - 0.3) <= 0.01
    assert spec["macs"]["pruned"] == pytest.approx(macs1 / 1e6)
    slim2 = runner.prune(spec_path=tmp_path / "ws" / f"{runner.name}_ratio_0.3.spec",
                         mode="slim")
    assert _rel(slim2(x_test), slim(x_test)) == 0.0
    assert digest_weights(model) == before
    assert all(len(w.shape) for w in slim.weights)


def test_ana_resumes_and_files_are_guarded(data, tmp_path) -> None:
    x_test, y_test = data[2][:64], data[3][:64]
    model = mnist_convnet()
    runner = IterativePruningRunner(model, SPEC, workdir=tmp_path, name="convnet")
    calls = []

    def flaky(m):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("interrupted")
        return top1_accuracy(m, x_test, y_test)

    with pytest.raises(AnalysisError, match="interrupted"):
        runner.ana(flaky, ratios=RATIOS)
    sens = read_json(tmp_path / "convnet.sens")
    assert not sens["complete"] and sum(len(g["curve"]) for g in sens["groups"]) == 2
    calls.clear()
    runner.ana(lambda m: calls.append(1) or top1_accuracy(m, x_test, y_test), ratios=RATIOS)
    # 2 groups x 3 ratios, 2 already saved, baseline saved; then the whole-model plans
    assert len(calls) == 2 * 3 - 2 + len(WHOLE_MODEL_RATIOS)
    with pytest.raises(WorkspaceError, match="another architecture"):
        IterativePruningRunner(functional_net(), SPEC, workdir=tmp_path, name="convnet").ana(
            lambda m: 1.0)
    with pytest.raises(ValueError, match="ratio"):
        runner.prune(ratio=1.5)
    with pytest.raises(ValueError, match="exactly one"):
        runner.prune()


def test_input_spec_forms_and_macs() -> None:
    model = mnist_convnet()
    a = IterativePruningRunner(model, tf.TensorSpec((1, 28, 28, 1), tf.float32))
    b = IterativePruningRunner(model, (None, 28, 28, 1))
    assert a.name == b.name == "mnist_convnet"  # the name the model was given
    auto = keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(4, 3), layers.Flatten(),
                             layers.Dense(2)])  # Keras names it "sequential_<n>": not the user's
    assert IterativePruningRunner(auto, SPEC).name.startswith("Sequential-")
    # conv 26*26*32*9 + conv 11*11*32*64*9 + dense 1600*10
    assert count_macs(model, SPEC) == 26 * 26 * 32 * 9 + 11 * 11 * 32 * 64 * 9 + 1600 * 10
    assert a.original_macs == pytest.approx(count_macs(model, SPEC) / 1e6)
    with pytest.raises(ValueError, match="match the model input"):
        IterativePruningRunner(model, (1, 32, 32, 3))


# -- errors -----------------------------------------------------------------------------------
def test_subclassed_model_is_refused_with_the_reason() -> None:
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = layers.Conv2D(8, 3)
            self.head = layers.Dense(10)

        def call(self, x):
            return self.head(layers.Flatten()(self.conv(x)))

    net = Net()
    net(np.zeros(SPEC, "float32"))
    with pytest.raises(KerasGraphError, match="subclassed") as info:
        IterativePruningRunner(net, SPEC)
    assert "Functional" in str(info.value) and "PyTorch" in str(info.value)
    with pytest.raises(TypeError, match="keras.Model"):
        IterativePruningRunner(object(), SPEC)


class ChannelMix(layers.Layer):
    """A custom layer with weights that mixes channels: no pruning rule exists for it."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], input_shape[-1]))

    def call(self, x):
        return keras.ops.matmul(x, self.kernel)


def test_unsupported_weighted_layer_is_named_and_excludes_fix_it() -> None:
    i = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, name="conv_a")(i)
    x = ChannelMix(name="mix")(x)
    x = layers.Conv2D(8, 3, name="conv_b")(x)
    model = keras.Model(i, layers.Dense(2)(layers.Flatten()(x)))
    with pytest.raises(UnsupportedLayerError, match="'mix'.*ChannelMix") as info:
        IterativePruningRunner(model, (1, 8, 8, 3))
    assert "excludes=['mix']" in str(info.value)
    runner = IterativePruningRunner(model, (1, 8, 8, 3), excludes=["mix"])
    groups = runner.groups.set_index("name")
    assert not groups.loc["conv_a", "prunable"] and groups.loc["conv_b", "prunable"]
    with pytest.raises(ValueError, match="did you mean"):
        IterativePruningRunner(model, (1, 8, 8, 3), excludes=["conv_c"])


# -- one-step search, adaptive BN, export ------------------------------------------------------
def test_adaptive_bn_is_a_cumulative_average() -> None:
    i = keras.Input((4,))
    model = keras.Model(i, layers.BatchNormalization(name="bn")(layers.Dropout(0.5)(i)))
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(40, 4)).astype("float32")
    adaptive_bn_calibration(model, x, batch_size=20)
    bn = model.get_layer("bn")
    expected = (x[:20].mean(0) + x[20:].mean(0)) / 2
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), expected, rtol=1e-5)
    assert bn.momentum == 0.99 and model.layers[1].rate == 0.5


def test_one_step_search_best_slim_and_export(functional, data, tmp_path) -> None:
    x_calib = data[0][:128]
    x_test, y_test = data[2][:128], data[3][:128]
    runner = IterativePruningRunner(functional, SPEC, workdir=tmp_path)
    result = runner.search(adaptive_bn_calibration, (x_calib,), top1_accuracy,
                           (x_test, y_test), num_subnet=4, ratio=0.4)
    cands = result["candidates"]
    assert len(cands) == 4 and result["complete"] and result["baseline"]["score"] is not None
    assert all(abs(c["removal"] - 0.4) <= 0.01 and c["score"] is not None for c in cands)
    best_id = result["ranking"][0]
    assert cands[best_id]["score"] == max(c["score"] for c in cands)
    best = runner.prune_candidate(0.4)
    assert abs(1 - count_macs(best, SPEC) / count_macs(functional, SPEC) - 0.4) <= 0.01
    assert json.loads((tmp_path / "latest_spec").read_text()).endswith("_ratio_0.4_best.spec")
    # candidate 0 is candidate id 0 (not "the best"); its slim model equals its sparse model
    slim0 = runner.prune_candidate(0.4, index=0)
    sparse0 = runner.prune_candidate(0.4, index=0, mode="sparse")
    assert _rel(slim0(x_test), sparse0(x_test)) <= 1e-5
    # export: a .keras file that loads in safe mode and gives the same outputs
    path = export_keras(best, tmp_path / "best.keras")
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert _rel(loaded(x_test), best(x_test)) <= 1e-6
    assert not list(tmp_path.glob(".best.*"))  # no temporary file left behind

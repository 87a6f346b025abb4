"""A fast coverage subset of the Keras backend (keras.applications are in bench/).

Small Functional nets, one per coupling rule: every one is pruned to remove about 30% of its
MACs; the slim model (rebuilt with ``clone_model``) must give the sparse model's outputs, and
the MACs / params the plan predicts must equal those counted on the built slim model.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from uif_explorer.keras import KerasPruner, count_macs, count_params

pytestmark = pytest.mark.tf


def _bn_relu(x, name):
    x = layers.BatchNormalization(name=name + "_bn")(x)
    return layers.ReLU(name=name + "_relu")(x)


def add3() -> keras.Model:
    """Three-way residual Add: all inputs are coupled, not only the first two."""
    i = keras.Input((12, 12, 3))
    a = layers.Conv2D(16, 3, padding="same", name="a")(i)
    b = layers.Conv2D(16, 3, padding="same", name="b")(i)
    c = layers.Conv2D(16, 1, name="c")(i)
    x = layers.Add(name="add")([a, b, c])
    x = _bn_relu(x, "post")
    x = layers.Conv2D(24, 3, padding="same", name="d")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(i, layers.Dense(5, name="head")(x))


def concat_depthwise() -> keras.Model:
    """Concatenate (offsets), DepthwiseConv2D with depth_multiplier=2, Subtract, Maximum."""
    i = keras.Input((12, 12, 3))
    a = layers.Conv2D(8, 3, padding="same", name="a")(i)
    b = layers.Conv2D(12, 3, padding="same", name="b")(i)
    x = layers.Concatenate(name="cat")([a, b])
    x = _bn_relu(x, "cat")
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    y = layers.Conv2D(40, 1, name="pw")(x)
    z = layers.Conv2D(40, 1, name="pw2")(x)
    x = layers.Subtract(name="sub")([y, z])
    x = layers.Maximum(name="max")([x, layers.Conv2D(40, 1, name="pw3")(i)])
    x = layers.Flatten()(layers.MaxPooling2D(4)(x))
    return keras.Model(i, layers.Dense(5, name="head")(x))


def squeeze_excite() -> keras.Model:
    """SE gates: GAP(keepdims) -> Conv -> Multiply, and GAP -> Dense -> Reshape -> Multiply,
    with Keras ops (``x + 3``, ``* (1/6)``) in the gate as MobileNetV3 writes it."""
    i = keras.Input((10, 10, 3))
    x = layers.Conv2D(16, 3, padding="same", name="stem")(i)
    x = _bn_relu(x, "stem")
    s = layers.GlobalAveragePooling2D(keepdims=True)(x)
    s = layers.Conv2D(8, 1, activation="relu", name="se1_reduce")(s)
    s = layers.Conv2D(16, 1, name="se1_expand")(s)
    s = layers.ReLU(6.0)(s + 3.0) * (1.0 / 6.0)
    x = layers.Multiply(name="se1_gate")([x, s])
    x = layers.Conv2D(24, 3, padding="same", name="mid")(x)
    t = layers.GlobalAveragePooling2D()(x)
    t = layers.Dense(6, activation="relu", name="se2_reduce")(t)
    t = layers.Dense(24, activation="sigmoid", name="se2_expand")(t)
    t = layers.Reshape((1, 1, 24))(t)
    x = layers.Multiply(name="se2_gate")([x, t])
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(i, layers.Dense(5, name="head")(x))


def separable_transpose() -> keras.Model:
    """SeparableConv2D (depth_multiplier=2), Conv2DTranspose, UpSampling, padding, cropping."""
    i = keras.Input((8, 8, 3))
    x = layers.SeparableConv2D(16, 3, depth_multiplier=2, padding="same", name="sep1")(i)
    x = _bn_relu(x, "sep1")
    x = layers.SeparableConv2D(20, 3, padding="same", name="sep2")(x)
    x = layers.Conv2DTranspose(12, 3, strides=2, padding="same", name="up")(x)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.Cropping2D(1)(x)
    x = layers.PReLU(shared_axes=[1, 2], name="prelu")(x)
    x = layers.UpSampling2D(1)(x)
    x = layers.Conv2D(10, 3, strides=2, padding="same", name="down")(x)
    return keras.Model(i, layers.Dense(4, name="head")(layers.Flatten()(x)))


def conv1d_dense() -> keras.Model:
    """Conv1D, Conv1DTranspose, Dense -> Dense hidden units, Dense on a 3-D tensor."""
    i = keras.Input((16, 4))
    x = layers.Conv1D(12, 3, padding="same", activation="relu", name="c1")(i)
    x = layers.Conv1DTranspose(10, 3, padding="same", name="ct")(x)
    x = layers.Dense(14, name="per_step")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(32, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Dense(16, activation="relu", name="fc2")(x)
    return keras.Model(i, layers.Dense(3, name="head")(x))


def nested_shared() -> keras.Model:
    """Nested Sequential and Functional blocks (expanded in place) and a layer called twice."""
    block = keras.Sequential([layers.Conv2D(12, 3, padding="same", name="inner_conv"),
                              layers.BatchNormalization(name="inner_bn"), layers.ReLU()],
                             name="block")
    j = keras.Input((10, 10, 12))
    k = layers.Conv2D(16, 1, name="f_conv")(j)
    inner = keras.Model(j, layers.Conv2D(12, 1, name="f_out")(layers.ReLU()(k)), name="fblock")
    shared = layers.Conv2D(12, 1, name="shared")
    i = keras.Input((10, 10, 3))
    x = inner(block(layers.Conv2D(8, 3, padding="same", name="stem")(i)))
    y = shared(x)
    z = shared(layers.Conv2D(12, 3, padding="same", name="side")(i))
    x = layers.Add()([y, z])
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(i, layers.Dense(4, name="head")(x))


def conv3d() -> keras.Model:
    i = keras.Input((4, 4, 4, 2))
    x = layers.Conv3D(32, 3, padding="same", name="c3a")(i)
    x = layers.BatchNormalization()(x)
    x = layers.Conv3DTranspose(32, 3, padding="same", name="c3t")(x)
    x = layers.GlobalAveragePooling3D()(x)
    return keras.Model(i, layers.Dense(3, name="head")(x))


def sequential_mlp() -> keras.Model:
    return keras.Sequential([keras.Input((20,)), layers.Dense(32, activation="relu"),
                             layers.BatchNormalization(), layers.Dense(24, activation="tanh"),
                             layers.Dense(3)])


CASES = {
    "add3": add3, "concat_depthwise": concat_depthwise, "squeeze_excite": squeeze_excite,
    "separable_transpose": separable_transpose, "conv1d_dense": conv1d_dense,
    "nested_shared": nested_shared, "conv3d": conv3d, "sequential_mlp": sequential_mlp,
}


def _randomize_bn(model: keras.Model, rng: np.random.Generator) -> None:
    """Non-trivial BN statistics so that a wrong slice would show in the outputs."""
    for w in model.weights:
        if w.name in ("moving_mean", "beta"):
            w.assign(rng.normal(0, 0.5, tuple(w.shape)).astype("float32"))
        elif w.name in ("moving_variance", "gamma"):
            w.assign(rng.uniform(0.5, 2.0, tuple(w.shape)).astype("float32"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_slim_equals_sparse(case: str) -> None:
    model = CASES[case]()
    rng = np.random.default_rng(0)
    _randomize_bn(model, rng)
    spec = (1, *model.inputs[0].shape[1:])
    pr = KerasPruner(model, spec)
    assert pr.graph.prunable_groups, pr.groups_table()
    plan = pr.plan_for_removal(0.3, channel_divisible=1)
    sparse, slim = pr.sparse_model(plan), pr.slim_model(plan)
    x = rng.normal(size=(3, *spec[1:])).astype("float32")
    a = keras.ops.convert_to_numpy(slim(x))
    b = keras.ops.convert_to_numpy(sparse(x))
    assert np.linalg.norm(a - b) <= 1e-5 * np.linalg.norm(b)
    assert count_macs(slim, spec) == pr.macs(plan)
    assert count_params(slim) == pr.params(plan)
    assert abs(pr.removal(plan) - 0.3) <= 0.01
    assert sum(w.shape.num_elements() if hasattr(w.shape, "num_elements") else
               int(np.prod(w.shape)) for w in slim.weights) < sum(
        int(np.prod(w.shape)) for w in model.weights)


def test_coupling_rules_form_the_expected_groups() -> None:
    """Add couples all three inputs; the SE gates join the stream they scale; depthwise
    follows its producer; concat keeps its inputs' groups apart."""
    groups = {g.name: g for g in KerasPruner(add3(), (1, 12, 12, 3)).graph.groups}
    assert {"a", "b", "c"} <= set(groups["a"].producers)
    se = {g.name: g for g in KerasPruner(squeeze_excite(), (1, 10, 10, 3)).graph.groups}
    assert "se1_expand" in se["stem"].producers
    assert "se2_expand" in se["mid"].producers
    assert se["se1_reduce"].prunable and se["se2_reduce"].prunable
    cd = {g.name: g for g in KerasPruner(concat_depthwise(), (1, 12, 12, 3)).graph.groups}
    assert "dw" in cd["a"].modules and "dw" in cd["b"].modules
    assert cd["a"].num_channels == 8 and cd["b"].num_channels == 12
    assert {"pw", "pw2", "pw3"} <= set(cd["pw"].producers)

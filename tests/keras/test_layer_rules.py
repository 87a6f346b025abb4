"""The Keras layer-rule registry: one call teaches a new layer, built-in rules are entries.

A custom producer and a custom channel-wise layer are each registered with one
``register_layer`` call and pruned: the slim model (rebuilt through the rules' ``update``)
equals the sparse one on random inputs and its counted MACs equal the plan's.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from uif_explorer.core.rules import LayerRule, UnsupportedLayerError
from uif_explorer.keras import (
    KerasPruner,
    count_macs,
    count_params,
    register_channelwise_layer,
    register_layer,
    unregister_layer,
)
from uif_explorer.keras.rules import LAYER_RULES, OP_RULES

pytestmark = pytest.mark.tf
SPEC = (1, 8, 8, 3)


class PointwiseMix(layers.Layer):
    """A custom producer: a channel mix over the last axis (a hand-written 1x1 conv)."""

    def __init__(self, units: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.units = units

    def build(self, shape) -> None:
        self.mix = self.add_weight(shape=(shape[-1], self.units), name="mix")
        self.shift = self.add_weight(shape=(self.units,), name="shift",
                                     initializer="random_normal")

    def call(self, x):
        return keras.ops.matmul(x, self.mix) + self.shift

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}


class ChannelScale(layers.Layer):
    """A custom channel-wise layer: one learned scale per channel, its size in the config."""

    def __init__(self, channels: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.channels = channels

    def build(self, shape) -> None:
        self.w = self.add_weight(shape=(self.channels,), name="w",
                                 initializer=keras.initializers.RandomUniform(0.5, 1.5))

    def call(self, x):
        return x * self.w

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels}


def custom_net() -> keras.Model:
    i = keras.Input(SPEC[1:])
    x = layers.Conv2D(16, 3, padding="same", name="stem")(i)
    x = layers.ReLU()(ChannelScale(16, name="scale")(x))
    x = layers.ReLU()(PointwiseMix(12, name="mix")(x))
    x = layers.Conv2D(10, 3, padding="same", name="body")(x)
    return keras.Model(i, layers.Dense(4, name="head")(layers.GlobalAveragePooling2D()(x)))


def _set_units(config: dict, kept_in: int, kept_out: int) -> None:
    config["units"] = kept_out


def _set_channels(config: dict, kept_in: int, kept_out: int) -> None:
    assert kept_in == kept_out
    config["channels"] = kept_out


def _prune_and_compare(model: keras.Model) -> tuple[KerasPruner, keras.Model]:
    """Prune 30% of the MACs; slim == sparse, MACs and params as the plan says."""
    pr = KerasPruner(model, SPEC)
    plan = pr.plan_for_removal(0.3, channel_divisible=1)
    sparse, slim = pr.sparse_model(plan), pr.slim_model(plan)
    x = np.random.default_rng(0).normal(size=(3, *SPEC[1:])).astype("float32")
    a, b = (keras.ops.convert_to_numpy(m(x)) for m in (slim, sparse))
    assert np.linalg.norm(a - b) <= 1e-5 * np.linalg.norm(b)
    assert count_macs(slim, SPEC) == pr.macs(plan)
    assert count_params(slim) == pr.params(plan)
    return pr, slim


@pytest.fixture
def registered():
    register_layer(PointwiseMix, out_dims={"mix": 1, "shift": 0}, in_dims={"mix": 0},
                   update=_set_units)
    register_layer(ChannelScale, out_dims={"w": 0}, channelwise=True, update=_set_channels)
    yield
    unregister_layer(PointwiseMix)
    unregister_layer(ChannelScale)


def test_registered_producer_and_channelwise_layers_prune(registered) -> None:
    model = custom_net()
    pr, slim = _prune_and_compare(model)
    groups = {g.name: g for g in pr.graph.groups}
    assert groups["stem"].prunable and groups["mix"].prunable
    assert "scale" in groups["stem"].modules and "mix" in groups["stem"].modules
    assert "mix" in groups["mix"].producers
    # the rules' updates rebuilt the custom layers at the kept widths
    assert slim.get_layer("scale").channels == slim.get_layer("stem").filters
    assert slim.get_layer("mix").units == slim.get_layer("mix").mix.shape[1]
    assert count_params(slim) < count_params(model)


def test_channelwise_wrapper_registers_by_class_name() -> None:
    register_layer(PointwiseMix, out_dims={"mix": 1, "shift": 0}, in_dims={"mix": 0},
                   update=_set_units)
    register_channelwise_layer("ChannelScale", {"w": 0}, "channels")
    try:
        pr, slim = _prune_and_compare(custom_net())
        assert slim.get_layer("scale").channels == slim.get_layer("stem").filters
    finally:
        unregister_layer(PointwiseMix)
        unregister_layer("ChannelScale")


def test_unregistered_weighted_layer_names_register_layer() -> None:
    with pytest.raises(UnsupportedLayerError, match="'scale'.*ChannelScale") as info:
        KerasPruner(custom_net(), SPEC)
    assert "register_layer" in str(info.value) and "excludes=['scale']" in str(info.value)


def test_every_built_in_rule_is_a_registry_entry() -> None:
    names = ("Conv1D", "Conv2D", "Conv3D", "Conv2DTranspose", "DepthwiseConv2D",
             "SeparableConv2D", "Dense", "BatchNormalization", "LayerNormalization",
             "GroupNormalization", "PReLU", "LayerScale", "ReLU", "Dropout", "MaxPooling2D",
             "GlobalAveragePooling2D", "Add", "Multiply", "Concatenate", "Flatten", "Reshape",
             "Permute", "Rescaling", "Lambda", "Normalization")
    for name in names:
        assert isinstance(LAYER_RULES.lookup(name), LayerRule), name
    assert LAYER_RULES.lookup(layers.Conv2D(4, 1)) is LAYER_RULES.lookup("Conv2D")
    assert LAYER_RULES.lookup("Conv2D").out_dims == {"kernel": -1, "bias": 0}
    assert LAYER_RULES.lookup("BatchNormalization").out_dims["gamma"] == 0
    # a registration may override a built-in rule; unregistering brings the built-in back
    dense = LAYER_RULES.lookup("Dense")
    register_layer("Dense", out_dims={"kernel": 1}, in_dims={"kernel": 0})
    assert LAYER_RULES.lookup("Dense") is not dense
    unregister_layer("Dense")
    assert LAYER_RULES.lookup("Dense") is dense
    assert {"Add", "Multiply", "Relu", "Sigmoid"} <= set(OP_RULES)


def test_group_norm_prunes_per_instance_and_blocks_wider_groups() -> None:
    def net(groups: int) -> keras.Model:
        i = keras.Input(SPEC[1:])
        x = layers.Conv2D(16, 3, padding="same", name="stem")(i)
        x = layers.GroupNormalization(groups=groups, name="gn")(x)
        x = layers.Conv2D(12, 3, padding="same", name="body")(layers.ReLU()(x))
        return keras.Model(i, layers.Dense(3, name="head")(layers.Flatten()(x)))

    pr, slim = _prune_and_compare(net(16))
    assert slim.get_layer("gn").groups == slim.get_layer("stem").filters
    groups = {g.name: g for g in KerasPruner(net(4), SPEC).graph.groups}
    assert not groups["stem"].prunable
    assert "GroupNormalization" in groups["stem"].excluded_reason


def test_depthwise_without_bias_follows_its_producer() -> None:
    """A rule's weights found by name only: a bias-less depthwise (MobileNetV3, EfficientNet)
    must not mistake its kernel for the one weight of a channel-wise rule."""
    i = keras.Input(SPEC[1:])
    x = layers.Conv2D(48, 1, use_bias=False, name="expand")(i)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = layers.Conv2D(24, 1, name="project")(layers.BatchNormalization()(x))
    model = keras.Model(i, layers.Dense(3, name="head")(layers.GlobalAveragePooling2D()(x)))
    groups = {g.name: g for g in KerasPruner(model, SPEC).graph.groups}
    assert groups["expand"].prunable and "dw" in groups["expand"].modules
    _prune_and_compare(model)

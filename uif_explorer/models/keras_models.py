"""Keras 3 sample architectures (NHWC 28x28x1 input, 10-class softmax output).

This is the only module of ``uif_explorer.models`` that imports Keras; nothing imports it
eagerly (``uif_explorer.zoo`` resolves these builders by name, on demand).
"""

from __future__ import annotations

import keras
from keras import layers

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def mnist_convnet(num_classes: int = NUM_CLASSES) -> keras.Sequential:
    """The Keras MNIST example's convnet, as the UIF guide shows it (~35k params)."""
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu", name="conv2d"),
            layers.MaxPooling2D(pool_size=(2, 2), name="max_pooling2d"),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu", name="conv2d_1"),
            layers.MaxPooling2D(pool_size=(2, 2), name="max_pooling2d_1"),
            layers.Flatten(name="flatten"),
            layers.Dropout(0.5, name="dropout"),
            layers.Dense(num_classes, activation="softmax", name="dense"),
        ],
        name="mnist_convnet",
    )


def _conv_bn_relu(x, filters: int, kernel: int, name: str):
    x = layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _dw_residual(x, channels: int, name: str):
    """Depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN, Add to the input, ReLU."""
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(x)
    y = layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = layers.ReLU(name=f"{name}_dw_relu")(y)
    y = layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_pw")(y)
    y = layers.BatchNormalization(name=f"{name}_pw_bn")(y)
    x = layers.Add(name=f"{name}_add")([x, y])
    return layers.ReLU(name=f"{name}_out")(x)


def functional_net(num_classes: int = NUM_CLASSES) -> keras.Model:
    """A Functional model: residual Add, DepthwiseConv2D, Concatenate, BN, GAP, Dense.

    Every layer is named. Stem (32 ch, 28x28) -> pool -> depthwise residual block (14x14)
    -> two branches (3x3 conv | depthwise + 1x1 conv) concatenated to 64 ch -> pool ->
    3x3 conv (96 ch, 7x7) -> depthwise residual block -> GAP -> Dense softmax.
    """
    inputs = keras.Input(shape=INPUT_SHAPE, name="input")
    x = _conv_bn_relu(inputs, 32, 3, "stem")
    x = layers.MaxPooling2D(2, name="stem_pool")(x)  # 14x14
    x = _dw_residual(x, 32, "block1")

    a = _conv_bn_relu(x, 32, 3, "branch_a")
    b = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="branch_b_dw")(x)
    b = layers.BatchNormalization(name="branch_b_dw_bn")(b)
    b = layers.ReLU(name="branch_b_dw_relu")(b)
    b = _conv_bn_relu(b, 32, 1, "branch_b_pw")
    x = layers.Concatenate(name="concat")([a, b])  # 64 channels
    x = layers.MaxPooling2D(2, name="concat_pool")(x)  # 7x7

    x = _conv_bn_relu(x, 96, 3, "block2")
    x = _dw_residual(x, 96, "block3")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="functional_net")

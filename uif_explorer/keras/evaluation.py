"""Keras helpers for scoring pruned models: top-1, adaptive BN re-estimation, score checks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import keras
import numpy as np

from uif_explorer.core.scores import check_score  # noqa: F401 - part of this module's API
from uif_explorer.core.uncertainty import note_images


def _batches(data: Any, batch_size: int) -> Iterator[np.ndarray | Any]:
    """Input batches from an array, an (x, y) tuple, a dict-free iterable of batches."""
    if isinstance(data, tuple) and len(data) in (1, 2) and hasattr(data[0], "shape"):
        data = data[0]
    if hasattr(data, "shape") and hasattr(data, "__getitem__"):  # an array (not tf.data)
        for start in range(0, len(data), batch_size):
            yield data[start:start + batch_size]
        return
    if isinstance(data, Iterable):
        for batch in data:
            yield batch[0] if isinstance(batch, (tuple, list)) else batch
        return
    raise TypeError(f"Expected an array, an (x, y) tuple or an iterable of batches. "
                    f"Received: {type(data).__name__}")


def all_layers(model: keras.Model) -> list[Any]:
    out = []
    for layer in model.layers:
        out.append(layer)
        if isinstance(layer, keras.Model):
            out.extend(all_layers(layer))
    return out


def adaptive_bn_calibration(model: keras.Model, data: Any, number_forward: int = 100,
                            batch_size: int = 64) -> None:
    """EagleEye's adaptive BN for Keras: re-estimate every BatchNormalization's statistics.

    Moving statistics are replaced by the cumulative average of the batch statistics of up to
    ``number_forward`` batches, forwarded with ``training=True`` (dropout and noise layers
    are switched off meanwhile) and no gradient update. Momenta and rates are restored; only
    the moving statistics change. ``data`` is an array, an ``(x, y)`` tuple or an iterable of
    batches (a ``tf.data.Dataset`` of ``(x, y)`` works). A model without BN is left as is.
    """
    if isinstance(number_forward, bool) or not isinstance(number_forward, int) \
            or number_forward < 1:
        raise ValueError(f"Expected number_forward >= 1. Received: {number_forward!r}")
    layers = all_layers(model)
    norms = [lay for lay in layers if isinstance(lay, keras.layers.BatchNormalization)]
    if not norms:
        return
    noisy = [(lay, attr, getattr(lay, attr)) for lay in layers
             for attr in ("rate", "stddev")
             if isinstance(lay, (keras.layers.Dropout, keras.layers.GaussianNoise,
                                 keras.layers.GaussianDropout, keras.layers.AlphaDropout))
             and hasattr(lay, attr)]
    momenta = [bn.momentum for bn in norms]
    seen = 0
    try:
        for lay, attr, _ in noisy:
            setattr(lay, attr, 0.0)
        for batch in _batches(data, batch_size):
            if seen >= number_forward:
                break
            seen += 1
            for bn in norms:
                bn.momentum = (seen - 1) / seen
            model(batch, training=True)
    finally:
        for bn, m in zip(norms, momenta, strict=True):
            bn.momentum = m
        for lay, attr, value in noisy:
            setattr(lay, attr, value)
    if seen == 0:
        raise ValueError("adaptive_bn_calibration got no batch from data")


def top1_accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray,
                  batch_size: int = 256) -> float:
    """Top-1 accuracy in percent (inference mode)."""
    correct = 0
    for start in range(0, len(x), batch_size):
        out = keras.ops.convert_to_numpy(model(x[start:start + batch_size], training=False))
        correct += int((out.argmax(-1) == np.asarray(y[start:start + batch_size])).sum())
    note_images(len(x))  # the runner records the image count beside the score
    return 100.0 * correct / max(1, len(x))

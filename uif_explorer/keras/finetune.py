"""A short fine-tune of a (sparse) Keras model, with progress, for the app and quick scripts.

The sparse model's masks are constraints on its variables, so ``fit()`` keeps the pruned
channels at zero by itself; this only adds what a workbench needs around ``fit()``: the right
loss for softmax or logit outputs, a bounded number of batches and a progress callback that
can stop the run (the app's Cancel raises from it).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

Progress = Callable[[int, int, dict], None]


def _outputs_probabilities(model: keras.Model) -> bool:
    last = model.layers[-1]
    return getattr(last, "activation", None) is keras.activations.softmax or \
        last.__class__.__name__ == "Softmax"


def fine_tune(model: keras.Model, x: np.ndarray, y: np.ndarray, epochs: int = 1,
              lr: float = 1e-3, batch_size: int = 128, max_batches: int | None = None,
              progress: Progress | None = None) -> list[float]:
    """Train ``model`` in place with Adam and sparse categorical cross-entropy; the loss of
    each epoch. ``max_batches`` bounds the batches per epoch (the first ones of ``x``)."""
    if max_batches is not None:
        x, y = x[: max_batches * batch_size], y[: max_batches * batch_size]
    steps = int(np.ceil(len(x) / batch_size))
    total = max(1, steps * int(epochs))
    model.compile(optimizer=keras.optimizers.Adam(float(lr)),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=not _outputs_probabilities(model)))

    class _Report(keras.callbacks.Callback):
        done = 0

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            _Report.done += 1
            if progress is not None:
                progress(_Report.done, total, {"loss": float((logs or {}).get("loss", 0.0))})

    history = model.fit(x, y, batch_size=batch_size, epochs=int(epochs), verbose=0,
                        shuffle=True, callbacks=[_Report()])
    return [float(v) for v in history.history.get("loss", [])]

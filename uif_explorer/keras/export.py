"""Write a (slim) Keras model as a ``.keras`` file, atomically."""

from __future__ import annotations

import os
from pathlib import Path

import keras

from uif_explorer.io.workspace import atomic_write_with


def export_keras(model: keras.Model, path: str | os.PathLike) -> Path:
    """Save ``model`` to ``path`` (``.keras``): temporary file, fsync, rename.

    The file loads with ``keras.saving.load_model(path, safe_mode=True)`` as long as the model
    holds no ``Lambda`` layer (a slim model of a Functional or Sequential model built from
    Keras layers never does). A crash leaves the old file or the new one, never half of one.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"Expected a path ending in '.keras'. Received: path={str(path)!r}")
    return atomic_write_with(path, lambda tmp: model.save(tmp, overwrite=True),
                             suffix=".keras")

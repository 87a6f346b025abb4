"""Write a (slim) Keras model as a ``.keras`` file, atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import keras


def export_keras(model: keras.Model, path: str | os.PathLike) -> Path:
    """Save ``model`` to ``path`` (``.keras``): temporary file, fsync, rename.

    The file loads with ``keras.saving.load_model(path, safe_mode=True)`` as long as the model
    holds no ``Lambda`` layer (a slim model of a Functional or Sequential model built from
    Keras layers never does). A crash leaves the old file or the new one, never half of one.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"Expected a path ending in '.keras'. Received: path={str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp, overwrite=True)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path

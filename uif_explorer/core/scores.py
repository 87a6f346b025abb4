"""Scores returned by user code (``eval_fn``), checked once for every backend.

Framework-neutral by duck typing: a PyTorch tensor (``.detach()``), a TensorFlow/Keras tensor
(``.numpy()``), numpy scalars and arrays and Python numbers all become one finite float, or a
clear error that names where the value came from.
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_score(value: object, where: str = "eval_fn") -> float:
    """``value`` as a finite float, or a clear error naming ``where`` it came from.

    Accepts Python numbers, numpy scalars and one-element arrays or tensors (the guide's
    PyTorch ``eval_fn`` returns ``top1.avg``, a one-element tensor; Keras code often returns
    ``model.evaluate(...)[1]`` or a ``tf.Tensor``). Raises ``TypeError`` for None, booleans and
    non-numbers, ``ValueError`` for NaN, infinities and multi-element values.
    """

    def fail(cls: type[Exception], detail: str = "") -> Exception:
        return cls(f"{where} returned {_short(value)}{detail}; it must return a finite number "
                   "(higher is better unless higher_is_better=False)")

    if value is None or isinstance(value, (bool, np.bool_, str, bytes)):
        raise fail(TypeError)
    kind = "an array"
    array = value
    if hasattr(value, "detach"):  # a torch.Tensor
        kind, array = "a tensor", value.detach().cpu().numpy()
    elif hasattr(value, "numpy") and not isinstance(value, (np.ndarray, np.generic)):
        kind, array = "a tensor", np.asarray(value.numpy())
    if isinstance(array, (np.ndarray, np.generic)):
        if array.size != 1:
            raise fail(ValueError, f" ({kind} of shape {tuple(array.shape)})")
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise fail(TypeError)  # booleans, complex numbers, strings, objects
        number = float(array.reshape(()).item())
    elif isinstance(value, numbers.Real):
        number = float(value)
    else:
        raise fail(TypeError)
    if not math.isfinite(number):
        raise fail(ValueError)
    return number

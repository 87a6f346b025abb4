"""Checks on values that came from a user's file, shared by every loader (PyTorch and Keras).

Weights holding NaN or Inf are *refused* with a clear :class:`~uif_explorer.io.loading.LoadError`
rather than loaded with a warning: every score, importance ranking and MACs-to-accuracy trade-off
computed from such a model would be meaningless (NaN compares false, so rankings and the
bisection silently go wrong), and the user can fix the file far more easily than read a NaN
curve. Upload file names are only ever shown, never used as paths: :func:`display_name`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

MAX_LISTED = 3  # tensor names quoted in a message


def _load_error(message: str) -> Exception:
    # Imported here: uif_explorer.io.loading imports this module, so a top-level import would loop.
    from uif_explorer.io.loading import LoadError

    return LoadError(message)


def _is_finite(value: Any) -> bool:
    """True when every entry of a float tensor / array / number is finite (others: True)."""
    try:
        import torch

        if torch.is_tensor(value):
            if not (value.is_floating_point() or value.is_complex()):
                return True
            return bool(torch.isfinite(value.detach()).all())
    except ImportError:  # pragma: no cover - torch is always installed here
        pass
    if isinstance(value, (float, np.floating)):
        return math.isfinite(float(value))
    arr = np.asarray(value)
    if arr.dtype.kind not in "fc":
        return True
    return bool(np.isfinite(arr).all())


def nonfinite_names(named: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> list[str]:
    """Names of the entries that hold a NaN or an Inf, in order."""
    items = named.items() if isinstance(named, Mapping) else named
    return [str(name) for name, value in items if not _is_finite(value)]


def check_finite_weights(named: Mapping[str, Any] | Iterable[tuple[str, Any]],
                         what: str = "The weights") -> None:
    """Refuse weights with NaN/Inf entries, naming the first tensors that hold them."""
    bad = nonfinite_names(named)
    if bad:
        listed = ", ".join(repr(n) for n in bad[:MAX_LISTED])
        more = f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        raise _load_error(
            f"{what} hold NaN or Inf values in {len(bad)} tensor(s) ({listed}{more}); scores "
            "and channel rankings of such a model are meaningless. Check the training run that "
            "saved them (a diverged loss) and upload weights saved before it diverged."
        )


def check_finite_module(model: Any, what: str = "The model's weights") -> None:
    """:func:`check_finite_weights` over a ``torch.nn.Module``'s parameters and buffers."""
    check_finite_weights(model.state_dict(), what)


def check_finite_keras(model: Any, what: str = "The Keras model's weights") -> None:
    """:func:`check_finite_weights` over a Keras model's variables (by their path)."""
    named = [(getattr(w, "path", None) or w.name, np.asarray(w)) for w in model.weights]
    check_finite_weights(named, what)


_UNSAFE = re.compile(r"[^\w .()+-]+")


def display_name(name: object, limit: int = 80) -> str:
    """An uploaded file's name, fit to show in a message: no folders, no control characters.

    Only for display: uploads are read from memory and saved (when at all) under names the
    app makes, never under this one.
    """
    text = unicodedata.normalize("NFKC", str(name or ""))
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    text = _UNSAFE.sub("_", text).strip(" .") or "upload"
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["check_finite_keras", "check_finite_module", "check_finite_weights", "display_name",
           "nonfinite_names"]

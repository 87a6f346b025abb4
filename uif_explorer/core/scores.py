"""Scores returned by user code (``eval_fn``), checked once for every backend.

Framework-neutral by duck typing: a PyTorch tensor (``.detach()``), a TensorFlow/Keras tensor
(``.numpy()``), numpy scalars and arrays and Python numbers all become one finite float, or a
clear error that names where the value came from.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from uif_explorer.core.uncertainty import take_images


class AnalysisError(RuntimeError):
    """The analysis or search cannot run or continue (bad eval_fn, stale files...)."""


RESUME_HINT = "Results saved so far are kept; fix it and run again to resume."


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


def as_args(args: object, name: str) -> tuple:
    """The guide passes ``args=(val_loader,)``; a bare loader is a common slip worth naming."""
    if isinstance(args, tuple):
        return args
    if isinstance(args, list):
        return tuple(args)
    raise TypeError(f"Expected {name} to be a tuple of extra arguments, e.g. {name}=(val_loader,)."
                    f" Received: {name}={_short(args)}")


def score_model(model: Any, eval_fn: Callable, eval_args: Sequence[Any] = (), *,
                calibration_fn: Callable | None = None, calib_args: Sequence[Any] = (),
                metric: str | None = None, resume_hint: str = RESUME_HINT,
                what: str = "the model") -> float:
    """Calibrate (optional), evaluate and check one model: the one scoring step of every runner.

    Every failure of user code becomes an :class:`AnalysisError` that names the function, the
    model it ran on and how to resume, so the iterative, one-step and OFA searches behave alike.
    ``metric`` picks one entry when ``eval_fn`` returns a dict (the OFA guide's ``'acc1'``).
    """
    eval_args = as_args(eval_args, "args")
    calib_args = as_args(calib_args, "calib_args")
    if calibration_fn is not None:
        try:
            calibration_fn(model, *calib_args)
        except Exception as exc:
            raise AnalysisError(f"calibration_fn raised {type(exc).__name__} on {what}: {exc}. "
                                f"{resume_hint}") from exc
    take_images()  # forget a count left by an earlier call; eval_fn may note its own
    try:
        value = eval_fn(model, *eval_args)
    except Exception as exc:
        raise AnalysisError(f"eval_fn raised {type(exc).__name__} on {what}: {exc}. "
                            f"{resume_hint}") from exc
    if isinstance(value, Mapping):
        if metric is None or metric not in value:
            raise AnalysisError(f"eval_fn returned a dict without the metric {metric!r} "
                                f"(keys: {sorted(map(str, value))}); pass the key as metric.")
        value = value[metric]
    return check_score(value, "eval_fn")


def function_name(fn: Callable | None) -> str | None:
    """A readable name for a user function (``functools.partial`` and callables included)."""
    if fn is None:
        return None
    inner = getattr(fn, "func", fn)  # functools.partial
    return getattr(inner, "__name__", None) or type(inner).__name__


@dataclass(frozen=True)
class ScoreJob:
    """How every model of one analysis or search is scored; shipped once to each worker.

    ``mode`` says which model a backend scores for a plan ("sparse": masked weights, as the
    analysis does; "slim": the smaller model, as the one-step search does) where it matters.
    """

    eval_fn: Callable
    eval_args: tuple = ()
    calibration_fn: Callable | None = None
    calib_args: tuple = ()
    mode: str = "sparse"
    gpus: tuple = ()

    @classmethod
    def of(cls, eval_fn: Callable, eval_args: object = (), calibration_fn: Callable | None = None,
           calib_args: object = (), *, args_name: str = "args", mode: str = "sparse",
           gpus: Sequence[str | int] | None = None) -> ScoreJob:
        """Check the user's functions and argument tuples before any work is done."""
        check_function(eval_fn, "eval_fn")
        if calibration_fn is not None:
            check_function(calibration_fn, "calibration_fn")
        return cls(eval_fn, as_args(eval_args, args_name), calibration_fn,
                   as_args(calib_args, "calib_args"), mode, tuple(gpus or ()))

    @property
    def protocol(self) -> dict[str, Any]:
        """What the scores in a file mean; files scored differently are never mixed."""
        return {"calibration": function_name(self.calibration_fn),
                "score": function_name(self.eval_fn),
                "bn_reestimation": self.calibration_fn is not None}

    def score(self, model: Any, what: str) -> float:
        return score_model(model, self.eval_fn, self.eval_args,
                           calibration_fn=self.calibration_fn, calib_args=self.calib_args,
                           what=what)


def check_function(fn: object, name: str) -> None:
    if not callable(fn):
        raise TypeError(f"Expected {name} to be a function taking the model first. "
                        f"Received: {name}={fn!r}")

"""Scoring one output of a model that returns several (a dict or a tuple of tensors).

The ready-made scores (``evaluation.top1_accuracy``, the label-free score) read a tensor of
class scores. For a model whose output is ``{"logits": ..., "mask": ...}`` or a tuple,
:class:`PickOutput` wraps an ``eval_fn(model, *args)`` so that it scores ``OutputOf(model,
key)``: the same model (same parameters, modes and device; nothing copied) with the chosen
entry as its output. It is a plain picklable object, so runners can ship it to worker
processes, and it keeps the wrapped function's ``score_name`` and ``higher_is_better``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from torch import nn


def select_output(output: Any, key: str) -> Any:
    """Entry ``key`` of a dict output, or element ``int(key)`` of a tuple/list output."""
    if isinstance(output, dict):
        if key in output:
            return output[key]
        raise ValueError(f"Expected an output named {key!r}. Received: outputs "
                         f"{list(output)}; choose one of them as the class scores.")
    if isinstance(output, (tuple, list)):
        if str(key).isdigit() and int(key) < len(output):
            return output[int(key)]
        raise ValueError(f"Expected output index {key!r} of a tuple. Received: "
                         f"{len(output)} outputs; choose 0..{len(output) - 1}.")
    return output  # one tensor: it is the class scores whatever the key


class OutputOf(nn.Module):
    """``model`` with entry ``key`` of its output as the output (the model is shared)."""

    def __init__(self, model: nn.Module, key: str) -> None:
        super().__init__()
        self.model = model
        self.key = str(key)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return select_output(self.model(*args, **kwargs), self.key)


class PickOutput:
    """``fn(OutputOf(model, key), *args)``: an eval function scoring one output."""

    def __init__(self, fn: Callable[..., float], key: str) -> None:
        functools.update_wrapper(self, fn)
        self.fn, self.key = fn, str(key)

    def __call__(self, model: nn.Module, *args: Any, **kwargs: Any) -> float:
        return self.fn(OutputOf(model, self.key), *args, **kwargs)

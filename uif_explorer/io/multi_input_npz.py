"""Evaluation data for a model with several inputs: one ``.npz`` holding an array per input
(named as the program's inputs, or ``input_0``, ``input_1``, ...) plus integer ``labels``.

The app feeds ``model(*inputs)`` from it, so every array must match its input's shape except
the batch size, and all arrays must hold the same number of samples. The file is read without
pickle (``loading.read_npz``): nothing in an upload is executed. Every problem found is listed
in one :class:`~uif_explorer.io.loading.LoadError` that says what was expected, what was
received and how to save the file, so a user fixes everything in one go.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from uif_explorer.io.loading import LoadError, read_npz

LABELS = "labels"
InputSpec = tuple[tuple[int, ...], str]  # (shape with batch first, dtype name)


def positional_names(count: int) -> tuple[str, ...]:
    """``input_0``, ``input_1``, ...: the names that work for any program."""
    return tuple(f"input_{i}" for i in range(count))


def program_input_names(model: Any) -> tuple[str, ...] | None:
    """An exported program's input names (its graph's placeholders: ``forward``'s argument
    names), the names its arrays may carry; None for other models."""
    graph = getattr(model, "graph", None)
    nodes = getattr(graph, "nodes", ())
    return tuple(str(n.name) for n in nodes if getattr(n, "op", "") == "placeholder") or None


def _spec_text(name: str, spec: InputSpec) -> str:
    shape, dtype = spec
    return f"{name}: {dtype} (N, {', '.join(str(d) for d in shape[1:])})"


def expected_arrays(specs: Sequence[InputSpec], names: Sequence[str] | None = None) -> str:
    """``"rgb: float32 (N, 3, 16, 16), depth: ..., labels: integer (N,)"``: what the file
    holds for inputs ``specs`` named ``names`` (default ``input_i``), for pages and errors."""
    names = names if names and len(names) == len(specs) else positional_names(len(specs))
    arrays = ", ".join(_spec_text(n, s) for n, s in zip(names, specs, strict=True))
    return f"{arrays}, {LABELS}: integer (N,)"


def _how_to_save(names: Sequence[str]) -> str:
    args = ", ".join(f"{n}=..." for n in names)
    return f"Save it with numpy.savez('data.npz', {args}, {LABELS}=...) and upload it again."


def _pick_names(found: set[str], count: int, names: Sequence[str] | None
                ) -> tuple[str, ...]:
    """The naming the file uses: the program's input names if all are there, else
    ``input_i`` if all are there, else the one it shares most names with."""
    options = [tuple(names)] if names and len(names) == count else []
    options.append(positional_names(count))
    return max(options, key=lambda opt: (len(found & set(opt)), opt == options[0]))


def _check_input(name: str, arr: np.ndarray, spec: InputSpec) -> tuple[np.ndarray | None, str]:
    """The array converted to the input's dtype, or None and what is wrong with it."""
    shape, dtype = spec
    if arr.ndim != len(shape) or tuple(arr.shape[1:]) != tuple(shape[1:]):
        return None, f"{name} has shape {tuple(arr.shape)}"
    want_float = np.dtype(dtype).kind == "f"
    if arr.dtype.kind not in ("fiu" if want_float else "iu"):
        return None, f"{name} has dtype {arr.dtype}"
    arr = arr.astype(dtype, copy=False)
    if want_float and not np.isfinite(arr).all():
        return None, f"{name} holds NaN or Inf values"
    return arr, ""


def _check_labels(labels: np.ndarray, num_classes: int | None) -> str:
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        return f"{LABELS} has dtype {labels.dtype} and shape {tuple(labels.shape)}"
    if num_classes is not None and len(labels) and (
            labels.min() < 0 or labels.max() >= num_classes):
        return (f"{LABELS} lie in {int(labels.min())}..{int(labels.max())}, but the model has "
                f"{num_classes} classes (0..{num_classes - 1})")
    return ""


def load_multi_input_npz(data: bytes, specs: Sequence[InputSpec],
                         names: Sequence[str] | None = None, num_classes: int | None = None
                         ) -> tuple[tuple[np.ndarray, ...], np.ndarray, tuple[str, ...]]:
    """``(inputs, labels, array names)`` of an evaluation ``.npz`` for a program whose inputs
    are ``specs`` (``names``: the program's input names, when known; ``num_classes``: the
    classes of the chosen output, to check the labels). Raises one ``LoadError`` that lists
    every problem."""
    arrays = read_npz(data, f"one array per model input and '{LABELS}'")
    use = _pick_names(set(arrays), len(specs), names)
    expected = expected_arrays(specs, use)
    alt = positional_names(len(specs))
    naming = f" (or named {', '.join(alt)})" if use != alt else ""
    problems = []
    missing = [n for n in (*use, LABELS) if n not in arrays]
    extra = sorted(set(arrays) - {*use, LABELS})
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected {', '.join(extra)}")
    inputs = []
    for name, spec in zip(use, specs, strict=True):
        if name in arrays:
            arr, wrong = _check_input(name, arrays[name], spec)
            inputs.append(arr)
            problems += [wrong] if wrong else []
    labels = arrays.get(LABELS)
    if labels is not None:
        wrong = _check_labels(labels, num_classes)
        problems += [wrong] if wrong else []
    lengths = {n: len(a) for n, a in arrays.items() if n in (*use, LABELS) and a.ndim}
    if len(set(lengths.values())) > 1:
        problems.append("different lengths: " + ", ".join(f"{n} {k}" for n, k in lengths.items()))
    elif lengths and not next(iter(lengths.values())):
        problems.append("no samples (N = 0)")
    if problems:
        received = ", ".join(f"{n} {a.dtype} {tuple(a.shape)}" for n, a in arrays.items())
        raise LoadError(
            f"The .npz does not fit this model's {len(specs)} inputs: {'; '.join(problems)}. "
            f"Expected arrays {expected}{naming}, with the same N in all. Received: "
            f"{received or 'no arrays'}. {_how_to_save(use)}")
    return tuple(inputs), labels.astype(np.int64), use

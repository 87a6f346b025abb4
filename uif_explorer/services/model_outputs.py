"""Which output of a model holds its class scores, for models that return several.

A model may return a dict (``{"logits": ..., "mask": ...}``) or a tuple of tensors. Scores
need the class scores, of shape ``(batch, classes)``: by default the first output of that
shape, changeable by the user (the Model page, or ``DataSource.output`` for the CLI). Outputs
are read from one forward pass on the example input (batch 1), through the model's backend,
so nothing here imports a framework.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from uif_explorer.io.loading import LoadError


@dataclass(frozen=True)
class Output:
    """One output: its key (dict key, or tuple index as text) and shape at batch 1."""

    key: str
    shape: tuple[int, ...]

    @property
    def is_class_scores(self) -> bool:
        return len(self.shape) == 2 and self.shape[0] == 1

    @property
    def label(self) -> str:
        return f"{self.key} ({'x'.join(str(d) for d in self.shape)})"


def entries(output: Any) -> list[Output]:
    """The outputs of a dict or tuple output (empty for a single tensor)."""
    if isinstance(output, dict):
        items = [(str(k), v) for k, v in output.items()]
    elif isinstance(output, (tuple, list)):
        items = [(str(i), v) for i, v in enumerate(output)]
    else:
        return []
    return [Output(k, tuple(int(d) for d in v.shape)) for k, v in items if hasattr(v, "shape")]


def read_outputs(source: Any, model: Any) -> list[Output]:
    """The model's outputs at its example input (empty when it returns one tensor, or when
    it cannot run on zeros: then scoring says why, with the real data)."""
    backend = source.backend
    try:
        output = backend.forward(model, backend.example_input(source.signature))
    except Exception:  # noqa: BLE001 - not this step's error to report
        return []
    return entries(output)


def default_key(outputs: list[Output]) -> str | None:
    """The first output of shape (batch, classes); None when there is none."""
    return next((o.key for o in outputs if o.is_class_scores), None)


def choose(outputs: list[Output], key: str | None) -> Output | None:
    """The output scores are read from (``key``, else the default); None for one tensor.
    LoadError when ``key`` is unknown or no output has the shape of class scores."""
    if not outputs:
        return None
    key = default_key(outputs) if key is None else str(key)
    found = next((o for o in outputs if o.key == key), None)
    if found is None or not found.is_class_scores:
        shown = ", ".join(o.label for o in outputs)
        raise LoadError(f"Expected the class scores as an output of shape (batch, classes). "
                        f"Received: outputs {shown}"
                        + (f" and the choice {key!r}" if key is not None else "")
                        + "; choose the output that holds the class scores.")
    return found

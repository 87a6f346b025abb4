"""A model's size and cost as the app shows them: totals, per-layer table, labels.

No Streamlit here: the pages format and draw what these functions return, and the tests check
the same numbers. Units follow ``conventions.md``: MACs and params in millions in headline
numbers, exact integers in the per-layer table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from torch import nn

from uif_explorer.torch.macs import Inputs, as_tuple, model_cost

TABLE_COLUMNS = ("name", "type", "params", "macs", "macs_share", "output_shape")
BUNDLED_TEST_SOURCE = "top-1 on the bundled Fashion-MNIST test subset"


@dataclass(frozen=True)
class ModelSummary:
    """Totals and the per-layer table of one model at one example input.

    Attributes:
        params: Number of parameters (exact).
        macs: Multiply-accumulates of one forward pass at ``input_shape`` (exact).
        input_shape: Shape of the example input(s) the MACs were counted at.
        table: One row per layer with own params or MACs; columns ``TABLE_COLUMNS``
            (``macs_share`` in percent of the model's MACs, ``output_shape`` as ``"1x16x28x28"``).
    """

    params: int
    macs: int
    input_shape: tuple[tuple[int, ...], ...]
    table: pd.DataFrame

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def macs_m(self) -> float:
        return self.macs / 1e6

    @property
    def input_label(self) -> str:
        """The input shape(s) as ``1x1x28x28`` (several inputs joined by ``, ``)."""
        return ", ".join(shape_label(s) for s in self.input_shape)

    @property
    def num_layers(self) -> int:
        return len(self.table)


def shape_label(shape: Sequence[int] | None) -> str:
    """``(1, 16, 28, 28)`` -> ``"1x16x28x28"``; ``None`` (a non-tensor output) -> ``""``."""
    return "x".join(str(int(d)) for d in shape) if shape is not None else ""


def format_millions(value: int, decimals: int = 3) -> str:
    """An exact count in millions for a headline number: ``272474 -> "0.272 M"``."""
    return f"{value / 1e6:,.{decimals}f} M"


def format_params(params: int) -> str:
    return format_millions(params, 3)


def format_macs(macs: int) -> str:
    return format_millions(macs, 2)


def summarize_torch_model(model: nn.Module, example_input: Inputs) -> ModelSummary:
    """Count a PyTorch model's params and MACs at ``example_input`` and build its layer table.

    The model is only run forward (under ``no_grad``, in its current mode); forward hooks are
    added and removed, nothing else is touched. Callers holding a shared (cached) model should
    still pass a copy when other threads may run it at the same time.
    """
    inputs = as_tuple(example_input)
    cost = model_cost(model, inputs)
    table = cost.table.copy()
    total = max(cost.macs, 1)
    table["macs_share"] = table["macs"].astype(float) * 100.0 / total
    table["output_shape"] = table["output_shape"].map(shape_label)
    table = table.loc[:, list(TABLE_COLUMNS)].reset_index(drop=True)
    return ModelSummary(
        params=cost.params,
        macs=cost.macs,
        input_shape=tuple(tuple(int(d) for d in x.shape) for x in inputs),
        table=table,
    )


def accuracy_source(num_images: int | None) -> str:
    """Where a recorded accuracy comes from, for the caption next to it."""
    if num_images is None:
        return BUNDLED_TEST_SOURCE
    return f"{BUNDLED_TEST_SOURCE}, {num_images:,} images"


def recorded_accuracy(metrics: Mapping[str, object], name: str) -> float | None:
    """A sample model's recorded top-1 accuracy (percent) on the bundled test subset, if any."""
    entry = metrics.get(name)
    if not isinstance(entry, Mapping):
        return None
    value = entry.get("acc_bundled_test")
    return float(value) if isinstance(value, int | float) else None


def bundled_test_size() -> int | None:
    """How many images the bundled test subset holds (reads only its label array)."""
    import numpy as np

    from uif_explorer.data import BUNDLED_PATH

    try:
        with np.load(BUNDLED_PATH, allow_pickle=False) as npz:
            return int(npz["y_test"].shape[0])
    except (OSError, KeyError, ValueError):
        return None


def load_error_hint(name: str, exc: BaseException, weights_path: Path | None = None) -> str:
    """A one-paragraph, how-to-fix message for a sample model that failed to load.

    Args:
        name: The sample model's key (``resnet20``).
        exc: What loading raised.
        weights_path: Where its weights should be; a missing file gets the training command.
    """
    train = f"`python sample_models/train.py --only {name}`"
    missing = isinstance(exc, FileNotFoundError) or (
        weights_path is not None and not weights_path.exists()
    )
    if missing:
        where = f" (`{_rel(weights_path)}`)" if weights_path is not None else ""
        return (
            f"The trained weights of **{name}**{where} are not on this machine yet. "
            f"Train them with {train} (a few minutes on a CPU), then reload this page."
        )
    if isinstance(exc, KeyError):
        return f"**{name}** is not one of the bundled sample models. Pick another in the sidebar."
    if isinstance(exc, RuntimeError) and "state_dict" in str(exc).lower():
        return (
            f"The weights file of **{name}** does not fit its architecture ({_first_line(exc)}). "
            f"Retrain it with {train}."
        )
    return (
        f"Could not load **{name}**: {type(exc).__name__}: {_first_line(exc)}. "
        f"If its weights file is damaged, retrain it with {train}."
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else "no details"


def _rel(path: Path) -> str:
    from uif_explorer.data import REPO_ROOT

    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)

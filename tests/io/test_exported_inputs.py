"""The inputs of an uploaded ``torch.export`` program are read from its example inputs
(``loading.exported_inputs``): each positional tensor's shape and dtype, in call order; a
program taking a dict is refused with the fix (the app calls ``model(*inputs)``)."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from uif_explorer.io import loading
from uif_explorer.io.loading import LoadError


class ImageAndIds(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.emb = nn.Embedding(10, 4)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean((2, 3)) + self.emb(ids).mean(1)


class DictBatch(ImageAndIds):
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return super().forward(batch["x"], batch["ids"])


def _program(model: nn.Module, args: tuple) -> nn.Module:
    buf = io.BytesIO()
    torch.export.save(torch.export.export(model.eval(), args), buf)
    return loading.load_exported_program(buf.getvalue())


def test_each_positional_input_keeps_its_shape_and_dtype() -> None:
    x, ids = torch.randn(1, 3, 8, 8), torch.tensor([[1, 2, 3]])
    module = _program(ImageAndIds(), (x, ids))
    assert loading.exported_inputs(module) == [((1, 3, 8, 8), "float32"), ((1, 3), "int64")]


def test_a_dict_input_is_refused_with_the_fix() -> None:
    batch = {"x": torch.randn(1, 3, 8, 8), "ids": torch.tensor([[1, 2, 3]])}
    module = _program(DictBatch(), (batch,))
    with pytest.raises(LoadError, match=r"export it with plain tensors in a tuple"):
        loading.exported_inputs(module)

"""Evaluation data of a model with several inputs and a dict output (issue 18 item 4), through
the services the app and the CLI share: an .npz with one array per input (the program's input
names or input_i) plus labels is checked and stored; a bad one is refused with one message
listing every problem and stores nothing; the class-scores output is chosen (first output of
shape (batch, classes), changeable) and scored through ``PickOutput``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from multi_input_models import DEPTH, RGB, SAMPLES, npz_bytes, program_bytes, two_inputs

from uif_explorer.io.loading import LoadError
from uif_explorer.services import eval_data, model_outputs, uploads
from uif_explorer.torch.evaluation import top1_accuracy
from uif_explorer.torch.outputs import PickOutput


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Any, Any]:
    """The eager model, and the source and module of its uploaded program (loaded once: the
    tests store their .npz files in their own folders)."""
    model = two_inputs()
    source, module = uploads.from_pt2(tmp_path_factory.mktemp("pt2"), program_bytes(model))
    return model, source, module


@pytest.mark.parametrize("names", [("rgb", "depth"), ("input_0", "input_1")])
def test_an_npz_per_input_is_stored_and_scores_the_logits(
        tmp_path: Path, program: tuple, names: tuple[str, str]) -> None:
    _, source, module = program
    ds = eval_data.store_npz(tmp_path, npz_bytes(program[0], names), source, model=module)
    assert (ds.kind, ds.count, ds.labelled, ds.arrays, ds.output) == (
        eval_data.NPZ, SAMPLES, True, names, "logits")
    assert (tmp_path / ds.file).is_file()
    x, y = eval_data.arrays(tmp_path, ds, source, 10)
    assert [a.shape for a in x] == [(10, *RGB[1:]), (10, *DEPTH[1:])] and y.shape == (10,)
    ev = eval_data.make_evaluator(source, module, ds, 500, tmp_path)
    assert ev.score(module) == 100.0  # the labels are the program's own predictions
    assert ev.describe().startswith(f"top-1 accuracy (%) on the first {SAMPLES} images")
    assert "output 'logits'" in ev.describe()


BAD = {
    "missing depth": ({"depth": None}, ["missing depth"]),
    "extra array": ({"extra": np.zeros(3)}, ["unexpected extra"]),
    "wrong shape": ({"rgb": np.zeros((SAMPLES, 3, 8, 8), np.float32)},
                    ["rgb has shape (40, 3, 8, 8)"]),
    "lengths": ({"depth": np.zeros((SAMPLES - 1, *DEPTH[1:]), np.float32)},
                ["different lengths: rgb 40, depth 39, labels 40"]),
    "float labels": ({"labels": np.zeros(SAMPLES, np.float32)},
                     ["labels has dtype float32"]),
    "labels past the classes": ({"labels": np.full(SAMPLES, 5)},
                                ["labels lie in 5..5, but the model has 5 classes"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_npz_lists_what_is_wrong_and_stores_nothing(
        tmp_path: Path, program: tuple, case: str) -> None:
    _, source, module = program
    change, words = BAD[case]
    arrays = dict(np.load(io.BytesIO(npz_bytes(program[0]))))
    arrays.update(change)
    buf = io.BytesIO()
    np.savez(buf, **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(LoadError) as err:
        eval_data.store_npz(tmp_path, buf.getvalue(), source, model=module)
    message = str(err.value)
    for word in (*words, "Expected arrays rgb: float32 (N, 3, 16, 16), depth: float32 "
                 "(N, 1, 16, 16), labels: integer (N,) (or named input_0, input_1)",
                 "Received: ", "numpy.savez('data.npz', rgb=..., depth=..., labels=...)"):
        assert word in message, message
    assert not list((tmp_path / "uploads").glob("*.npz"))


def test_corrupt_and_pickled_files_are_refused(tmp_path: Path,
                                               program: tuple) -> None:
    _, source, module = program
    with pytest.raises(LoadError, match="Expected an .npz file .* one array per model input"):
        eval_data.store_npz(tmp_path, b"not an npz at all", source, model=module)
    buf = io.BytesIO()
    np.savez(buf, rgb=np.array([object()], dtype=object))
    with pytest.raises(LoadError, match="need pickle, refused"):
        eval_data.store_npz(tmp_path, buf.getvalue(), source, model=module)
    good = npz_bytes(program[0])
    with pytest.raises(LoadError, match="corrupt .member .rgb.npy. fails its CRC"):
        eval_data.store_npz(tmp_path, good[:5000] + bytes(100) + good[5100:], source,
                            model=module)


def test_the_class_scores_output_is_chosen_and_changeable(
        tmp_path: Path, program: tuple) -> None:
    _, source, module = program
    outputs = model_outputs.read_outputs(source, module)
    assert [(o.key, o.shape) for o in outputs] == [("logits", (1, 5)), ("mask", (1, 2, 16, 16))]
    assert model_outputs.default_key(outputs) == "logits"
    ds = eval_data.store_npz(tmp_path, npz_bytes(program[0]), source, model=module)
    with pytest.raises(LoadError, match=r"Expected the class scores .* Received: outputs "
                       r"logits \(1x5\), mask \(1x2x16x16\) and the choice 'mask'"):
        eval_data.with_output(tmp_path, ds, source, module, "mask")
    again = eval_data.with_output(tmp_path, ds, source, module, "logits")
    assert again == ds and again.key == f"{ds.sha256}:logits"


class TupleOut(torch.nn.Module):
    """A segmentation-style tuple: (mask, logits): the class scores are not first."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        return y, y.mean((2, 3))


def test_pick_output_scores_one_entry_of_a_tuple_with_the_ready_made_top1() -> None:
    model = TupleOut().eval()
    x = torch.randn(12, 1, 4, 4)
    labels = model(x)[1].argmax(1)
    outputs = model_outputs.entries(model(x[:1]))
    assert model_outputs.default_key(outputs) == "1"
    fn = PickOutput(top1_accuracy, "1")
    assert fn.score_name == top1_accuracy.score_name
    assert fn(model, [(x, labels)]) == 100.0
    with pytest.raises(ValueError, match="Expected output index '2' of a tuple"):
        PickOutput(top1_accuracy, "2")(model, [(x, labels)])

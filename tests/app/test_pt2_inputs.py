"""A ``torch.export`` program with two inputs and a dict output uploaded on the Model page
(issue 18 item 4): the app builds its example inputs from the program's own (zeros of each
input at batch 1), so the size, MACs and channel groups are shown, and the page says how to
score it. A reload rebuilds the same two inputs. With an ``.npz`` holding one array per input
and ``labels`` (40 samples), the dict's ``logits`` output is scored, the Sensitivity page
analyses and prunes it, and the Export page shows the slim model; a bad ``.npz`` is refused
with what was expected and received, and the earlier data stays in use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from apptest_pages import assert_no_errors
from multi_input_models import SAMPLES, TwoInputs, npz_bytes, program_bytes, two_inputs
from streamlit.testing.v1 import AppTest

from uif_explorer.services import model_source
from uif_explorer.services.summary import format_params
from uif_explorer.torch.macs import model_cost

APP = "../../app.py"
OCTET = "application/octet-stream"


def test_a_two_input_program_is_summarised_with_its_groups(root: Path) -> None:
    model, program = _program()
    inputs = (torch.randn(1, 3, 16, 16), torch.randn(1, 1, 16, 16))
    at = _upload(AppTest.from_file(APP, default_timeout=240).run(), "up_pt2", "two.pt2",
                 program, "up_pt2_go")
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Input"] == "1x3x16x16, 1x1x16x16"
    assert metrics["Parameters"] == format_params(model_cost(model, inputs).params)
    groups = [df.value for df in at.dataframe if "layers" in df.value.columns]
    assert groups and groups[0]["prunable"].sum() >= 2
    assert any("takes 2 inputs" in c.value and "upload an .npz with one array per input"
               in c.value for c in at.caption)
    assert any("rgb: float32 (N, 3, 16, 16), depth: float32 (N, 1, 16, 16), labels: integer"
               in c.value for c in at.caption)  # what the evaluation .npz must hold
    # the stored source rebuilds both inputs after a reload
    saved = model_source.read_current(next(root.iterdir()))
    assert saved is not None and saved.inputs == (((1, 3, 16, 16), "float32"),
                                                  ((1, 1, 16, 16), "float32"))
    x = model_source.example_input(saved)
    assert [tuple(t.shape) for t in x] == [(1, 3, 16, 16), (1, 1, 16, 16)]


def _program() -> tuple[TwoInputs, bytes]:
    model = two_inputs()
    return model, program_bytes(model)


def _upload(at: AppTest, key: str, name: str, data: bytes, button: str) -> AppTest:
    at.file_uploader(key=key).set_value((name, data, OCTET))
    at.run()
    return at.button(key=button).click().run()


def _with_data(model: TwoInputs, program: bytes) -> AppTest:
    """The app with the two-input program loaded and the good .npz in use."""
    at = AppTest.from_file(APP, default_timeout=240).run()
    at = _upload(at, "up_pt2", "two.pt2", program, "up_pt2_go")
    at = _upload(at, "up_npz", "val.npz", npz_bytes(model), "up_npz_go")
    assert_no_errors(at)
    return at


def test_a_two_input_program_is_scored_analysed_pruned_and_exported(root: Path) -> None:
    from uif_explorer.ui import jobs, workspace

    model, program = _program()
    at = _with_data(model, program)
    flash = " ".join(s.value for s in at.success)
    assert f"{SAMPLES} samples, with labels" in flash and "Output scored: 'logits'" in flash
    (choice,) = [s for s in at.selectbox if s.label == "Output scored as the class scores"]
    assert choice.value == "logits" and choice.options == ["logits (1x5)", "mask (1x2x16x16)"]
    at.button(key="data_score").click().run()
    assert_no_errors(at)
    assert {m.label: m.value for m in at.metric}["Score on this data"] == "100.00 %"
    assert any(f"on the first {SAMPLES} images" in c.value and "output 'logits'" in c.value
               for c in at.caption)
    choice.set_value("mask").run()  # not (batch, classes): refused, the data stays
    assert any("Expected the class scores as an output of shape (batch, classes)" in e.value
               for e in at.error)
    assert at.selectbox(key=choice.key).value == "logits"

    at.switch_page("pages/sensitivity.py").run()
    assert_no_errors(at)
    at.button(key="sens_run").click().run()
    token = at.query_params["ws"]
    token = token[0] if isinstance(token, list) else token
    name = model_source.read_current(root / token).name
    job = jobs.registry().wait(token, f"sensitivity:{name}", timeout=240)
    assert job is not None and job.status == jobs.DONE, job and job.error
    at.run()
    assert_no_errors(at)
    at.slider(key="sens_macs_pct").set_value(29).run()  # 30 % is not within 1 point here
    assert_no_errors(at)
    at.button(key="sens_prune").click().run()
    assert_no_errors(at)
    pruned = at.session_state[workspace.PRUNED_KEY]
    assert pruned.images == SAMPLES and 0 <= pruned.accuracy <= 100
    assert any(f"{SAMPLES} images" in m.value for m in at.markdown if "accuracy" in m.value)

    at.switch_page("pages/export.py").run()
    assert_no_errors(at)
    macs = {m.label: m.value for m in at.metric}["MACs"]
    assert float(macs.split()[0]) < model_cost(model, (torch.zeros(1, 3, 16, 16),
                                                       torch.zeros(1, 1, 16, 16))).macs / 1e6


def test_a_bad_npz_is_refused_and_the_earlier_data_stays(root: Path) -> None:
    model, program = _program()
    at = _with_data(model, program)
    uploads = sorted((next(root.iterdir()) / "uploads").iterdir())
    bad = npz_bytes(model, rgb=np.zeros((SAMPLES, 3, 8, 8), np.float32),
               labels=np.zeros(SAMPLES - 1, np.float32))
    at = _upload(at, "up_npz", "bad.npz", bad, "up_npz_go")
    assert not at.exception
    (message,) = [e.value for e in at.error]
    assert "rgb has shape (40, 3, 8, 8)" in message and "labels has dtype float32" in message
    assert "Expected arrays rgb: float32 (N, 3, 16, 16), depth: float32 (N, 1, 16, 16)" in message
    assert "Received:" in message and "numpy.savez('data.npz', rgb=" in message
    at = _upload(at, "up_npz", "cut.npz", npz_bytes(model)[:200], "up_npz_go")
    assert any("refused" in e.value for e in at.error)
    at.run()
    assert any(f"({SAMPLES} samples, labelled" in m.value for m in at.markdown)
    assert sorted((next(root.iterdir()) / "uploads").iterdir()) == uploads

"""The Export page's int8 handoff and its numbers, through Streamlit's AppTest.

A slim ResNet-20 (30 % of MACs removed, L1 plan, BatchNorm re-estimated) is the session's
pruned model; the Export page shows its score and the original's with their protocol (same
images, BN re-estimation) and says whether they differ beyond noise; it offers "int8 (ONNX
Runtime QDQ)", quantizes it calibrated on the workspace's calibration images, shows fp32 and
int8 side by side with the tolerance, the protocol and the noise verdict, and offers a file
that loads in ONNX Runtime and follows the slim model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import streamlit as st
import torch
from apptest_pages import assert_no_errors as _no_errors
from streamlit.testing.v1 import AppTest

from uif_explorer import zoo
from uif_explorer.services import eval_data
from uif_explorer.services.pruned import PrunedModel
from uif_explorer.torch.evaluation import adaptive_bn_calibration
from uif_explorer.torch.pruner import ChannelPruner
from uif_explorer.ui import workspace

APP = "../../app.py"
TIMEOUT = 300
TOKEN = "int8-export-token-" + "e" * 14
IMAGES = 64
LABEL = "int8 (ONNX Runtime QDQ)"
BN_LINE = "after BN re-estimation on 4 batches"

pytestmark = pytest.mark.skipif(not zoo.get_sample("resnet20").weights_path.exists(),
                                reason="resnet20's weights are not trained yet")


def _slim_resnet20() -> PrunedModel:
    model, x = zoo.load_torch_sample("resnet20"), zoo.example_input("resnet20")
    pruner = ChannelPruner(model, x)
    slim = pruner.slim_model(pruner.plan_for_removal(0.3))
    adaptive_bn_calibration(slim, eval_data.calib_loader())  # as the app's pruning does
    slim.eval()
    return PrunedModel(model=slim, kind="slim", model_name="resnet20", framework="torch",
                       source="L1 plan, 30 % of the MACs removed, adaptive BN", spec_path="",
                       accuracy=eval_data.accuracy(slim, IMAGES), images=IMAGES,
                       score_source=f"{eval_data.data_source(IMAGES)}, {BN_LINE}",
                       removal_ratio=0.3, slim=slim)


def test_export_page_quantizes_to_int8_onnx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            downloads: dict[str, Any]) -> None:
    import onnxruntime as ort

    monkeypatch.setenv("UIF_WORKSPACES", str(tmp_path / "ws"))
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["ws"] = TOKEN
    at.run()
    pruned = _slim_resnet20()
    at.session_state[workspace.PRUNED_KEY] = pruned
    at.switch_page("pages/export.py").run()
    _no_errors(at)
    lines = [m.value for m in at.markdown]
    pruned_line = next(t for t in lines if t.startswith("Accuracy "))
    original_line = next(t for t in lines if t.startswith("Original accuracy "))
    for line in (pruned_line, original_line):  # same images, same protocol, said beside each
        assert f"on {IMAGES} images (95 % interval" in line and BN_LINE in line, line
    assert any(t.startswith("Pruned ") and "vs the original" in t and "noise" in t
               for t in lines), lines
    report = at.session_state["export_original"]
    assert len(report) == 1  # scored once per session, kept
    make = at.button(key="export_int8_make")
    assert make.label == "Make int8 (ONNX Runtime QDQ)"
    assert LABEL not in downloads  # made on a press, not on every run

    at.selectbox(key="export_int8_images").set_value(IMAGES)
    make.click().run()
    _no_errors(at)
    offer = downloads[LABEL]
    assert offer["file_name"] == "resnet20_slim.int8.onnx"
    table = at.dataframe[-1].value
    assert list(table.columns) == ["", "fp32", "int8"]
    assert f"top-1 accuracy on {IMAGES} evaluation images" in set(table[""])
    assert "file size (MB)" in set(table[""])
    assert any("at least 95%" in c.value and "(passed)" in c.value for c in at.caption)
    lines = [m.value for m in at.markdown]
    assert any(t.startswith("Protocol: both files scored as they are") for t in lines), lines
    assert any(t.startswith("int8 top-1 ") and "vs fp32, within noise" in t for t in lines)

    path = tmp_path / "m.int8.onnx"
    path.write_bytes(bytes(offer["data"]))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, _ = eval_data.arrays(tmp_path, eval_data.DataSource(), _source(), 16)
    name = sess.get_inputs()[0].name
    int8 = np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    with torch.inference_mode():
        fp32 = pruned.slim(torch.from_numpy(x)).numpy()
    assert int8.shape == fp32.shape == (16, 10)
    assert np.mean(int8.argmax(1) == fp32.argmax(1)) >= 0.9


def _source():
    from uif_explorer.services.workspace_info import ModelChoice

    return ModelChoice("resnet20", None, None, None).resolve()[0]

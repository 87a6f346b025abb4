"""The Sensitivity page's numbers say what they are (issue 13): the instant number is labelled
as an estimate with its typical error; BatchNorm re-estimation is on by default for the sample
ResNet-20; the slider's plan is measured in the background without a button press and shown
with its image count, 95 % interval and protocol; it equals the score shown after Prune at the
same ratio (same evaluator, same images, same protocol)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from uif_explorer import zoo
from uif_explorer.core.measure import measured_path, read_points
from uif_explorer.io.workspace import Workspace
from uif_explorer.services import analysis, eval_data
from uif_explorer.torch.evaluation import top1_accuracy
from uif_explorer.torch.runners import get_pruning_runner
from uif_explorer.ui import jobs, workspace

TOKEN = "numbers-token-" + "d" * 18
IMAGES = 64  # a quick analysis on few images
PCT = 30  # the slider's default: the first plan measured in the background is this one
BN_LINE = "after BN re-estimation on 4 batches"


@pytest.fixture
def ws_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace holding a quick finished analysis of the sample ResNet-20 (made without BN
    re-estimation: its activation-reusing scorer keeps the fixture quick; the page says the
    protocols differ and measures with its own)."""
    if not zoo.get_sample("resnet20").weights_path.exists():
        pytest.skip("resnet20's weights are not trained yet (sample_models/train.py)")
    runner = get_pruning_runner(zoo.load_torch_sample("resnet20"),
                                zoo.example_input("resnet20"), "iterative",
                                workdir=tmp_path / TOKEN, name="resnet20")
    runner.whole_model_ratios = (0.2, 0.6)  # two plans: the least that states an error
    runner.ana(top1_accuracy, args=(eval_data.test_loader(IMAGES),), ratios=(0.5,))
    analysis.write_settings(runner.workspace.sens("resnet20"), IMAGES, (0.5,))
    monkeypatch.setenv("UIF_WORKSPACES", str(tmp_path))
    return tmp_path


def _page() -> AppTest:
    st.cache_resource.clear()
    at = AppTest.from_file("../../app.py", default_timeout=180)
    at.query_params["ws"] = TOKEN
    at.run()
    at.switch_page("pages/sensitivity.py")
    at.run()
    assert at.slider(key="sens_macs_pct").value == PCT
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    return at


def _texts(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown]


def test_estimate_then_measured_in_the_background_equals_the_score_after_prune(
        ws_root: Path) -> None:
    at = _page()
    assert at.toggle(key="sens_bn").value is True  # BN re-estimation on by default
    labels = [m.label for m in at.metric]
    assert "Estimated accuracy" in labels and not any("Predicted" in x for x in labels)
    line = next(t for t in _texts(at) if t.startswith("Estimated accuracy"))
    assert re.search(r"Estimated accuracy \d+\.\d % — estimate, typically within \d+\.\d "
                     r"points here", line), line

    assert any("analysis was scored without BN re-estimation" in i.value for i in at.info)

    # no button: showing the slider started the measurement of its plan in the background
    job = jobs.registry().wait(TOKEN, "measure:resnet20", timeout=300)
    assert job is not None and job.status == jobs.DONE, job and job.error
    at.run()
    assert not at.exception and not at.error
    line = next(t for t in _texts(at) if "Measured" in t)
    assert re.search(rf"Measured \d+\.\d\d % on {IMAGES} images \(95 % interval "
                     rf"\d+\.\d-\d+\.\d\), {BN_LINE}", line), line
    path = measured_path(Workspace(ws_root / TOKEN), "resnet20")
    point = next(p for p in read_points(path) if p["removal_ratio"] == PCT / 100)
    assert point["images"] == IMAGES and point["protocol"]["bn_reestimation"] is True
    assert point["protocol"]["data"]  # keyed on the images, not only the function names
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("MACs removed vs score: 1 measured plan" in s for s in specs), "chart drawn"

    at.button(key="sens_prune").click().run()
    assert not at.exception and not at.error
    pruned = at.session_state[workspace.PRUNED_KEY]
    assert pruned.removal_ratio == PCT / 100 and pruned.images == IMAGES
    assert pruned.accuracy == pytest.approx(point["score"], abs=0.01)
    after = next(t for t in _texts(at) if t.startswith("Pruned accuracy"))
    assert f"on {IMAGES} images" in after and BN_LINE in after, after
    assert any("vs the unpruned model" in t and "noise" in t for t in _texts(at))

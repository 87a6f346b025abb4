"""The Sensitivity page's numbers say what they are (issue 13): the instant number is labelled
as an estimate with its typical error, a measured preview shows its image count, 95 % interval
and protocol, and it equals the score shown after Prune at the same ratio (same evaluator,
same images, no BN re-estimation on either side)."""

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
from uif_explorer.ui import workspace

TOKEN = "numbers-token-" + "d" * 18
IMAGES = 64  # a quick analysis on few images
PCT = 40


@pytest.fixture
def ws_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace holding a quick finished analysis of the sample ResNet-20."""
    if not zoo.get_sample("resnet20").weights_path.exists():
        pytest.skip("resnet20's weights are not trained yet (sample_models/train.py)")
    runner = get_pruning_runner(zoo.load_torch_sample("resnet20"),
                                zoo.example_input("resnet20"), "iterative",
                                workdir=tmp_path / TOKEN, name="resnet20")
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
    at.slider(key="sens_macs_pct").set_value(PCT).run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    return at


def _texts(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown]


def test_the_instant_number_is_labelled_as_an_estimate(ws_root: Path) -> None:
    at = _page()
    labels = [m.label for m in at.metric]
    assert "Estimated accuracy" in labels and not any("Predicted" in x for x in labels)
    line = next(t for t in _texts(at) if t.startswith("Estimated accuracy"))
    assert re.search(r"Estimated accuracy \d+\.\d % — estimate, typically within \d+\.\d "
                     r"points here", line), line


def test_the_measured_preview_shows_its_images_and_equals_the_score_after_prune(
        ws_root: Path) -> None:
    at = _page()
    at.button(key="sens_measure").click().run()
    assert not at.exception and not at.error
    line = next(t for t in _texts(at) if "Measured" in t)
    assert re.search(rf"Measured \d+\.\d\d % on {IMAGES} images \(95 % interval "
                     r"\d+\.\d-\d+\.\d\), without BN re-estimation", line), line
    path = measured_path(Workspace(ws_root / TOKEN), "resnet20")
    point = next(p for p in read_points(path) if p["removal_ratio"] == PCT / 100)
    assert point["images"] == IMAGES and point["protocol"]["calibration"] is None
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("MACs removed vs score: 1 measured plan" in s for s in specs), "chart drawn"

    at.button(key="sens_prune").click().run()
    assert not at.exception and not at.error
    pruned = at.session_state[workspace.PRUNED_KEY]
    assert pruned.removal_ratio == PCT / 100 and pruned.images == IMAGES
    assert pruned.accuracy == pytest.approx(point["score"], abs=0.01)
    after = next(t for t in _texts(at) if t.startswith("**Pruned accuracy") or
                 t.startswith("Pruned accuracy"))
    assert f"on {IMAGES} images" in after and "without BN re-estimation" in after, after

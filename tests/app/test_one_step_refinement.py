"""Refinement on the One-step page and the protocol line on the One-step and OFA pages,
through Streamlit's AppTest.

A tiny search of the sample ResNet-20 (2 candidates, 64 images) is refined through the page
(both candidates fine-tuned for 1 batch) as a background job; the page then shows the stage
table and chart, the protocol line beside the scores, the image counts, and builds the winner.
An interrupted refinement (a stage score missing from the ``.search`` file, the server's job
registry gone) is offered for resuming when the page is opened again, and finishes. The OFA
page shows the bundled search's protocol line and says "within noise" for two subnets whose
95 % intervals overlap.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from apptest_pages import assert_no_errors as _no_errors
from apptest_pages import open_page
from streamlit.testing.v1 import AppTest

from uif_explorer import zoo
from uif_explorer.services import analysis, eval_data
from uif_explorer.torch.ofa.bundled import supernet_path
from uif_explorer.ui import jobs, workspace

APP = "../../app.py"
TIMEOUT = 300
TOKEN = "refine-tok-" + "d" * 21
IMAGES = 64
JOB = "search:resnet20:0.3"  # the One-step page's job at its default 30 % of MACs removed


@pytest.fixture
def ws_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("UIF_WORKSPACES", str(tmp_path))
    return tmp_path


def _app(page: str) -> AppTest:
    return open_page(page, TOKEN, TIMEOUT)


def _text(at: AppTest) -> str:
    return "\n".join([c.value for c in at.caption] + [m.value for m in at.markdown])


def _finish(at: AppTest) -> None:
    job = jobs.registry().wait(TOKEN, JOB, timeout=TIMEOUT)
    assert job is not None and job.status == jobs.DONE, job and job.error
    at.run()
    _no_errors(at)


def _stage_table(at: AppTest):
    return next(df.value for df in at.dataframe if "winner" in df.value.columns)


@pytest.mark.skipif(not zoo.get_sample("resnet20").weights_path.exists(),
                    reason="resnet20's weights are not trained yet")
def test_a_tiny_refinement_runs_shows_its_stages_and_resumes(ws_root: Path) -> None:
    at = _app("pages/one_step.py")
    at.number_input(key="os_num").set_value(2)
    at.selectbox(key="os_images").set_value(IMAGES)
    at.checkbox(key="os_refine").check().run()
    at.number_input(key="os_keep").set_value(2)
    at.number_input(key="os_steps").set_value(1).run()
    assert "Stages (candidates, fine-tuning batches): (2, 1)" in _text(at)
    at.button(key="os_run").click().run()
    _no_errors(at)
    _finish(at)

    path = ws_root / TOKEN / "resnet20_ratio_0.3.search"
    search = analysis.read_search(path)
    winner = search["refinement"]["winner"]
    assert search["refinement"]["complete"] and winner in (0, 1, 2)  # 2: the uniform plan
    table = _stage_table(at)
    assert list(table.columns) == ["candidate", "plan", "adaptive_bn", "stage 1 (1 batches)",
                                   "reached", "images", "winner"]
    first = sorted(search["refinement"]["stages"][0]["candidates"])  # the uniform plan (2) too
    assert sorted(table["candidate"]) == first and 2 in first
    assert dict(zip(table["candidate"], table["plan"], strict=True))[2] == "uniform L1"
    assert (table["images"] == IMAGES).all()
    assert int(table.loc[table["winner"], "candidate"].iloc[0]) == winner
    text = _text(at)
    protocol = (f"Protocol: top1_accuracy on {IMAGES} images of the bundled Fashion-MNIST test "
                "subset, "
                f"after BN re-estimation on {eval_data.CALIB_BATCHES} batches")
    assert text.count(protocol) >= 2  # beside the candidates and beside the stages
    assert f"Refinement chose candidate {winner}" in text
    assert f"on {IMAGES} images (95 % interval" in text  # the candidate comparison
    candidates = next(df.value for df in at.dataframe if "removed_pct" in df.value.columns)
    assert (candidates["images"] == IMAGES).all()
    assert any(t["layout"]["title"]["text"].startswith("Refinement")
               for t in (json.loads(el.proto.spec) for el in at.get("plotly_chart")))
    at.button(key="os_build_winner").click().run()
    _no_errors(at)
    built = at.session_state[workspace.PRUNED_KEY]
    assert built.candidate == winner and built.images == IMAGES
    assert f"on {IMAGES} images" in _text(at)

    # a refinement interrupted before its last score, reopened after a server restart
    state = search["refinement"]
    state["stages"][-1]["scores"].pop(str(winner))
    state.update(complete=False, winner=None)
    path.write_text(json.dumps(search))
    at = _app("pages/one_step.py")
    _no_errors(at)
    assert any("stopped after 1 of 2 fine-tunes" in w.value for w in at.warning)
    at.button(key="os_resume").click().run()
    _finish(at)
    again = analysis.read_search(path)["refinement"]
    assert again["complete"] and len(again["stages"][-1]["scores"]) == 2
    assert _stage_table(at)["winner"].sum() == 1


@pytest.mark.skipif(not supernet_path("mobilenetv2_small").exists(),
                    reason="the bundled supernet is not trained")
def test_ofa_comparison_shows_the_protocol_and_within_noise(ws_root: Path) -> None:
    at = _app("pages/ofa.py")
    at.selectbox(key="ofa_supernet").set_value("bundled:mobilenetv2_small").run()
    picks = "ofa_picks_bundled:mobilenetv2_small"
    # two front subnets 0.2 points apart on 500 images: their intervals overlap
    at.multiselect(key=picks).set_value(["net_evo_7_mutate_6", "net_evo_3_mutate_7"]).run()
    _no_errors(at)
    assert ("Protocol: top1_accuracy on 500 images of the bundled Fashion-MNIST test subset, "
            "after BN re-estimation on 8 batches") in _text(at)
    compare = next(df.value for df in at.dataframe if "vs_best" in df.value.columns)
    assert (compare["images"] == 500).all()
    assert sorted(compare["vs_best"]) == ["the most accurate", "within noise"]
    assert all("-" in v for v in compare["interval"])

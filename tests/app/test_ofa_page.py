"""The OFA Pareto page through Streamlit's AppTest, on the bundled MobileNetV2 supernet.

The bundled search is shown at once; the MACs slider filters it; a plot selection (its widget
state set as the browser would) or the keyboard fallback (the multiselect) fills the
comparison; "Use this subnet" stores a measured static subnet for the Export page; a tiny new
search runs in the background and is then shown.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import streamlit as st
from apptest_pages import assert_no_errors as _no_errors
from apptest_pages import open_page
from streamlit.testing.v1 import AppTest

from uif_explorer.services import ofa_app
from uif_explorer.torch.ofa.bundled import supernet_path
from uif_explorer.ui import jobs, workspace

APP = "../../app.py"
TIMEOUT = 180
TOKEN = "ofa-test-token-" + "c" * 17
REF = "bundled:mobilenetv2_small"
SEARCH = "bundled:mobilenetv2_small"
PICKS = f"ofa_picks_{SEARCH}"
PLOT = f"ofa_plot_{SEARCH}"

pytestmark = pytest.mark.skipif(not supernet_path("mobilenetv2_small").exists(),
                                reason="the bundled supernet is not trained")


@pytest.fixture
def ws_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("UIF_WORKSPACES", str(tmp_path))
    return tmp_path


def _app() -> AppTest:
    # the default supernet is the current model's (ResNet-20)
    return open_page("pages/ofa.py", TOKEN, TIMEOUT, state={"ofa_supernet": REF})


def _figures(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def _evolution_figure(at: AppTest) -> dict:
    figs = [f for f in _figures(at)
            if any(t.get("name") == "Pareto front" for t in f["data"])]
    assert figs, "no evolution figure with a Pareto front trace"
    return figs[0]


def _captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def test_opens_with_the_bundled_search_plotted(ws_root: Path) -> None:
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["ws"] = TOKEN
    at.run()
    at.switch_page("pages/ofa.py").run()
    _no_errors(at)
    assert at.selectbox(key="ofa_supernet").value == "bundled:resnet20"  # the current model
    at.selectbox(key="ofa_supernet").set_value(REF).run()
    _no_errors(at)
    assert at.selectbox(key="ofa_supernet").value == REF
    assert at.selectbox(key=f"ofa_search_{REF}").value == SEARCH
    fig = _evolution_figure(at)
    names = [t.get("name") for t in fig["data"]]
    assert names[:2] == ["evaluated subnets", "Pareto front"]
    assert len(fig["data"][0]["x"]) == 136 and len(fig["data"][1]["x"]) >= 2
    assert fig["layout"]["xaxis"]["title"]["text"] == "MACs (millions)"
    text = _captions(at)
    assert "136 of 136 evaluated subnets" in text
    assert "top-1 on the first 500 images of the bundled Fashion-MNIST test subset" in text
    assert "MACs in millions at input 1x1x28x28" in text
    assert at.info  # says to click a point


def test_the_macs_filter_changes_what_is_shown(ws_root: Path) -> None:
    at = _app()
    at.slider(key=f"ofa_macs_{REF}").set_value((3.0, 4.0)).run()
    _no_errors(at)
    fig = _evolution_figure(at)
    xs = fig["data"][0]["x"]
    assert 0 < len(xs) < 136 and all(3.0 <= x <= 4.0 for x in xs)
    assert all(3.0 <= x <= 4.0 for x in fig["data"][1]["x"])
    assert f"{len(xs)} of 136 evaluated subnets in 3.00-4.00 M MACs" in _captions(at)
    assert all(3.0 <= float(o.split("(")[1].split(" M")[0]) <= 4.0
               for o in at.multiselect(key=PICKS).options)


def test_a_plot_selection_shows_the_comparison(ws_root: Path) -> None:
    at = _app()
    fig = _evolution_figure(at)
    front = [c[0] for c in fig["data"][1]["customdata"]]
    # what the browser sends after a box selection over two front points
    at.session_state[PLOT] = {"selection": {"points": [
        {"customdata": [front[0], 0.0, -1]}, {"customdata": [front[-1], 0.0, -1]}],
        "point_indices": [0, 1], "box": [], "lasso": []}}
    at.run()
    _no_errors(at)
    assert at.multiselect(key=PICKS).value == [front[0], front[-1]]
    assert any(h.value == "Comparing 2 subnet(s)" for h in at.subheader)
    compare = next(df.value for df in at.dataframe if "origin" in df.value.columns)
    assert list(compare["net_id"]) == [front[0], front[-1]]
    widths = next(df.value for df in at.dataframe if "channels" in df.value.columns
                  and front[0] in df.value.columns)
    assert (widths[front[0]] <= widths["channels"]).all()
    chart = next(f for f in _figures(at) if f["layout"]["title"]["text"].startswith("Output"))
    assert [t["name"] for t in chart["data"]] == ["full (max subnet)", front[0], front[-1]]
    highlighted = next(t for t in _evolution_figure(at)["data"] if t.get("name") == "selected")
    assert sorted(c[0] for c in highlighted["customdata"]) == sorted([front[0], front[-1]])


def test_keyboard_choice_and_use_this_subnet(ws_root: Path) -> None:
    at = _app()
    at.multiselect(key=PICKS).set_value(["net_min", "net_max"]).run()
    _no_errors(at)
    assert any(h.value == "Comparing 2 subnet(s)" for h in at.subheader)
    at.selectbox(key="ofa_use_pick").set_value("net_min")
    at.selectbox(key="ofa_use_images").set_value(64)
    at.button(key="ofa_use").click().run()
    _no_errors(at)
    metric = next(m for m in at.metric if m.label.startswith("Subnet net_min"))
    assert metric.value.endswith(" %")
    assert "first 64 images of the bundled Fashion-MNIST test subset" in _captions(at)
    pruned = at.session_state[workspace.PRUNED_KEY]
    assert pruned.kind == "ofa_subnet" and pruned.model_name == "mobilenetv2_small"
    assert pruned.net_id == "net_min" and f"{pruned.accuracy:.2f} %" == metric.value
    assert pruned.macs_m == pytest.approx(2.164976, abs=1e-5)
    saved = json.loads(Path(pruned.spec_path).read_text())
    assert saved["subnet_setting"] == pruned.subnet_setting
    assert Path(pruned.spec_path).parent == ws_root / TOKEN


def test_a_new_search_runs_in_the_background_and_is_shown(ws_root: Path) -> None:
    at = _app()
    at.slider(key=f"ofa_macs_{REF}").set_value((3.0, 4.0))
    at.number_input(key="ofa_popu").set_value(2)
    at.number_input(key="ofa_iter").set_value(0)
    at.selectbox(key="ofa_search_images").set_value(64)
    at.run()
    at.button(key="ofa_search_run").click().run()
    _no_errors(at)
    job = jobs.registry().wait(TOKEN, f"ofa_search:{REF}", timeout=TIMEOUT)
    assert job is not None and job.status == jobs.DONE, job and job.error
    at.run()
    _no_errors(at)
    shown = at.selectbox(key=f"ofa_search_{REF}")
    assert shown.value.startswith("workspace:") and shown.value.endswith("_evolution.json")
    fig = _evolution_figure(at)
    assert len(fig["data"][0]["x"]) == 2
    assert "top-1 on the first 64 images" in _captions(at)
    saved = list((ws_root / TOKEN).glob("*_evolution.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["complete"]


@pytest.mark.slow
def test_train_a_supernet_then_select_it(ws_root: Path) -> None:
    at = _app()
    at.selectbox(key="ofa_train_images").set_value(256)
    at.run()
    at.button(key="ofa_train_run").click().run()
    _no_errors(at)
    job = jobs.registry().wait(TOKEN, "ofa_train", timeout=600)
    assert job is not None and job.status == jobs.DONE, job and job.error
    at.run()
    _no_errors(at)
    key = at.selectbox(key="ofa_supernet").value
    assert key.startswith("workspace:mobilenetv2_small_supernet_")
    assert any(s.sample == "mobilenetv2_small"
               for s in ofa_app.workspace_supernets(ws_root / TOKEN))
    assert any("No search of this supernet yet" in i.value for i in at.info)


def test_job_widgets_show_progress_cancel_and_failure(ws_root: Path) -> None:
    """The shared ``jobs.progress_block``: a running search has a progress bar and Cancel;
    a cancelled one says so; a failed one is an error message, not a traceback."""
    import time

    at = _app()
    registry = jobs.registry()
    name = f"ofa_search:{REF}"

    def slow(job: jobs.Job) -> None:
        for step in range(10_000):
            job.progress(step, 10_000, {})
            time.sleep(0.01)

    registry.start(TOKEN, name, slow, label="Evolutionary search")
    at.run()
    assert not at.exception
    assert at.button(key=f"cancel_{name}").label == "Cancel"
    assert at.button(key="ofa_search_run").disabled
    at.button(key=f"cancel_{name}").click().run()
    job = registry.wait(TOKEN, name, timeout=30)
    assert job is not None and job.status == jobs.CANCELLED
    at.run()
    assert any("Evolutionary search cancelled" in i.value for i in at.info)

    def broken(job: jobs.Job) -> None:
        raise RuntimeError("the disk is full\nsecond line")

    registry.start(TOKEN, name, broken, label="Evolutionary search")
    registry.wait(TOKEN, name, timeout=30)
    at.run()
    assert not at.exception
    assert any("Evolutionary search stopped: RuntimeError: the disk is full" in e.value
               for e in at.error)

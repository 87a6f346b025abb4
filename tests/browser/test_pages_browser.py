"""Sensitivity -> One-step -> Export in a real browser against ./run.sh (Debian's Chromium).

One visitor's journey in one browser page (one session, one workspace): analyse the sample
ResNet-20 with the quick setting (reloading mid-run), move the MACs slider, prune; run a
3-candidate one-step search, click a point, build it; download the slim state dict. A second
visitor opens a workspace holding a saved spec, rebuilds it on the Export page, downloads the
int8 (ONNX Runtime QDQ) file, which loads and runs, and times every variant.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser_steps import LOAD_MS, download, go, no_trouble, shot
from playwright.sync_api import Page, expect

from uif_explorer import zoo

pytestmark = pytest.mark.browser

JOB_MS = 420_000  # a loaded 2-core machine: 25 evaluations of 200 images


def test_sensitivity_one_step_export_journey(
    page: Page, app_url: str, app_health: Callable[[], str], tmp_path: Path
) -> None:
    if not zoo.get_sample("resnet20").weights_path.exists():
        pytest.skip("resnet20's weights are not trained yet (sample_models/train.py)")
    page.goto(app_url)
    expect(page.get_by_role("heading", name="ResNet-20")).to_be_visible(timeout=LOAD_MS)

    # -- Sensitivity: run the quick analysis, reload mid-run, curves appear -----------------
    go(page, "Sensitivity")
    expect(page.get_by_role("combobox", name="Analysis setting")).to_have_value(
        "quick: 200 images, ratios 0.3/0.6", timeout=LOAD_MS)  # after tracing the groups
    page.get_by_role("button", name="Run analysis").click()
    expect(page.get_by_test_id("stProgress")).to_be_visible(timeout=LOAD_MS)
    shot(page, "sensitivity_running.png")
    assert re.search(r"[?&]ws=[A-Za-z0-9_-]{16,64}", page.url), page.url
    page.reload()  # the job and the .sens file survive: the page picks the run up again
    expect(page.get_by_role("heading", name="Sensitivity", exact=True)).to_be_visible(
        timeout=LOAD_MS)
    slider = page.get_by_role("slider")
    expect(slider).to_be_visible(timeout=JOB_MS)
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible()
    no_trouble(page)

    # -- the MACs slider updates the preview -------------------------------------------------
    macs = page.get_by_test_id("stMetric").filter(has_text="MACs after pruning")
    before = macs.inner_text()
    slider.focus()
    for _ in range(10):
        page.keyboard.press("ArrowRight")
    expect(slider).to_have_value("40", timeout=LOAD_MS)
    expect(macs).not_to_have_text(before, timeout=LOAD_MS)
    removed = page.get_by_test_id("stMetric").filter(has_text="MACs removed")
    expect(removed).to_contain_text(re.compile(r"(39|40|41)\.\d %"), timeout=LOAD_MS)
    shot(page, "sensitivity_curves.png")

    page.get_by_role("button", name="Prune", exact=True).click()
    pruned = page.get_by_test_id("stMetric").filter(has_text="Pruned accuracy")
    expect(pruned).to_be_visible(timeout=LOAD_MS)
    expect(pruned).to_contain_text("%")
    no_trouble(page)
    shot(page, "sensitivity_pruned.png")

    # -- One-step: 3 candidates, click a point, see its ratios, build it ---------------------
    go(page, "One-step")
    count = page.get_by_role("spinbutton", name="Candidates")
    count.fill("3")
    count.press("Enter")
    page.get_by_role("button", name="Run search").click()
    scatter = page.locator(".js-plotly-plot").first
    expect(scatter).to_be_visible(timeout=JOB_MS)
    expect(page.get_by_role("heading", name=re.compile(r"^Candidate \d+"))).to_be_visible()
    points = scatter.locator(".scatterlayer .trace").first.locator("path.point")
    expect(points.first).to_be_attached(timeout=LOAD_MS)
    points.first.click(force=True)
    expect(page.get_by_role("heading", name=re.compile(r"beside the best"))).to_be_visible(
        timeout=LOAD_MS)
    shot(page, "one_step_selected.png")
    page.get_by_role("button", name=re.compile(r"^Build candidate")).click()
    expect(page.get_by_test_id("stMetric").filter(has_text="Built: One-step")).to_be_visible(
        timeout=LOAD_MS)
    no_trouble(page)

    # -- Export: the slim state dict downloads and loads with the original's keys ------------
    go(page, "Export")
    target = download(page, "Slim state dict (.safetensors)", tmp_path / "slim.safetensors")
    from safetensors.torch import load_file

    state = load_file(str(target))
    original = zoo.load_torch_sample("resnet20").state_dict()
    assert set(state) == set(original)
    assert any(state[k].shape != original[k].shape for k in state)  # really slimmer

    report = download(page, "Report with charts (.html)", tmp_path / "report.html")
    text = report.read_text()
    assert "Channels per layer, before and after" in text and "One-step search" in text

    page.get_by_role("button", name="Make ONNX (checked with ONNX Runtime)").click()
    expect(page.get_by_text("ONNX Runtime check passed")).to_be_visible(timeout=LOAD_MS)
    expect(page.get_by_role("button", name="ONNX (.onnx)")).to_be_visible()
    page.get_by_role("button", name="Measure latency").click()
    expect(page.get_by_test_id("stMetric").filter(has_text="Pruned (slim)")).to_contain_text(
        " ms", timeout=LOAD_MS)
    expect(page.get_by_text("Median of 10 forwards each, interleaved")).to_be_visible()
    shot(page, "export_page.png")
    no_trouble(page)
    assert app_health() == "ok"


@pytest.fixture
def saved_spec() -> Iterator[str]:
    """A workspace of the running app holding a spec of the sample ResNet-20 (30 % of its
    MACs removed, L1): its token. Removed afterwards."""
    from uif_explorer.io.workspace import Workspace, atomic_write_json
    from uif_explorer.torch.pruner import ChannelPruner
    from uif_explorer.ui.workspace import new_token, workspaces_root

    token = new_token()
    folder = workspaces_root() / token
    folder.mkdir(parents=True)
    pr = ChannelPruner(zoo.load_torch_sample("resnet20"), zoo.example_input("resnet20"))
    spec = folder / "resnet20_ratio_0.3.spec"
    atomic_write_json(spec, pr.to_spec(pr.plan_for_removal(0.3), model="resnet20",
                                       criterion="l1", removal_ratio=0.3))
    Workspace(folder).write_latest_spec(spec)
    yield token
    shutil.rmtree(folder, ignore_errors=True)


def test_export_page_downloads_an_int8_onnx_file_that_loads(
    page: Page, app_url: str, saved_spec: str, tmp_path: Path
) -> None:
    import numpy as np
    import onnxruntime as ort

    if not zoo.get_sample("resnet20").weights_path.exists():
        pytest.skip("resnet20's weights are not trained yet (sample_models/train.py)")
    page.goto(f"{app_url}/export?ws={saved_spec}")
    expect(page.get_by_role("heading", name="Export", exact=True)).to_be_visible(
        timeout=LOAD_MS)
    page.get_by_role("button", name="Rebuild from the saved spec").click()
    page.get_by_role("combobox", name="Evaluation images for the check").click(timeout=LOAD_MS)
    page.get_by_role("option", name="64", exact=True).click()  # the cheaper check
    page.get_by_role("button", name="Make int8 (ONNX Runtime QDQ)").click()
    expect(page.get_by_text(re.compile(r"Checked before writing.*\(passed\)"))).to_be_visible(
        timeout=LOAD_MS)
    path = download(page, "int8 (ONNX Runtime QDQ)", tmp_path / "slim.int8.onnx")
    assert path.stat().st_size > 1000
    sess = ort.InferenceSession(path.read_bytes(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x})
    assert out.shape == (1, 10) and np.isfinite(out).all()
    assert any(n.op_type == "QuantizeLinear" for n in _onnx_nodes(path))  # really int8

    # the latency table times every variant, each with what ran it
    page.get_by_role("button", name="Measure latency").click()
    table = page.get_by_test_id("stTable")
    expect(table).to_contain_text("pruned, int8 file", timeout=LOAD_MS)
    for row in ("original", "pruned (slim)", "pruned, fp32 file"):
        expect(table).to_contain_text(row)
    expect(table).to_contain_text("ONNX Runtime")
    expect(table).to_contain_text("PyTorch model, in this process")
    expect(page.get_by_text(re.compile(r"Measured, not predicted: median of 10"))).to_be_visible()
    no_trouble(page)


def _onnx_nodes(path: Path) -> list:
    import onnx

    return list(onnx.load(str(path)).graph.node)

"""Sensitivity -> One-step -> Export in a real browser against ./run.sh (Debian's Chromium).

One visitor's journey in one browser page (one session, one workspace): analyse the sample
ResNet-20 with the quick setting (reloading mid-run), move the MACs slider, prune; run a
3-candidate one-step search, click a point, build it; download the slim state dict.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from uif_explorer import zoo

pytestmark = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parents[2]
SHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
LOAD_MS = 90_000
JOB_MS = 420_000  # a loaded 2-core machine: 25 evaluations of 200 images


def _shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(800)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def _no_trouble(page: Page) -> None:
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)


def _go(page: Page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible(timeout=LOAD_MS)


def test_sensitivity_one_step_export_journey(
    page: Page, app_url: str, app_health: Callable[[], str], tmp_path: Path
) -> None:
    if not zoo.get_sample("resnet20").weights_path.exists():
        pytest.skip("resnet20's weights are not trained yet (sample_models/train.py)")
    page.goto(app_url)
    expect(page.get_by_role("heading", name="ResNet-20")).to_be_visible(timeout=LOAD_MS)

    # -- Sensitivity: run the quick analysis, reload mid-run, curves appear -----------------
    _go(page, "Sensitivity")
    expect(page.get_by_role("combobox", name="Analysis setting")).to_have_value(
        "quick: 200 images, ratios 0.3/0.6")
    page.get_by_role("button", name="Run analysis").click()
    expect(page.get_by_test_id("stProgress")).to_be_visible(timeout=LOAD_MS)
    _shot(page, "sensitivity_running.png")
    assert re.search(r"[?&]ws=[A-Za-z0-9_-]{16,64}", page.url), page.url
    page.reload()  # the job and the .sens file survive: the page picks the run up again
    expect(page.get_by_role("heading", name="Sensitivity", exact=True)).to_be_visible(
        timeout=LOAD_MS)
    slider = page.get_by_role("slider")
    expect(slider).to_be_visible(timeout=JOB_MS)
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible()
    _no_trouble(page)

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
    _shot(page, "sensitivity_curves.png")

    page.get_by_role("button", name="Prune").click()
    pruned = page.get_by_test_id("stMetric").filter(has_text="Pruned accuracy")
    expect(pruned).to_be_visible(timeout=LOAD_MS)
    expect(pruned).to_contain_text("%")
    _no_trouble(page)
    _shot(page, "sensitivity_pruned.png")

    # -- One-step: 3 candidates, click a point, see its ratios, build it ---------------------
    _go(page, "One-step")
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
    _shot(page, "one_step_selected.png")
    page.get_by_role("button", name=re.compile(r"^Build candidate")).click()
    expect(page.get_by_test_id("stMetric").filter(has_text="Built: One-step")).to_be_visible(
        timeout=LOAD_MS)
    _no_trouble(page)

    # -- Export: the slim state dict downloads and loads with the original's keys ------------
    _go(page, "Export")
    button = page.get_by_role("button", name="Slim state dict (.safetensors)")
    expect(button).to_be_visible(timeout=LOAD_MS)
    with page.expect_download(timeout=LOAD_MS) as info:
        button.click()
    target = tmp_path / "slim.safetensors"
    info.value.save_as(target)
    from safetensors.torch import load_file

    state = load_file(str(target))
    original = zoo.load_torch_sample("resnet20").state_dict()
    assert set(state) == set(original)
    assert any(state[k].shape != original[k].shape for k in state)  # really slimmer

    with page.expect_download(timeout=LOAD_MS) as info:
        page.get_by_role("button", name="Report with charts (.html)").click()
    report = tmp_path / "report.html"
    info.value.save_as(report)
    text = report.read_text()
    assert "Channels per layer, before and after" in text and "One-step search" in text

    page.get_by_role("button", name="Make ONNX (checked with ONNX Runtime)").click()
    expect(page.get_by_text("ONNX Runtime check passed")).to_be_visible(timeout=LOAD_MS)
    expect(page.get_by_role("button", name="ONNX (.onnx)")).to_be_visible()
    page.get_by_role("button", name="Measure latency").click()
    expect(page.get_by_test_id("stMetric").filter(has_text="Pruned (slim)")).to_contain_text(
        " ms", timeout=LOAD_MS)
    expect(page.get_by_text("Median of 10 forwards each, interleaved")).to_be_visible()
    _shot(page, "export_page.png")
    _no_trouble(page)
    assert app_health() == "ok"

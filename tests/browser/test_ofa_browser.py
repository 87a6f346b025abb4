"""OFA Pareto in a real browser against ./run.sh (Debian's Chromium): the bundled search is
drawn at once, clicking a point of the Pareto front opens the comparison, a second click adds
another subnet, and the chosen subnet can be used. Screenshot: test-artifacts/ofa_page.png."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from uif_explorer.torch.ofa.bundled import supernet_path

pytestmark = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
LOAD_MS = 120_000


def _no_trouble(page: Page) -> None:
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)


def test_ofa_pareto_click_a_front_point_and_compare(
    page: Page, app_url: str, app_health: Callable[[], str]
) -> None:
    if not supernet_path("mobilenetv2_small").exists():
        pytest.skip("the bundled supernet is not trained (sample_models/train_supernet.py)")
    page.goto(app_url)
    nav = page.get_by_test_id("stSidebarNav").get_by_role("link", name="OFA Pareto")
    expect(nav).to_be_visible(timeout=LOAD_MS)
    nav.click()
    expect(page.get_by_role("heading", name="OFA Pareto", exact=True)).to_be_visible(
        timeout=LOAD_MS)

    plot = page.locator(".js-plotly-plot").first
    expect(plot).to_be_visible(timeout=LOAD_MS)
    expect(plot.locator(".gtitle")).to_contain_text("136 subnets", timeout=LOAD_MS)
    traces = plot.locator(".scatterlayer .trace")
    expect(traces).to_have_count(2, timeout=LOAD_MS)  # evaluated subnets + Pareto front
    front_points = traces.nth(1).locator("path.point")
    expect(front_points.first).to_be_attached(timeout=LOAD_MS)
    assert front_points.count() >= 2
    _no_trouble(page)

    front_points.first.click(force=True)
    expect(page.get_by_role("heading", name="Comparing 1 subnet(s)")).to_be_visible(
        timeout=LOAD_MS)
    # the chosen point is drawn as a diamond on the plot: a third trace
    expect(page.locator(".js-plotly-plot").first.locator(".scatterlayer .trace")).to_have_count(
        3, timeout=LOAD_MS)
    last = page.locator(".js-plotly-plot").first.locator(".scatterlayer .trace").nth(1) \
        .locator("path.point").last
    last.click(force=True)
    expect(page.get_by_role("heading", name="Comparing 2 subnet(s)")).to_be_visible(
        timeout=LOAD_MS)
    expect(page.get_by_text("Output channels per layer")).to_be_visible(timeout=LOAD_MS)
    _no_trouble(page)

    page.get_by_role("button", name="Use this subnet").click()
    metric = page.get_by_test_id("stMetric").filter(has_text="measured accuracy")
    expect(metric).to_be_visible(timeout=LOAD_MS)
    expect(metric).to_contain_text(re.compile(r"\d+\.\d\d %"))
    _no_trouble(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.get_by_test_id("stSlider").first.scroll_into_view_if_needed()
    page.wait_for_timeout(800)
    page.screenshot(path=str(ARTIFACTS / "ofa_page.png"), full_page=True)
    assert app_health() == "ok"

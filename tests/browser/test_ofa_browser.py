"""OFA Pareto in a real browser against ./run.sh (Debian's Chromium): the bundled search is
drawn at once, clicking a point of the Pareto front opens the comparison, a second click adds
another subnet, and the chosen subnet can be used. Screenshot: test-artifacts/ofa_page.png."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from browser_steps import REPO_ROOT, go, no_trouble, shot
from playwright.sync_api import Page, expect

from uif_explorer.torch.ofa.bundled import supernet_path

pytestmark = pytest.mark.browser

ARTIFACTS = REPO_ROOT / "test-artifacts"
LOAD_MS = 120_000


def test_ofa_pareto_click_a_front_point_and_compare(
    page: Page, app_url: str, app_health: Callable[[], str]
) -> None:
    if not supernet_path("mobilenetv2_small").exists():
        pytest.skip("the bundled supernet is not trained (sample_models/train_supernet.py)")
    page.goto(app_url)
    go(page, "OFA Pareto", timeout=LOAD_MS)

    plot = page.locator(".js-plotly-plot").first
    expect(plot).to_be_visible(timeout=LOAD_MS)
    expect(plot.locator(".gtitle")).to_contain_text("136 subnets", timeout=LOAD_MS)
    traces = plot.locator(".scatterlayer .trace")
    expect(traces).to_have_count(2, timeout=LOAD_MS)  # evaluated subnets + Pareto front
    front_points = traces.nth(1).locator("path.point")
    expect(front_points.first).to_be_attached(timeout=LOAD_MS)
    assert front_points.count() >= 2
    no_trouble(page)

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
    no_trouble(page)

    page.get_by_role("button", name="Use this subnet").click()
    metric = page.get_by_test_id("stMetric").filter(has_text="measured accuracy")
    expect(metric).to_be_visible(timeout=LOAD_MS)
    expect(metric).to_contain_text(re.compile(r"\d+\.\d\d %"))
    no_trouble(page)
    page.get_by_test_id("stSlider").first.scroll_into_view_if_needed()
    shot(page, "ofa_page.png", folder=ARTIFACTS)
    assert app_health() == "ok"

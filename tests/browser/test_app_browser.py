"""The app in a real browser, started by ./run.sh: the Model page shows the sample ResNet-20."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from uif_explorer import zoo
from uif_explorer.services.summary import format_macs, format_params
from uif_explorer.torch.macs import model_cost

pytestmark = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parents[2]
SHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
DOCS_IMAGE = REPO_ROOT / "docs" / "images" / "model_page.png"
LOAD_TIMEOUT_MS = 90_000


def test_model_page_shows_the_sample_resnet20(
    page: Page, app_url: str, app_health: Callable[[], str]
) -> None:
    if not zoo.get_sample("resnet20").weights_path.exists():
        pytest.skip("resnet20's weights are not trained yet (sample_models/train.py)")
    cost = model_cost(zoo.load_torch_sample("resnet20"), zoo.example_input("resnet20"))

    page.goto(app_url)
    expect(page.get_by_role("heading", name="ResNet-20")).to_be_visible(timeout=LOAD_TIMEOUT_MS)
    metrics = page.get_by_test_id("stMetric")
    expect(metrics).to_have_count(4)
    expect(metrics.filter(has_text="Parameters")).to_contain_text(format_params(cost.params))
    expect(metrics.filter(has_text="MACs at input 1x1x28x28")).to_contain_text(
        format_macs(cost.macs)
    )
    expect(page.get_by_role("combobox", name="Sample model")).to_have_value("ResNet-20")
    expect(page.get_by_test_id("stDataFrame")).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)

    page.wait_for_timeout(1000)  # let the table's canvas finish drawing
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / "model_page.png"
    page.screenshot(path=str(shot))
    if os.environ.get("UIF_UPDATE_DOCS_IMAGES") == "1":
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_IMAGE)

    assert app_health() == "ok"
    assert Path(shot).stat().st_size > 10_000


def test_picking_another_sample_model_in_the_sidebar(
    page: Page, app_url: str, app_health: Callable[[], str]
) -> None:
    name = "mobilenetv2_small"
    if not zoo.get_sample(name).weights_path.exists():
        pytest.skip(f"{name}'s weights are not trained yet (sample_models/train.py)")
    title = zoo.SAMPLE_MODELS[name].title
    cost = model_cost(zoo.load_torch_sample(name), zoo.example_input(name))

    page.goto(app_url)
    picker = page.get_by_role("combobox", name="Sample model")
    expect(picker).to_have_value("ResNet-20", timeout=LOAD_TIMEOUT_MS)
    picker.click()
    page.get_by_role("option", name=title, exact=True).click()
    expect(page.get_by_role("heading", name=title)).to_be_visible(timeout=LOAD_TIMEOUT_MS)
    metrics = page.get_by_test_id("stMetric")
    expect(metrics.filter(has_text="Parameters")).to_contain_text(format_params(cost.params))
    expect(metrics.filter(has_text="MACs at input")).to_contain_text(format_macs(cost.macs))
    expect(page.get_by_test_id("stException")).to_have_count(0)
    assert app_health() == "ok"


def test_uploading_a_state_dict_for_a_registry_architecture(
    page: Page, app_url: str, app_health: Callable[[], str], tmp_path: Path
) -> None:
    """A real file chooser upload: ResNet-20 weights saved with torch.save(state_dict)."""
    if not zoo.get_sample("resnet20").weights_path.exists():
        pytest.skip("resnet20's weights are not trained yet (sample_models/train.py)")
    import torch

    model = zoo.load_torch_sample("resnet20")
    cost = model_cost(model, zoo.example_input("resnet20"))
    weights = tmp_path / "my finetuned resnet20.pth"  # the name is never used as a path
    torch.save(model.state_dict(), weights)

    page.goto(app_url)
    expect(page.get_by_role("heading", name="ResNet-20")).to_be_visible(timeout=LOAD_TIMEOUT_MS)
    page.get_by_role("tab", name="PyTorch weights").click()
    expect(page.get_by_role("combobox", name="Architecture")).to_have_value("resnet20")
    uploader = page.get_by_test_id("stFileUploader").filter(has_text="Weights (.pth")
    uploader.locator("input[type=file]").set_input_files(str(weights))
    expect(uploader.get_by_role("button", name="Remove my finetuned resnet20.pth")).to_be_visible(
        timeout=LOAD_TIMEOUT_MS)
    button = page.get_by_role("button", name="Load weights")
    expect(button).to_be_enabled(timeout=LOAD_TIMEOUT_MS)
    button.click()

    title = "ResNet-20 (10 classes, uploaded weights)"
    expect(page.get_by_role("heading", name=title)).to_be_visible(timeout=LOAD_TIMEOUT_MS)
    expect(page.get_by_text("now the current model on every page")).to_be_visible()
    metrics = page.get_by_test_id("stMetric")
    expect(metrics.filter(has_text="Parameters")).to_contain_text(format_params(cost.params))
    expect(metrics.filter(has_text="MACs at input 1x1x28x28")).to_contain_text(
        format_macs(cost.macs))
    expect(page.get_by_role("heading", name="Channel groups")).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)
    expect(page.get_by_test_id("stDataFrame")).to_have_count(2)  # layers and channel groups
    page.wait_for_timeout(1500)  # let the rerun settle before the screenshot
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "model_upload.png"), full_page=True)

    page.reload()  # the uploaded model is kept in the session's workspace (token in the URL)
    expect(page.get_by_role("heading", name=title)).to_be_visible(timeout=LOAD_TIMEOUT_MS)
    assert app_health() == "ok"

"""Your own model on your own images, in a real browser against ./run.sh (Debian's Chromium).

A registry architecture (vgg_small, 3 classes, random weights) gets a generated zip of class
folders (3 x 10 images of 32x32): its score shows with the number of evaluation images; the
quick analysis runs, Prune, a background fine-tune on the fine-tuning split, then the slim
state dict downloads from the Export page. Tiny on purpose: it checks the wiring, not speed.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from browser_steps import LOAD_MS, download, go, no_trouble, shot
from image_files import class_members, zip_bytes
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

JOB_MS = 300_000
OCTET = "application/octet-stream"


def _settle(page: Page) -> None:
    """Wait for the app's rerun to end: an upload into a widget that a rerun is about to
    replace is lost (the new uploader is empty, its button disabled)."""
    page.wait_for_timeout(500)
    expect(page.get_by_test_id("stStatusWidgetRunningIcon")).to_have_count(0, timeout=LOAD_MS)


def _upload(page: Page, label: str, name: str, data: bytes, button: str) -> None:
    """Choose the file and press ``button``. A file chosen while the page's background poll
    reruns the script can land in the widget being replaced (the new uploader shows it empty,
    its button disabled): then it is chosen again, as a person would (at most 3 times)."""
    for _ in range(3):
        _settle(page)
        uploader = page.get_by_test_id("stFileUploader").filter(has_text=label)
        expect(uploader).to_have_count(1, timeout=LOAD_MS)
        uploader.locator("input[type=file]").set_input_files(
            {"name": name, "mimeType": OCTET, "buffer": data})
        expect(uploader.get_by_text(name)).to_be_visible(timeout=LOAD_MS)
        _settle(page)
        go = page.get_by_role("button", name=button)
        expect(go).to_have_count(1, timeout=LOAD_MS)  # a rerun can briefly leave a stale copy
        if go.is_enabled():
            go.click()
            return
    raise AssertionError(f"choosing {name} never enabled the {button!r} button")


def _weights() -> bytes:
    import torch

    from uif_explorer.services.model_source import build_architecture

    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(build_architecture("vgg_small", 3).state_dict(), buf)
    return buf.getvalue()


def test_own_images_score_analyse_fine_tune_export(
    page: Page, app_url: str, app_health: Callable[[], str], tmp_path: Path
) -> None:
    page.goto(app_url)
    expect(page.get_by_role("heading", name="ResNet-20")).to_be_visible(timeout=LOAD_MS)

    # -- the model: vgg_small with 3 outputs, uploaded weights ------------------------------
    page.get_by_role("tab", name="PyTorch weights").click()
    arch = page.get_by_role("combobox", name="Architecture")
    arch.click()
    page.get_by_role("option", name="vgg_small", exact=True).click()
    classes = page.get_by_role("spinbutton", name="Number of classes")
    classes.fill("3")
    classes.press("Enter")
    _upload(page, "Weights (.pth", "bugs.pth", _weights(), "Load weights")
    title = "(3 classes, uploaded weights)"
    expect(page.get_by_role("heading", name=title)).to_be_visible(timeout=LOAD_MS)
    expect(page.get_by_role("heading", name="Channel groups")).to_be_visible(timeout=LOAD_MS)
    _settle(page)

    # -- the images: a zip of class folders, scored on upload ---------------------------------
    page.get_by_role("tab", name="Image folders (.zip)").click()
    data = zip_bytes(class_members({"ant": 10, "bee": 10, "cat": 10}, size=(32, 32)))
    _upload(page, "Image folders (.zip)", "bugs.zip", data, "Use these images")
    expect(page.get_by_text("9 evaluation images")).to_be_visible(timeout=LOAD_MS)
    score = page.get_by_test_id("stMetric").filter(has_text="Score on this data")
    expect(score).to_contain_text("%", timeout=LOAD_MS)
    expect(page.get_by_text("on the first 9 images of the image folders").first).to_be_visible()
    no_trouble(page)
    shot(page, "image_folder_upload.png")

    # -- Sensitivity: quick analysis, Prune, background fine-tune ---------------------------
    go(page, "Sensitivity")
    page.get_by_role("button", name="Run analysis").click()
    expect(page.get_by_role("slider")).to_be_visible(timeout=JOB_MS)
    page.get_by_role("button", name="Prune", exact=True).click()
    expect(page.get_by_test_id("stMetric").filter(has_text="Pruned accuracy")).to_be_visible(
        timeout=LOAD_MS)
    batches = page.get_by_role("spinbutton", name="Batches of 128 per epoch")
    batches.fill("1")
    batches.press("Enter")
    page.get_by_role("button", name="Fine-tune", exact=True).click()
    expect(page.get_by_text("Accuracy after fine-tuning")).to_be_visible(timeout=JOB_MS)
    no_trouble(page)

    # -- Export: the slim state dict downloads --------------------------------------------------
    go(page, "Export")
    target = download(page, "Slim state dict (.safetensors)", tmp_path / "slim.safetensors")
    from safetensors.torch import load_file

    state = load_file(str(target))
    assert state["classifier.3.weight"].shape[0] == 3  # the 3-class head, slimmer inside
    no_trouble(page)
    assert app_health() == "ok"

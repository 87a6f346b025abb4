"""The Model page's image-folder upload through Streamlit's AppTest: a registry architecture with
3 classes gets a generated zip of class folders; its score shows with the number of evaluation
images, the classes and split counts are listed, the presets apply, and refused zips (wrong
class count, truncated archive) say why and leave the data in use and the workspace as they
were.

Tiny on purpose: vgg_small at 28x28 grayscale, 3 classes x 10 images of 32x32.
"""

from __future__ import annotations

from pathlib import Path

from apptest_pages import assert_no_errors as _no_errors
from image_files import class_members, zip_bytes
from streamlit.testing.v1 import AppTest

from uif_explorer.services.model_source import build_architecture
from uif_explorer.ui import workspace

APP = "../../app.py"
TIMEOUT = 240
OCTET = "application/octet-stream"
CLASSES = {"ant": 10, "bee": 10, "cat": 10}  # per class: 2 calibration, 3 evaluation, 5 tuning



def _upload(at: AppTest, key: str, name: str, data: bytes, button: str) -> AppTest:
    at.file_uploader(key=key).set_value((name, data, OCTET))
    at.run()
    return at.button(key=button).click().run()


def _weights() -> bytes:
    import io

    import torch

    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(build_architecture("vgg_small", 3).state_dict(), buf)
    return buf.getvalue()


def _datasets(at: AppTest) -> list[str]:
    token = at.query_params["ws"]
    token = token[0] if isinstance(token, list) else token
    folder = workspace.folder_of(token) / "datasets"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _splits(at: AppTest):
    """The classes-and-splits table of the data section."""
    return next(df.value for df in at.dataframe if "fine-tuning" in df.value.columns)


def test_image_folders_score_the_model_and_refused_zips_change_nothing(root: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.selectbox(key="up_arch").set_value("vgg_small")
    at.number_input(key="up_classes").set_value(3)
    at = _upload(at, "up_weights", "w.pth", _weights(), "up_weights_go")
    _no_errors(at)
    assert at.selectbox(key="up_img_preset").value == "imagenet"  # not the bundled data's model
    good = zip_bytes(class_members(CLASSES, size=(32, 32)))
    at = _upload(at, "up_images", "bugs.zip", good, "up_images_go")
    _no_errors(at)
    flash = " ".join(s.value for s in at.success)
    assert "9 evaluation images" in flash and "Score:" in flash
    assert "on the first 9 images of the image folders" in flash
    scores = {m.label: m.value for m in at.metric}
    assert scores["Score"].endswith(" %") and scores["Score on this data"] == scores["Score"]
    table = _splits(at)
    assert list(table["class"]) == ["ant", "bee", "cat"]
    assert list(table["calibration"]) == [2, 2, 2] and list(table["evaluation"]) == [3, 3, 3]
    assert list(table["fine-tuning"]) == [5, 5, 5]
    stored = _datasets(at)
    assert len(stored) == 1

    # a zip with 2 class folders for a 3-output model: refused, the 3-class data stays
    two = zip_bytes(class_members({"ant": 4, "bee": 4}, size=(32, 32)))
    at = _upload(at, "up_images", "two.zip", two, "up_images_go")
    assert any("Expected 3 class folders" in e.value and "unchanged" in e.value
               for e in at.error)
    # a truncated archive: refused with a message, nothing extracted
    at = _upload(at, "up_images", "cut.zip", good[: len(good) // 2], "up_images_go")
    assert any("refused" in e.value for e in at.error)
    assert _datasets(at) == stored
    at.run()
    assert any("Scores use the image folders" in m.value for m in at.markdown)
    assert _splits(at)["class"].tolist() == ["ant", "bee", "cat"]

    # the custom preset: its numbers are used (another score key, scored again)
    at.selectbox(key="up_img_preset").set_value("custom").run()
    at.text_input(key="up_img_mean").set_value("0.5")
    at.text_input(key="up_img_std").set_value("0.25")
    at = _upload(at, "up_images", "bugs.zip", good, "up_images_go")
    _no_errors(at)
    assert any("custom preprocessing" in s.value for s in at.success)
    assert any("custom (resize 28, centre crop 28x28, grayscale, mean (0.5), std (0.25))"
               in c.value for c in at.caption)

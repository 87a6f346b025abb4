"""Image folders in (issue 17, item 1): class folders from a zip or a folder, presets that give
torchvision's numbers, seeded stratified splits, and the sample models scored on images.

Images are drawn with Pillow (tests/support/image_files.py); the sample-model test writes the
bundled Fashion-MNIST images out as PNGs, so its accuracy can be compared with the arrays.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from image_files import class_members, fashion_pngs, image_bytes, write_tree, zip_bytes
from PIL import Image

from uif_explorer import data as bundled
from uif_explorer.io.image_data import ImageData, load_image_data, split_indices
from uif_explorer.io.image_folder import (
    SKIP_NOT_IMAGE,
    SKIP_OUTSIDE,
    ImageFolderError,
    extract_image_zip,
    open_image_folder,
)
from uif_explorer.io.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocessing

COUNTS = {"cats": 5, "dogs": 4, "birds": 6}


@pytest.fixture(scope="module")
def members() -> dict[str, bytes]:
    return class_members(COUNTS, size=(40, 30))


# -- reading class folders ------------------------------------------------------------------
def test_zip_and_folder_give_the_same_dataset(members, tmp_path):
    wrapped = {f"flowers/{k}": v for k, v in members.items()}
    wrapped |= {"flowers/README.txt": b"notes", "flowers/cats/labels.csv": b"a,b",
                "__MACOSX/flowers/._x": b"junk", "flowers/dogs/.DS_Store": b"\0"}
    zipped = extract_image_zip(zip_bytes(wrapped), tmp_path / "ds", num_outputs=3)
    local = open_image_folder(write_tree(tmp_path / "local", wrapped), num_outputs=3)

    assert zipped.classes == local.classes == ("birds", "cats", "dogs")  # sorted folder names
    assert zipped.class_counts() == local.class_counts() == {"birds": 6, "cats": 5, "dogs": 4}
    assert zipped.labels == local.labels == (0,) * 6 + (1,) * 5 + (2,) * 4
    assert zipped.skipped == local.skipped == {SKIP_OUTSIDE: 1, SKIP_NOT_IMAGE: 1}
    assert local.root == tmp_path / "local" / "flowers"  # the wrapper folder is looked through
    # extracted names are rewritten (index + sanitised name) in the archive's sorted order
    assert zipped.files[:2] == ("birds/000000_img0.png", "birds/000001_img1.jpg")
    for i in range(len(zipped)):
        a, b = np.asarray(zipped.image(i)), np.asarray(local.image(i))
        assert a.shape == (30, 40, 3) and np.array_equal(a, b)
    # the same archive again reuses the folder (and remembers what was skipped)
    again = extract_image_zip(zip_bytes(wrapped), tmp_path / "ds")
    assert again.files == zipped.files and again.skipped == zipped.skipped


def test_zip_made_by_a_zip_tool_with_folder_entries(members, tmp_path):
    """shutil.make_archive writes folder entries (``data/``, ``data/cats/``) as zip tools do."""
    import shutil

    write_tree(tmp_path / "src" / "data", members)
    archive = shutil.make_archive(str(tmp_path / "upload"), "zip", tmp_path / "src")
    with zipfile.ZipFile(archive) as zf:
        assert "data/cats/" in zf.namelist()
    folder = extract_image_zip(Path(archive).read_bytes(), tmp_path / "ds", num_outputs=3)
    assert folder.class_counts() == {"birds": 6, "cats": 5, "dogs": 4} and not folder.skipped


def test_local_folder_follows_links_and_a_link_loop_ends(members, tmp_path):
    """Symlinked class folders are read (as torchvision does); a loop stops at the depth limit
    with the depth message instead of walking forever."""
    write_tree(tmp_path / "store", members)
    (tmp_path / "ds").mkdir()
    for name in COUNTS:
        (tmp_path / "ds" / name).symlink_to(tmp_path / "store" / name, target_is_directory=True)
    assert open_image_folder(tmp_path / "ds", num_outputs=3).class_counts() == {
        "birds": 6, "cats": 5, "dogs": 4}
    (tmp_path / "store" / "cats" / "loop").symlink_to(tmp_path / "ds", target_is_directory=True)
    with pytest.raises(ImageFolderError, match="nested more than 8 folders"):
        open_image_folder(tmp_path / "ds")


def test_class_count_must_match_the_model_and_nothing_is_extracted(members, tmp_path):
    with pytest.raises(ImageFolderError, match=r"Expected 10 class folders.*Received 3: "
                       r"'birds', 'cats', 'dogs'"):
        extract_image_zip(zip_bytes(members), tmp_path / "ds", num_outputs=10)
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary leftovers
    with pytest.raises(ImageFolderError, match="Expected 2 class folders"):
        open_image_folder(write_tree(tmp_path / "local", members), num_outputs=2)


def test_existing_destination_is_refused_and_kept(members, tmp_path):
    dest = tmp_path / "ds"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(ImageFolderError, match="exists"):
        extract_image_zip(zip_bytes(members), dest)
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]


def test_refusals_name_the_problem(members, tmp_path):
    """The cases of the security corpus (tests/security) go through the zip path; these go
    through the folder path, which shares the checks."""
    cases = {
        "empty_class": ({**members, "fish/readme.txt": b"x"}, "'fish' .*holds no JPEG"),
        "single_class": ({k: v for k, v in members.items() if k.startswith("cats")},
                         "single class folder \\('cats'\\)"),
        "truncated": ({**members, "cats/bad.jpg": image_bytes("JPEG")[:200]},
                      "'cats/bad.jpg'.*truncated or corrupt"),
        "text_named_png": ({**members, "dogs/x.png": b"hello"}, "'dogs/x.png'.*not a readable"),
        "root_image": ({**members, "stray.png": image_bytes()}, "not in a class folder"),
        "nested_zip": ({**members, "dogs/more.zip": zip_bytes(members)}, "archive inside"),
        "no_images": ({"a/x.txt": b"1", "b/y.txt": b"2"}, "holds no JPEG, PNG or WebP images"),
    }
    for name, (tree, message) in cases.items():
        with pytest.raises(ImageFolderError, match=message):
            open_image_folder(write_tree(tmp_path / name, tree))
    with pytest.raises(ImageFolderError, match="not a folder"):
        open_image_folder(tmp_path / "missing")
    with pytest.raises(ImageFolderError, match="does not exist"):
        load_image_data(tmp_path / "missing.zip", (3, 8, 8))
    with pytest.raises(ImageFolderError, match="dest="):
        load_image_data(zip_bytes(members), (3, 8, 8))
    with pytest.raises(ValueError, match="evaluation split is empty"):
        load_image_data(write_tree(tmp_path / "tiny", {"a/1.png": image_bytes(),
                                                       "b/2.png": image_bytes()}), (3, 8, 8))


# -- presets --------------------------------------------------------------------------------
def _torchvision(img: Image.Image, resize, crop, mean, std) -> np.ndarray:
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor(), T.Normalize(mean, std)])
    return tf(img).numpy()


@pytest.mark.parametrize("wh", [(300, 200), (180, 250), (256, 256), (97, 131)])
def test_imagenet_preset_matches_torchvision(wh):
    img = Image.open(io.BytesIO(image_bytes("JPEG", wh, seed=3))).convert("RGB")
    want = _torchvision(img, 256, 224, IMAGENET_MEAN, IMAGENET_STD)
    torch_prep = preprocessing("imagenet", (1, 3, 224, 224), "NCHW")
    keras_prep = preprocessing("imagenet", (1, 224, 224, 3), "NHWC")  # same preset, same numbers
    assert torch_prep == keras_prep and torch_prep.resize == 256
    got = torch_prep(img)
    assert got.shape == (3, 224, 224) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert float(want.std()) > 0.1  # the picture is not flat: a wrong offset would show


def test_non_square_input_and_custom_preset_match_torchvision():
    img = Image.open(io.BytesIO(image_bytes("PNG", (120, 90), seed=5))).convert("RGB")
    prep = preprocessing("imagenet", (3, 64, 48), "NCHW")
    np.testing.assert_allclose(prep(img), _torchvision(img, (73, 54), (64, 48), IMAGENET_MEAN,
                                                       IMAGENET_STD), atol=1e-5, rtol=0)
    custom = preprocessing("custom", (32, 32, 3), "NHWC", mean=0.5, std=(0.2, 0.25, 0.5),
                           resize=40)
    assert custom.mean == (0.5, 0.5, 0.5) and custom.resize == 40
    np.testing.assert_allclose(custom(img), _torchvision(img, 40, 32, (0.5,) * 3,
                                                         (0.2, 0.25, 0.5)), atol=1e-5, rtol=0)
    for kwargs, message in (({"mean": 0.5}, "mean= and std="),
                            ({"mean": 0.5, "std": 0.0}, "std > 0"),
                            ({"mean": (0.1, 0.2), "std": 1}, "one per channel"),
                            ({"mean": 0.5, "std": 1, "resize": 20}, "resize >=")):
        with pytest.raises(ValueError, match=message):
            preprocessing("custom", (3, 32, 32), "NCHW", **kwargs)
    with pytest.raises(ValueError, match="layout"):
        preprocessing("imagenet", (3, 32, 32), "CHW")
    with pytest.raises(ValueError, match="preset"):
        preprocessing("cifar", (3, 32, 32))
    with pytest.raises(ValueError, match="channels"):
        preprocessing("imagenet", (1, 32, 32, 3), "NCHW")


def test_layouts_hold_the_same_numbers_transposed(members, tmp_path):
    folder = write_tree(tmp_path / "ds", members)
    nchw = load_image_data(folder, (1, 3, 24, 24), "NCHW", "imagenet", num_outputs=3)
    nhwc = load_image_data(folder, (1, 24, 24, 3), "NHWC", "imagenet", num_outputs=3)
    for split in ("calibration", "evaluation", "finetune"):
        (xa, ya), (xb, yb) = nchw.arrays(split), nhwc.arrays(split)
        assert xa.shape[1:] == (3, 24, 24) and xb.shape[1:] == (24, 24, 3)
        np.testing.assert_array_equal(xa.transpose(0, 2, 3, 1), xb)
        np.testing.assert_array_equal(ya, yb)
    # and each image equals torchvision's tensor of the RGB-converted file
    i = int(nchw.indices["evaluation"][0])
    img = nchw.folder.image(i).convert("RGB")
    want = _torchvision(img, 27, 24, IMAGENET_MEAN, IMAGENET_STD)
    np.testing.assert_allclose(nchw.arrays("evaluation")[0][0], want, atol=1e-5, rtol=0)


def test_samples_preset_is_the_sample_models_preprocessing(tmp_path):
    """Bundled Fashion-MNIST images written as PNGs and read back through the "samples"
    preset give exactly ``data.preprocess``, and the sample ResNet-20 the same accuracy."""
    from uif_explorer.torch.evaluation import top1_accuracy
    from uif_explorer.zoo import load_torch_sample

    root, x, y = fashion_pngs(tmp_path / "fm", per_class=4)
    data = load_image_data(root, (1, 1, 28, 28), "NCHW", "samples", num_outputs=10,
                           fractions={"evaluation": 1.0})
    assert data.classes[0] == "00_T-shirt-top" and data.count("evaluation") == 40
    xe, ye = data.arrays("evaluation")
    np.testing.assert_array_equal(ye, y)
    np.testing.assert_array_equal(xe, bundled.preprocess(x)[:, None])  # bit for bit
    model = load_torch_sample("resnet20")
    direct = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
        torch.from_numpy(bundled.preprocess(x)[:, None]), torch.from_numpy(y)), batch_size=16)
    got = top1_accuracy(model, data.torch_loader("evaluation", batch_size=16))
    assert got == top1_accuracy(model, direct) and got > 50


# -- splits ---------------------------------------------------------------------------------
def test_splits_are_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(4), [10, 7, 3, 20])
    a = split_indices(labels, seed=1)
    assert split_indices(labels, seed=1).keys() == a.keys()
    assert all(np.array_equal(a[s], split_indices(labels, seed=1)[s]) for s in a)
    b = split_indices(labels, seed=2)
    assert any(not np.array_equal(a[s], b[s]) for s in a)
    together = np.concatenate(list(a.values()))
    assert sorted(together.tolist()) == list(range(len(labels)))  # disjoint, all used
    per_class = {s: np.bincount(labels[a[s]], minlength=4).tolist() for s in a}
    # 10 -> 2/3/5, 7 -> 1.4/2.1/3.5 -> 1/2/4, 3 -> 0.6/0.9/1.5 -> 1/1/1, 20 -> 4/6/10
    assert per_class == {"calibration": [2, 1, 1, 4], "evaluation": [3, 2, 1, 6],
                         "finetune": [5, 4, 1, 10]}
    only_eval = split_indices(labels, {"evaluation": 1.0})
    assert len(only_eval["evaluation"]) == len(labels) and not len(only_eval["finetune"])
    for bad in ({"evaluation": 0.5}, {"evaluation": 1.2, "finetune": -0.2}, {"test": 1.0}):
        with pytest.raises(ValueError, match="summing to 1"):
            split_indices(labels, bad)
    with pytest.raises(ValueError, match="seed"):
        split_indices(labels, seed=-1)


def test_image_data_describe_loader_and_determinism(members, tmp_path):
    tree = {**members, "cats/notes.txt": b"x"}
    data = load_image_data(zip_bytes(tree), (1, 3, 16, 16), "NCHW", "imagenet",
                           dest=tmp_path / "ds", num_outputs=3, seed=7)
    assert isinstance(data, ImageData)
    assert [data.count(s) for s in ("calibration", "evaluation", "finetune")] == [3, 5, 7]
    text = data.describe()
    for part in ("15 images in 3 classes", "calibration 3, evaluation 5, fine-tuning 7",
                 "seed 7", "imagenet (resize 18, centre crop 16x16, RGB", "NCHW",
                 f"1 file(s) skipped (1 {SKIP_NOT_IMAGE})"):
        assert part in text, (part, text)
    batches = list(data.torch_loader("finetune", batch_size=4))
    assert [tuple(b[0].shape) for b in batches] == [(4, 3, 16, 16)] * 1 + [(3, 3, 16, 16)]
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == sorted(
        data.arrays("finetune")[1].tolist())
    again = load_image_data(tmp_path / "ds", (1, 3, 16, 16), "NCHW", "imagenet", seed=7)
    for s in ("calibration", "evaluation", "finetune"):
        np.testing.assert_array_equal(again.arrays(s)[0], data.arrays(s)[0])
    assert data.to_dict()["counts"] == {"calibration": 3, "evaluation": 5, "finetune": 7}
    with pytest.raises(ValueError, match="split"):
        data.arrays("test")


def test_module_imports_neither_torch_nor_tensorflow():
    code = ("import sys, uif_explorer.io.image_data, uif_explorer.io.image_folder; "
            "print(sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.tf
def test_keras_sample_model_on_nhwc_arrays(tmp_path):
    """The Keras sample convnet scores the NHWC arrays of a PNG folder as it scores the
    bundled arrays (Keras-friendly: plain arrays, channels last)."""
    from uif_explorer.zoo import load_keras_sample

    root, x, y = fashion_pngs(tmp_path / "fm", per_class=2)
    data = load_image_data(root, (1, 28, 28, 1), "NHWC", "samples", num_outputs=10,
                           fractions={"evaluation": 1.0})
    xe, ye = data.arrays("evaluation")
    model = load_keras_sample("keras_convnet")
    want = np.asarray(model.predict(bundled.preprocess(x)[..., None], verbose=0))
    np.testing.assert_allclose(np.asarray(model.predict(xe, verbose=0)), want, atol=1e-6)
    np.testing.assert_array_equal(ye, y)

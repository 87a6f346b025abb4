"""Image folders as evaluation data in the service layer (issue 17, item 1 hook): a zip stored
in the workspace and a folder named on the command line score the sample ResNet-20 exactly as
the same images as arrays do; a broken zip leaves the workspace as it was."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from image_files import fashion_pngs, zip_bytes

from uif_explorer import data as bundled
from uif_explorer.cli.common import check_data_args
from uif_explorer.cli.errors import CliError
from uif_explorer.io.image_data import split_indices
from uif_explorer.io.image_folder import ImageFolderError
from uif_explorer.services import eval_data
from uif_explorer.services.model_source import sample_source
from uif_explorer.torch.evaluation import top1_accuracy
from uif_explorer.zoo import load_torch_sample


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory):
    return fashion_pngs(tmp_path_factory.mktemp("fm") / "fm", per_class=6)


def test_uploaded_zip_and_cli_folder_score_like_the_arrays(fashion, tmp_path):
    root, x, y = fashion
    source, model = sample_source("resnet20"), load_torch_sample("resnet20")
    members = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}
    stored = eval_data.store_images(tmp_path, zip_bytes(members), source)
    assert (stored.kind, stored.preset, stored.file) == (
        eval_data.IMAGES, "samples", f"datasets/{stored.sha256[:16]}")
    assert stored.count == 20  # 6 per class: 1.8 -> 2 of them in the evaluation split
    assert eval_data.DataSource.from_dict(stored.to_dict()) == stored
    in_place = eval_data.file_data(root, source)
    assert in_place.kind == eval_data.IMAGES and in_place.count == stored.count

    for ds in (stored, in_place):
        ev = eval_data.make_evaluator(source, model, ds, 1000, tmp_path)
        xe, ye = eval_data.arrays(tmp_path, ds, source, None)
        assert len(xe) == ev.images == 20
        want = top1_accuracy(model, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
            torch.from_numpy(xe), torch.from_numpy(ye)), batch_size=8))
        assert ev.score(model) == pytest.approx(want)
        assert "image folders" in ev.describe() and "samples preprocessing" in ev.describe()
    # the evaluation split (seed 0, stratified) of the folder, in the bundled preprocessing
    rows = split_indices(y, seed=0)["evaluation"]
    np.testing.assert_array_equal(xe, bundled.preprocess(x[rows])[:, None])
    np.testing.assert_array_equal(ye, y[rows])


def test_a_refused_zip_leaves_the_workspace_as_it_was(fashion, tmp_path):
    root, _, _ = fashion
    members = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}
    members["00_T-shirt-top/broken.png"] = members[next(iter(members))][:100]
    (tmp_path / "keep.sens").write_text("{}")
    with pytest.raises(ImageFolderError, match="broken.png.*truncated or corrupt"):
        eval_data.store_images(tmp_path, zip_bytes(members), sample_source("resnet20"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.sens"]


def test_cli_accepts_a_folder_for_data(fashion, tmp_path):
    root, _, _ = fashion
    check_data_args(argparse.Namespace(data=str(root), limit=10))
    with pytest.raises(CliError, match="folder of class folders"):
        check_data_args(argparse.Namespace(data=str(tmp_path / "nope"), limit=10))

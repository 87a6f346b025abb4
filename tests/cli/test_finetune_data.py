"""``uif-explorer finetune --data FOLDER``: the sparse model of a spec trained on the folder's
fine-tuning split, scored with the app's protocol on its evaluation split, written slim
(PyTorch) or as sparse weights (Keras). Tiny data: 32x32 images in class folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from image_files import class_members, write_tree

from uif_explorer.cli import main
from uif_explorer.io.loading import load_state_dict


def _folder(root: Path, classes: list[str], per_class: int) -> str:
    return str(write_tree(root, class_members(dict.fromkeys(classes, per_class), (32, 32))))


def test_finetune_on_a_folder_writes_a_tuned_slim_state(tmp_path: Path, capsys) -> None:
    data = _folder(tmp_path / "imgs", [f"c{i}" for i in range(10)], 5)  # 2 evaluation each
    common = ["--model", "vgg_small", "--workdir", str(tmp_path / "ws"), "--name", "v"]
    assert main(["ana", *common, "--data", data, "--ratios", "0.5"]) == 0
    pruned, tuned = tmp_path / "pruned.safetensors", tmp_path / "tuned.safetensors"
    assert main(["prune", *common, "--ratio", "0.3", "--out", str(pruned)]) == 0
    spec = str(tmp_path / "ws" / "v_ratio_0.3.spec")
    capsys.readouterr()
    assert main(["finetune", *common, "--spec", spec, "--data", data, "--epochs", "2",
                 "--batches", "1", "--lr", "0.05", "--out", str(tuned)]) == 0
    out = capsys.readouterr().out
    assert "fine-tuning on the fine-tuning split of the image folders imgs" in out
    assert "Accuracy before" in out and "on the first 20 images" in out
    assert "BN re-estimation" in out
    before = load_state_dict(pruned.read_bytes())
    after = load_state_dict(tuned.read_bytes())
    assert {k: v.shape for k, v in after.items()} == {k: v.shape for k, v in before.items()}
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained

    assert main(["finetune", *common, "--spec", spec, "--data", str(tmp_path / "none")]) == 2
    assert "Expected --data to be a folder of class folders" in capsys.readouterr().err


@pytest.mark.tf
@pytest.mark.slow
def test_keras_finetune_on_a_folder(tmp_path: Path, capsys) -> None:
    pytest.importorskip("tensorflow")
    import keras

    from uif_explorer import zoo

    if not zoo.get_sample("keras_convnet").weights_path.exists():
        pytest.skip("keras_convnet's weights are not trained yet")
    data = _folder(tmp_path / "imgs", [f"c{i}" for i in range(10)], 4)
    common = ["--model", "keras_convnet", "--workdir", str(tmp_path / "ws"), "--name", "k"]
    assert main(["ana", *common, "--data", data, "--ratios", "0.5"]) == 0
    assert main(["prune", *common, "--ratio", "0.3", "--mode", "sparse"]) == 0
    out = tmp_path / "tuned.weights.h5"
    capsys.readouterr()
    assert main(["finetune", *common, "--spec", str(tmp_path / "ws" / "k_ratio_0.3.spec"),
                 "--data", data, "--batches", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fine-tuning split of the image folders imgs" in text and "after" in text
    model = zoo.load_keras_sample("keras_convnet")
    model.load_weights(str(out))  # the guide's flow: sparse weights, then get_slim_model
    assert isinstance(model, keras.Model)

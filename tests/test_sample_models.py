"""The trained sample models: registry, safe loading, recorded accuracy, import hygiene."""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
from dataclasses import FrozenInstanceError

import numpy as np
import pytest
import torch  # imported before anything that may import TensorFlow (environment.md)

from uif_explorer import data, zoo

FLOORS = {name: 91.0 if name == "resnet20" else 89.0 for name in zoo.SAMPLE_MODELS}
TOLERANCE = 1.5
MAX_BYTES = 2 * 1024 * 1024
TORCH_NAMES = [n for n, m in zoo.SAMPLE_MODELS.items() if m.framework == "torch"]
KERAS_NAMES = [n for n, m in zoo.SAMPLE_MODELS.items() if m.framework == "keras"]


@pytest.fixture(scope="module")
def metrics() -> dict:
    recorded = zoo.recorded_metrics()
    assert set(recorded) >= set(zoo.SAMPLE_MODELS), "metrics.json lacks some sample models"
    return recorded


@pytest.fixture(scope="module")
def bundled_test() -> tuple[np.ndarray, np.ndarray]:
    return data.numpy_dataset("test", "bundled")


def test_registry_entries() -> None:
    assert set(zoo.SAMPLE_MODELS) == {
        "resnet20", "mobilenetv2_small", "vgg_small", "densenet_mini", "se_resnet_mini",
        "keras_convnet", "keras_functional",
    }
    for name, sample in zoo.SAMPLE_MODELS.items():
        assert sample.name == name
        assert sample.framework in ("torch", "keras")
        expected = (1, 1, 28, 28) if sample.framework == "torch" else (1, 28, 28, 1)
        assert sample.input_shape == expected
        suffix = ".safetensors" if sample.framework == "torch" else ".keras"
        assert sample.weights_file == f"{name}{suffix}"
        assert sample.title and sample.description
    with pytest.raises(FrozenInstanceError):
        zoo.SAMPLE_MODELS["resnet20"].name = "other"  # type: ignore[misc]
    with pytest.raises(KeyError, match="Unknown sample model"):
        zoo.get_sample("nope")
    with pytest.raises(ValueError, match="keras model"):
        zoo.build_torch("keras_convnet")


def test_metrics_json_shape(metrics: dict) -> None:
    for name in zoo.SAMPLE_MODELS:
        entry = metrics[name]
        assert set(entry) >= {
            "acc_full_test", "acc_bundled_test", "params", "macs", "epochs", "train_seconds"
        }
        assert isinstance(entry["params"], int) and isinstance(entry["macs"], int)
        assert entry["acc_full_test"] >= FLOORS[name], f"{name} below its accuracy floor"


@pytest.mark.parametrize("name", list(zoo.SAMPLE_MODELS))
def test_weights_files_small(name: str) -> None:
    path = zoo.SAMPLE_MODELS[name].weights_path
    assert path.exists(), f"missing {path}"
    assert path.stat().st_size < MAX_BYTES


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_torch_weights_are_safetensors(name: str) -> None:
    raw = zoo.SAMPLE_MODELS[name].weights_path.read_bytes()
    assert not raw.startswith(b"\x80") and not raw.startswith(b"PK"), "pickle / torch zip file"
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert tensors and all(v["dtype"] in ("F32", "I64") for v in tensors.values())


def _no_pickle(*_args, **_kwargs):
    raise AssertionError("pickle must not be used to load sample models")


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_torch_sample_loads_without_pickle(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pickle, "Unpickler", _no_pickle)
    monkeypatch.setattr(pickle, "load", _no_pickle)
    monkeypatch.setattr(pickle, "loads", _no_pickle)
    monkeypatch.setattr(torch, "load", _no_pickle)
    model = zoo.load_torch_sample(name)
    assert not model.training
    with torch.no_grad():
        assert tuple(model(zoo.example_input(name)).shape) == (1, 10)
    fresh = zoo.build_torch(name)
    assert fresh.state_dict().keys() == model.state_dict().keys()


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCH_NAMES)
def test_torch_sample_accuracy(name: str, metrics: dict, bundled_test) -> None:
    x, y = bundled_test
    model = zoo.load_torch_sample(name)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        pred = torch.cat([model(xt[i : i + 500]).argmax(1) for i in range(0, len(xt), 500)])
    acc = 100.0 * float((pred.numpy() == y).mean())
    assert abs(acc - metrics[name]["acc_bundled_test"]) <= TOLERANCE
    assert acc >= FLOORS[name] - TOLERANCE


@pytest.mark.tf
@pytest.mark.slow
@pytest.mark.parametrize("name", KERAS_NAMES)
def test_keras_sample_accuracy(name: str, metrics: dict, bundled_test) -> None:
    x, y = bundled_test
    model = zoo.load_keras_sample(name)
    assert tuple(model.input_shape) == (None, 28, 28, 1)
    assert model(zoo.example_input(name)).shape == (1, 10)
    acc = 100.0 * float((model.predict(x, batch_size=500, verbose=0).argmax(-1) == y).mean())
    assert abs(acc - metrics[name]["acc_bundled_test"]) <= TOLERANCE
    assert acc >= FLOORS[name] - TOLERANCE


@pytest.mark.tf
def test_keras_archive_has_no_pickle() -> None:
    import zipfile

    for name in KERAS_NAMES:
        with zipfile.ZipFile(zoo.SAMPLE_MODELS[name].weights_path) as archive:
            names = archive.namelist()
            assert "config.json" in names and "model.weights.h5" in names
            assert not any(n.endswith((".pkl", ".pickle")) for n in names)


def test_zoo_import_leaves_tensorflow_out() -> None:
    code = (
        "import sys, json\n"
        "import uif_explorer.zoo as zoo\n"
        "before = sorted(m for m in ('tensorflow', 'keras', 'torchvision') if m in sys.modules)\n"
        "archs = zoo.torchvision_architectures()\n"
        "net = zoo.build_torchvision('resnet18', num_classes=10)\n"
        "after = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "print(json.dumps([before, after, 'resnet18' in archs, net.fc.out_features]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        cwd=str(zoo.REPO_ROOT), check=True,
    )
    before, after, has_resnet18, out_features = json.loads(result.stdout.strip().splitlines()[-1])
    assert before == [] and after == []
    assert has_resnet18 and out_features == 10


def test_example_inputs() -> None:
    for name, sample in zoo.SAMPLE_MODELS.items():
        x = zoo.example_input(name)
        assert tuple(x.shape) == sample.input_shape
    model = zoo.build_torch("vgg_small").eval()
    with torch.no_grad():
        assert tuple(model(zoo.example_input("vgg_small", random=True)).shape) == (1, 10)

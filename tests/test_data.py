"""The bundled Fashion-MNIST subset and its loaders: shapes, labels, checksum, no network."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from uif_explorer import data


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_checksum_recorded_and_matching():
    digest = hashlib.sha256(data.BUNDLED_PATH.read_bytes()).hexdigest()
    assert digest == data.bundled_sha256()
    data.verify_bundled()
    assert data.BUNDLED_PATH.stat().st_size < 10 * 1024 * 1024


def test_arrays_shapes_labels_and_balance(no_network):
    x_tr, y_tr = data.load_arrays("train")
    x_te, y_te = data.load_arrays("test")
    assert x_tr.shape == (10_000, 28, 28) and x_te.shape == (2_000, 28, 28)
    assert x_tr.dtype == np.uint8 and y_tr.dtype == np.int64
    assert set(np.unique(y_tr)) == set(range(10))
    assert np.bincount(y_tr).tolist() == [1000] * 10
    assert np.bincount(y_te).tolist() == [200] * 10


def test_keras_layout(no_network):
    x, y = data.numpy_dataset("test", limit=100)
    assert x.shape == (100, 28, 28, 1) and x.dtype == np.float32 and y.shape == (100,)
    assert abs(float(data.numpy_dataset("train")[0].mean())) < 0.1  # normalised


def test_torch_loader(no_network):
    loader = data.torch_loader("test", batch_size=64, limit=200)
    images, labels = next(iter(loader))
    assert images.shape == (64, 1, 28, 28) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and int(labels.max()) < 10
    assert sum(len(b[1]) for b in loader) == 200
    a = next(iter(data.torch_loader("train", batch_size=8, seed=1)))[1]
    b = next(iter(data.torch_loader("train", batch_size=8, seed=1)))[1]
    assert torch.equal(a, b)  # seeded shuffling


def test_corrupt_or_missing_bundled_file_is_a_clear_error(tmp_path, monkeypatch):
    bad = tmp_path / "fashion_mnist_subset.npz"
    bad.write_bytes(b"not a zip")
    monkeypatch.setattr(data, "BUNDLED_PATH", bad)
    monkeypatch.setattr(data, "BUNDLED_CHECKSUM", data.REPO_ROOT / "sample_models" / "data"
                        / "fashion_mnist_subset.sha256")
    with pytest.raises(data.DataUnavailableError, match="checksum"):
        data.load_arrays("test")
    monkeypatch.setattr(data, "BUNDLED_PATH", tmp_path / "missing.npz")
    with pytest.raises(data.DataUnavailableError, match="missing"):
        data.load_arrays("test")


def test_full_copy_only_when_asked_and_clear_when_missing(tmp_path):
    with pytest.raises(data.DataUnavailableError, match="apt-get install dataset-fashion-mnist"):
        data.load_full_arrays("train", data_dir=tmp_path)
    with pytest.raises(ValueError, match="split"):
        data.load_arrays("validation")
    with pytest.raises(ValueError, match="source"):
        data.load_arrays("test", source="internet")


def test_import_opens_no_connection():
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise SystemExit('network access attempted')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from uif_explorer import data\n"
        "data.torch_loader('test', limit=10)\n"
        "data.numpy_dataset('train', limit=10)\n"
    )
    root = Path(data.__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr

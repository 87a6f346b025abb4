"""Fashion-MNIST, offline: the subset bundled with the repo, or Debian's full copy on request.

Nothing here ever downloads. The bundled subset (10k train / 2k test, class-balanced) is what
tests and the app use; the full 60k/10k set from the Debian package ``dataset-fashion-mnist``
is read only when a caller asks for ``source="full"`` (training the sample models, benchmarks).
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # torch stays an optional import for Keras-only callers
    from torch.utils.data import DataLoader

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_PATH = REPO_ROOT / "sample_models" / "data" / "fashion_mnist_subset.npz"
BUNDLED_CHECKSUM = BUNDLED_PATH.with_suffix(".sha256")
FULL_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)
# Per-pixel statistics of the full training set; every sample model is trained with them.
MEAN = 0.2860
STD = 0.3530

Split = Literal["train", "test"]
Source = Literal["bundled", "full"]


class DataUnavailableError(RuntimeError):
    """The requested data is not on this machine (and will not be downloaded)."""


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"Expected split 'train' or 'test'. Received: split={split!r}")


def bundled_sha256() -> str:
    """The checksum recorded when the subset was made."""
    return BUNDLED_CHECKSUM.read_text().split()[0]


def verify_bundled() -> None:
    """Raise if the bundled file is missing or differs from its recorded checksum."""
    if not BUNDLED_PATH.exists():
        raise DataUnavailableError(
            f"The bundled subset {BUNDLED_PATH} is missing; restore it with git or rebuild it "
            "with `python sample_models/data/make_subset.py`."
        )
    actual = hashlib.sha256(BUNDLED_PATH.read_bytes()).hexdigest()
    if actual != bundled_sha256():
        raise DataUnavailableError(
            f"{BUNDLED_PATH} does not match its recorded checksum ({actual} != "
            f"{bundled_sha256()}); restore it with `git checkout -- {BUNDLED_PATH.name}`."
        )


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_full_arrays(split: Split, data_dir: Path = FULL_DATA_DIR) -> tuple[np.ndarray, np.ndarray]:
    """The full Debian copy: uint8 images (N, 28, 28) and int64 labels."""
    _check_split(split)
    prefix = "train" if split == "train" else "t10k"
    images = data_dir / f"{prefix}-images-idx3-ubyte.gz"
    labels = data_dir / f"{prefix}-labels-idx1-ubyte.gz"
    if not images.exists() or not labels.exists():
        raise DataUnavailableError(
            f"The full Fashion-MNIST set is not at {data_dir}. Install it with "
            "`sudo apt-get install dataset-fashion-mnist` (Debian, MIT licence), or use "
            "source='bundled' for the subset shipped with the repo."
        )
    return _read_idx(images).copy(), _read_idx(labels).astype(np.int64)


def load_arrays(split: Split = "test", source: Source = "bundled") -> tuple[np.ndarray, np.ndarray]:
    """Raw uint8 images (N, 28, 28) and int64 labels of one split."""
    _check_split(split)
    if source == "full":
        return load_full_arrays(split)
    if source != "bundled":
        raise ValueError(f"Expected source 'bundled' or 'full'. Received: source={source!r}")
    verify_bundled()
    with np.load(BUNDLED_PATH, allow_pickle=False) as npz:
        return npz[f"x_{split}"].copy(), npz[f"y_{split}"].astype(np.int64)


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> normalised float32 (N, 28, 28): the sample models' preprocessing."""
    return ((images.astype(np.float32) / 255.0) - MEAN) / STD


def numpy_dataset(
    split: Split = "test", source: Source = "bundled", limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Keras layout: float32 NHWC images (N, 28, 28, 1) and int64 labels."""
    x, y = load_arrays(split, source)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return preprocess(x)[..., None], y


def torch_dataset(split: Split = "test", source: Source = "bundled", limit: int | None = None):
    """PyTorch layout: a TensorDataset of float32 NCHW images (N, 1, 28, 28) and int64 labels."""
    import torch
    from torch.utils.data import TensorDataset

    x, y = load_arrays(split, source)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return TensorDataset(torch.from_numpy(preprocess(x)[:, None]), torch.from_numpy(y))


def torch_loader(
    split: Split = "test",
    source: Source = "bundled",
    batch_size: int = 256,
    shuffle: bool | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader over one split; shuffles the training split by default (seeded)."""
    import torch
    from torch.utils.data import DataLoader

    if shuffle is None:
        shuffle = split == "train"
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        torch_dataset(split, source, limit), batch_size=batch_size, shuffle=shuffle,
        generator=generator,
    )

"""Make the Fashion-MNIST subset that ships with the repository.

Source: Debian's ``dataset-fashion-mnist`` package (full 60k/10k, MIT licence), installed
under ``/usr/share/datasets/fashion-mnist``. The subset is class-balanced (1,000 train and
200 test images per class), drawn with a fixed seed so the file is reproducible byte for
byte, stored as uint8 in a compressed ``.npz`` and its SHA-256 written beside it.

    python sample_models/data/make_subset.py
"""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from uif_explorer.data import (  # noqa: E402
    BUNDLED_CHECKSUM,
    BUNDLED_PATH,
    load_full_arrays,
)

TRAIN_PER_CLASS = 1000
TEST_PER_CLASS = 200
SEED = 20261125


def _balanced_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(picks))


def _deterministic_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """np.savez_compressed stamps the current time into the zip; fix it for reproducibility."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def main() -> None:
    rng = np.random.default_rng(SEED)
    x_train, y_train = load_full_arrays("train")
    x_test, y_test = load_full_arrays("test")
    tr = _balanced_indices(y_train, TRAIN_PER_CLASS, rng)
    te = _balanced_indices(y_test, TEST_PER_CLASS, rng)
    payload = _deterministic_npz(
        {
            "x_train": x_train[tr],
            "y_train": y_train[tr].astype(np.uint8),
            "x_test": x_test[te],
            "y_test": y_test[te].astype(np.uint8),
        }
    )
    BUNDLED_PATH.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    BUNDLED_CHECKSUM.write_text(f"{digest}  {BUNDLED_PATH.name}\n")
    print(f"wrote {BUNDLED_PATH} ({len(payload) / 1e6:.2f} MB) sha256={digest}")


if __name__ == "__main__":
    main()

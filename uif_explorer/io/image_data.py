"""An image folder as a model's data: calibration, evaluation and fine-tuning splits.

The split is stratified by class and fixed by a seed (each class is shuffled by its own
``numpy`` generator seeded with ``(seed, class)``, then cut by the fractions with largest
remainders), so the same folder and seed give the same images in every split, whatever the
preprocessing. Arrays are made per split on first use (decode, preset, layout) and kept;
``torch_loader`` wraps them for PyTorch (torch is imported only there), Keras takes the NHWC
arrays directly. ``describe()`` is the sentence the app shows beside a score.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from uif_explorer.io.image_folder import ImageFolder, read_image_source
from uif_explorer.io.preprocess import Preprocessing, preprocessing

if TYPE_CHECKING:  # torch stays optional for Keras-only callers
    from torch.utils.data import DataLoader

SPLITS = ("calibration", "evaluation", "finetune")
SPLIT_WORDS = {"calibration": "calibration", "evaluation": "evaluation",
               "finetune": "fine-tuning"}
DEFAULT_FRACTIONS = {"calibration": 0.2, "evaluation": 0.3, "finetune": 0.5}


def _fractions(fractions: Mapping[str, float] | None) -> np.ndarray:
    given = dict(DEFAULT_FRACTIONS if fractions is None else fractions)
    values = [given.get(s, 0.0) for s in SPLITS]
    if set(given) - set(SPLITS) or not all(0 <= float(v) <= 1 for v in values) or abs(
            sum(values) - 1) > 1e-6:
        raise ValueError(f"Expected fractions for {SPLITS}, each in [0, 1], summing to 1. "
                         f"Received: fractions={given!r}")
    return np.asarray(values, dtype=np.float64)


def split_indices(labels: Sequence[int], fractions: Mapping[str, float] | None = None,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Sorted sample indices of each split, stratified by label, deterministic for ``seed``."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"Expected seed as an integer >= 0. Received: seed={seed!r}")
    share = _fractions(fractions)
    labels = np.asarray(labels)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        order = np.random.default_rng([int(seed), int(label)]).permutation(idx)
        raw = len(idx) * share
        counts = np.floor(raw).astype(int)
        extra = np.argsort(-(raw - counts), kind="stable")[: len(idx) - counts.sum()]
        counts[extra] += 1  # largest remainders; a zero fraction never gets one
        for split, chunk in zip(SPLITS, np.split(order, np.cumsum(counts)[:-1]), strict=True):
            parts[split].append(chunk)
    return {s: np.sort(np.concatenate(parts[s])).astype(np.int64) for s in SPLITS}


@dataclass
class ImageData:
    """A checked image folder, its preprocessing, its layout and its three splits."""

    folder: ImageFolder
    preprocessing: Preprocessing
    layout: str
    seed: int
    indices: dict[str, np.ndarray]
    _arrays: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.folder.classes

    def count(self, split: str) -> int:
        return len(self.indices[_split(split)])

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)``: float32 images in ``layout`` and int64 labels of one split."""
        split = _split(split)
        if split not in self._arrays:
            idx = self.indices[split]
            c, (h, w) = self.preprocessing.channels, self.preprocessing.size
            x = (np.stack([self.preprocessing(self.folder.image(int(i))) for i in idx])
                 if len(idx) else np.zeros((0, c, h, w), np.float32))
            if self.layout == "NHWC":
                x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            y = np.asarray(self.folder.labels, dtype=np.int64)[idx]
            self._arrays[split] = (x, y)
        return self._arrays[split]

    def torch_loader(self, split: str, batch_size: int = 64, shuffle: bool | None = None
                     ) -> DataLoader:
        """A DataLoader of one split (shuffled, seeded, for ``finetune`` by default)."""
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        x, y = self.arrays(split)
        shuffle = _split(split) == "finetune" if shuffle is None else shuffle
        return DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                          batch_size=batch_size, shuffle=shuffle,
                          generator=torch.Generator().manual_seed(self.seed))

    def describe(self) -> str:
        """What a score is computed on: images per split, classes, preset, layout, skips."""
        counts = ", ".join(f"{SPLIT_WORDS[s]} {self.count(s)}" for s in SPLITS)
        text = (f"{len(self.folder)} images in {len(self.classes)} classes ({counts}; "
                f"stratified, seed {self.seed}); preprocessing {self.preprocessing.describe()}, "
                f"{self.layout}")
        skipped = sum(self.folder.skipped.values())
        if skipped:
            why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.folder.skipped.items()))
            text += f"; {skipped} file(s) skipped ({why})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for a workspace file): no arrays."""
        return {"root": str(self.folder.root), "classes": list(self.classes),
                "counts": {s: self.count(s) for s in SPLITS}, "seed": self.seed,
                "layout": self.layout, "preprocessing": self.preprocessing.to_dict(),
                "skipped": dict(self.folder.skipped)}


def _split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"Expected split in {SPLITS}. Received: split={split!r}")
    return split


def load_image_data(source: str | os.PathLike | bytes, input_shape: Sequence[int],
                    layout: str = "NCHW", preset: str = "imagenet", *,
                    num_outputs: int | None = None, dest: str | os.PathLike | None = None,
                    fractions: Mapping[str, float] | None = None, seed: int = 0,
                    mean: Sequence[float] | float | None = None,
                    std: Sequence[float] | float | None = None,
                    resize: int | None = None) -> ImageData:
    """Everything in one call: a folder, a ``.zip`` path or zip bytes (extracted into ``dest``)
    -> checked classes (against ``num_outputs``), preset for ``input_shape``, splits.

    Raises :class:`~uif_explorer.io.image_folder.ImageFolderError` for bad data and
    ``ValueError`` for bad arguments, before anything is extracted."""
    prep = preprocessing(preset, input_shape, layout, mean=mean, std=std, resize=resize)
    _fractions(fractions)
    folder = read_image_source(source, dest, num_outputs)
    indices = split_indices(folder.labels, fractions, seed)
    if not len(indices["evaluation"]) and _fractions(fractions)[1] > 0:
        raise ValueError(f"The evaluation split is empty: {len(folder)} images are too few "
                         "for these fractions. Add images or raise the evaluation fraction.")
    return ImageData(folder, prep, layout, int(seed), indices)

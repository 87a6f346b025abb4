"""What the app scores models on: the bundled Fashion-MNIST subset or a user's ``.npz``.

An :class:`Evaluator` bundles an ``eval_fn`` with its arguments, a calibration function for
one-step search, and the words that say what its number is (``describe``): top-1 accuracy on
the bundled subset or on labelled uploaded data, or the *label-free* agreement with the original
model when the uploaded ``.npz`` has no ``y``. Every page shows ``describe()`` next to a score,
so a label-free number is always named as such (conventions.md). No Streamlit here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uif_explorer import data as bundled
from uif_explorer.io import loading
from uif_explorer.io.loading import LoadError
from uif_explorer.services.model_source import ModelSource, store_upload

BUNDLED, NPZ = "bundled", "npz"
TOP1_NAME = "top-1 accuracy (%)"
LABEL_FREE_NAME = "label-free agreement with the original model (%)"
CALIB_IMAGES = 256
CALIB_BATCHES = 4  # adaptive-BN batches of 64 training images per candidate (bundled data)


def data_source(images: int) -> str:
    """Where an accuracy on the bundled data comes from, for the captions next to it."""
    return f"top-1 on the first {images:,} images of the bundled Fashion-MNIST test subset"


def test_loader(images: int, batch_size: int = 256) -> Any:
    """A torch loader of the first ``images`` bundled test images (with labels)."""
    return bundled.torch_loader("test", limit=int(images), batch_size=batch_size)


def calib_loader(batch_size: int = 64) -> Any:
    """The fixed training batches that BatchNorm statistics are re-estimated on."""
    return bundled.torch_loader("train", limit=CALIB_BATCHES * batch_size,
                                batch_size=batch_size, shuffle=False)


def accuracy(model: Any, images: int) -> float:
    """Top-1 accuracy (%) of a PyTorch ``model`` on the first ``images`` bundled test images."""
    from uif_explorer.torch.evaluation import top1_accuracy

    return float(top1_accuracy(model, test_loader(images)))


@dataclass(frozen=True)
class DataSource:
    """Evaluation data of a session: ``bundled`` or an uploaded ``npz`` (``uploads/<sha>.npz``)."""

    kind: str = BUNDLED
    file: str | None = None
    sha256: str | None = None
    labelled: bool = True
    count: int = 0
    for_model: str | None = None  # the ModelSource.key the data was checked against

    @property
    def title(self) -> str:
        if self.kind == BUNDLED:
            return "the bundled Fashion-MNIST test subset"
        return f"the uploaded data {self.sha256[:10] if self.sha256 else ''}.npz"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> DataSource:
        return cls(**{k: value[k] for k in cls.__dataclass_fields__ if k in value})


def bundled_fits(source: ModelSource) -> bool:
    """Whether the bundled 28x28 grayscale, 10-class data can score this model."""
    if source.is_sample:
        return True
    shape = tuple(source.input_shape)
    want = (1, 28, 28, 1) if source.framework == "keras" else (1, 1, 28, 28)
    return shape == want and source.num_classes in (None, 10)


def store_npz(folder: str | Path, data: bytes, source: ModelSource) -> DataSource:
    """Check an ``.npz`` against the model's input (layout and shape), store it, describe it."""
    loading.check_upload_size(data)
    x, y = loading.load_npz_dataset(data, source.layout, source.num_classes,
                                    tuple(source.input_shape[1:]))
    sha, rel = store_upload(folder, data, "npz")
    return DataSource(kind=NPZ, file=rel, sha256=sha, labelled=y is not None, count=len(x),
                      for_model=source.key)


def file_data(path: str | Path, source: ModelSource) -> DataSource:
    """An ``.npz`` named on the command line, checked like an upload but read in place."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LoadError(f"Expected an .npz file with an array 'x' (and optionally 'y'). "
                        f"Received: {str(path)!r} ({exc.strerror or exc})") from exc
    x, y = loading.load_npz_dataset(raw, source.layout, source.num_classes,
                                    tuple(source.input_shape[1:]))
    return DataSource(kind=NPZ, file=str(path.resolve()), sha256=loading.sha256_of(raw),
                      labelled=y is not None, count=len(x), for_model=source.key)


def arrays(folder: str | Path, ds: DataSource, source: ModelSource, limit: int | None
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """``(x, y)`` of the data in the model's layout (``y`` None without labels)."""
    if ds.kind == BUNDLED:
        if source.framework == "keras":
            return bundled.numpy_dataset("test", limit=limit)
        x, y = bundled.load_arrays("test")
        x, y = (x[:limit], y[:limit]) if limit else (x, y)
        return bundled.preprocess(x)[:, None], y
    path = Path(folder) / str(ds.file)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LoadError("The uploaded .npz is no longer in this workspace; upload it again on "
                        "the Model page.") from exc
    x, y = loading.load_npz_dataset(raw, source.layout, source.num_classes,
                                    tuple(source.input_shape[1:]))
    if limit:
        x, y = x[:limit], (y[:limit] if y is not None else None)
    return x, y


@dataclass
class Evaluator:
    """``eval_fn(model, *eval_args)`` and friends for one model and one data set."""

    eval_fn: Callable[..., float]
    eval_args: tuple
    calib_fn: Callable[..., None] | None
    calib_args: tuple
    score_name: str
    label_free: bool
    images: int
    data_title: str
    bundled: bool

    def describe(self) -> str:
        """What a score from this evaluator is, for the captions next to it."""
        if self.bundled and not self.label_free:
            return data_source(self.images)
        return f"{self.score_name} on the first {self.images:,} images of {self.data_title}" + (
            " (no labels: scored against the original model's predictions)"
            if self.label_free else "")

    @property
    def short(self) -> str:
        return "Label-free score" if self.label_free else "Accuracy"

    def score(self, model: Any) -> float:
        return float(self.eval_fn(model, *self.eval_args))


def keras_agreement(reference: Any) -> Callable[..., float]:
    """A label-free ``eval_fn(model, x)`` for Keras: % of argmax predictions equal to the
    reference model's (computed once per input array)."""
    import keras

    cache: dict[int, np.ndarray] = {}

    def predict(model: Any, x: np.ndarray) -> np.ndarray:
        out = [keras.ops.convert_to_numpy(model(x[i:i + 256], training=False)).argmax(-1)
               for i in range(0, len(x), 256)]
        return np.concatenate(out)

    def eval_fn(model: Any, x: np.ndarray) -> float:
        key = id(x)
        if key not in cache:
            cache[key] = predict(reference, x)
        return 100.0 * float((predict(model, x) == cache[key]).mean())

    eval_fn.score_name = LABEL_FREE_NAME  # type: ignore[attr-defined]
    return eval_fn


def make_evaluator(source: ModelSource, model: Any, ds: DataSource | None, images: int,
                   folder: str | Path) -> Evaluator:
    """The evaluator for ``model`` on ``ds`` (bundled when None and it fits the model)."""
    if ds is None:
        if not bundled_fits(source):
            raise LoadError(
                f"This model takes {source.input_label} inputs, so the bundled 28x28 "
                "Fashion-MNIST data cannot score it. Upload an .npz with an array 'x' "
                f"({source.layout}, float32 preprocessed) and optionally integer labels 'y' "
                "on the Model page."
            )
        ds = DataSource()
    x, y = arrays(folder, ds, source, images)
    n = len(x)
    is_bundled = ds.kind == BUNDLED
    if source.framework == "keras":
        from uif_explorer.keras.evaluation import adaptive_bn_calibration, top1_accuracy

        calib_x = (bundled.numpy_dataset("train", limit=CALIB_IMAGES)[0] if is_bundled
                   else x[:CALIB_IMAGES])
        if y is not None:
            return Evaluator(top1_accuracy, (x, y), adaptive_bn_calibration, (calib_x,),
                             TOP1_NAME, False, n, ds.title, is_bundled)
        return Evaluator(keras_agreement(model), (x,), adaptive_bn_calibration, (calib_x,),
                         LABEL_FREE_NAME, True, n, ds.title, is_bundled)
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from uif_explorer.torch.evaluation import (
        adaptive_bn_calibration,
        make_label_free_eval,
        top1_accuracy,
    )

    batch = 1 if source.batch_fixed else 256  # an exported program fixed at batch 1
    if is_bundled and not source.batch_fixed:
        calib = calib_loader()
    else:
        calib_x = (bundled.preprocess(bundled.load_arrays("train")[0][:CALIB_IMAGES])[:, None]
                   if is_bundled else x[:CALIB_IMAGES])
        calib = DataLoader(TensorDataset(torch.from_numpy(calib_x)),
                           batch_size=min(batch, 64))
    if y is not None:
        loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                            batch_size=batch)
        return Evaluator(top1_accuracy, (loader,), adaptive_bn_calibration, (calib,),
                         TOP1_NAME, False, n, ds.title, is_bundled)
    loader = DataLoader(TensorDataset(torch.from_numpy(x)), batch_size=batch)
    fn = make_label_free_eval(copy.deepcopy(model))
    return Evaluator(fn, (loader,), adaptive_bn_calibration, (calib,), LABEL_FREE_NAME, True,
                     n, ds.title, is_bundled)

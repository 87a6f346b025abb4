"""What the app scores models on: the bundled Fashion-MNIST subset, a user's ``.npz``, or a
user's images in class folders (``images``: the evaluation split, docs/data.md).

An :class:`Evaluator` bundles an ``eval_fn`` with its arguments, a calibration function for
one-step search, and the words that say what its number is (``describe``): top-1 accuracy on
the bundled subset or on labelled uploaded data, or the *label-free* agreement with the original
model when the uploaded ``.npz`` has no ``y``. Every page shows ``describe()`` next to a score,
so a label-free number is always named as such (conventions.md). No Streamlit here.

A model with several inputs is scored on an ``.npz`` with one array per input plus ``labels``
(``io.multi_input_npz``): its arrays then come as a tuple, one per input. A model that returns
a dict or tuple is scored on the output ``DataSource.output`` (``services.model_outputs``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from uif_explorer import data as bundled
from uif_explorer.io import loading
from uif_explorer.io.loading import LoadError
from uif_explorer.io.multi_input_npz import load_multi_input_npz, program_input_names
from uif_explorer.services.model_outputs import choose as choose_output
from uif_explorer.services.model_outputs import read_outputs
from uif_explorer.services.model_source import ModelSource, _is_upload_path, store_upload

BUNDLED, NPZ, IMAGES = "bundled", "npz", "images"
TOP1_NAME = "top-1 accuracy (%)"
LABEL_FREE_NAME = "label-free agreement with the original model (%)"
CALIB_IMAGES = 256
CALIB_BATCHES = 4  # adaptive-BN batches of 64 training images per candidate (bundled data)
DATASETS = "datasets"  # extracted image-folder uploads: <workspace>/datasets/<sha256[:16]>


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
    preset: str | None = None  # images: the preprocessing preset
    mean: tuple[float, ...] | None = None  # images, custom preset: per-channel mean
    std: tuple[float, ...] | None = None  # images, custom preset: per-channel std
    resize: int | None = None  # images, custom preset: shorter side before the crop
    arrays: tuple[str, ...] = ()  # several inputs: the .npz arrays fed to them, in order
    output: str | None = None  # a dict/tuple output's entry holding the class scores

    @property
    def key(self) -> str:
        """What makes two data sources score alike (file, preprocessing, output), for caches."""
        chosen = f":{self.output}" if self.output is not None else ""
        if self.kind != IMAGES:
            return str(self.sha256 or self.kind) + chosen
        return (f"{self.sha256 or self.file}:{self.preset}:{self.mean}:{self.std}:{self.resize}"
                + chosen)

    @property
    def stored_safely(self) -> bool:
        """Whether ``file`` is a name this app stores uploads under (``uploads/<sha256>.npz``
        or ``datasets/<sha256[:16]>``): a workspace file naming any other path is ignored."""
        if self.file is None:
            return True
        if self.kind != IMAGES:
            return _is_upload_path(self.file)
        parts = str(self.file).split("/")
        return (len(parts) == 2 and parts[0] == DATASETS and len(parts[1]) == 16
                and all(c in "0123456789abcdef" for c in parts[1]))

    @property
    def title(self) -> str:
        if self.kind == BUNDLED:
            return "the bundled Fashion-MNIST test subset"
        if self.kind == IMAGES:
            return (f"the image folders {Path(str(self.file)).name} (evaluation split, "
                    f"{self.preset} preprocessing)")
        return f"the uploaded data {self.sha256[:10] if self.sha256 else ''}.npz"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> DataSource:
        fields = {k: value[k] for k in cls.__dataclass_fields__ if k in value}
        for k in ("mean", "std"):  # JSON gives lists; keep the record hashable
            if fields.get(k) is not None:
                fields[k] = tuple(float(v) for v in fields[k])
        fields["arrays"] = tuple(str(v) for v in fields.get("arrays") or ())
        return cls(**fields)


def bundled_fits(source: ModelSource) -> bool:
    """Whether the bundled 28x28 grayscale, 10-class data can score this model."""
    if source.is_sample:
        return True
    shape = tuple(source.input_shape)
    want = (1, 28, 28, 1) if source.layout == "NHWC" else (1, 1, 28, 28)
    return shape == want and source.num_classes in (None, 10)


def needs_data(source: ModelSource) -> str:
    """What to upload for a model the bundled data cannot score (one sentence with the fix)."""
    if source.inputs:
        return (f"This model takes {len(source.inputs)} inputs, so the bundled Fashion-MNIST "
                "data cannot score it. Upload an .npz with one array per input and 'labels' "
                "on the Model page (Evaluation data, Arrays).")
    return (f"This model takes {source.input_label} inputs, so the bundled 28x28 Fashion-MNIST "
            f"data cannot score it. Upload an .npz with an array 'x' ({source.layout}, float32 "
            "preprocessed) and optionally integer labels 'y' on the Model page.")


def _check_npz(raw: bytes, source: ModelSource, model: Any = None, output: str | None = None
               ) -> DataSource:
    """The checked description of an ``.npz`` (not stored): ``x``/``y`` for one input, one
    array per input plus ``labels`` for several. With ``model``, a dict or tuple output's
    class scores are chosen (``output``, else the first of shape (batch, classes)) and the
    labels checked against its classes."""
    chosen = choose_output(read_outputs(source, model) if model is not None else [], output)
    classes = chosen.shape[1] if chosen is not None else source.num_classes
    key = chosen.key if chosen is not None else None
    sha = loading.sha256_of(raw)
    if source.inputs:
        _, y, names = load_multi_input_npz(raw, source.inputs, program_input_names(model),
                                           classes)
        return DataSource(kind=NPZ, sha256=sha, count=len(y), for_model=source.key,
                          arrays=names, output=key)
    x, y = loading.load_npz_dataset(raw, source.layout, classes, tuple(source.input_shape[1:]))
    return DataSource(kind=NPZ, sha256=sha, labelled=y is not None, count=len(x),
                      for_model=source.key, output=key)


def store_npz(folder: str | Path, data: bytes, source: ModelSource, *, model: Any = None,
              output: str | None = None) -> DataSource:
    """Check an ``.npz`` against the model's inputs (layout and shapes) and, with ``model``,
    its outputs (see ``_check_npz``), then store it (a refused file stores nothing)."""
    loading.check_upload_size(data)
    ds = _check_npz(data, source, model, output)
    _, rel = store_upload(folder, data, "npz")
    return dataclasses.replace(ds, file=rel)


def with_output(folder: str | Path, ds: DataSource, source: ModelSource, model: Any,
                output: str) -> DataSource:
    """``ds`` scoring the model's output ``output`` (checked, labels included)."""
    if ds.kind != NPZ:
        chosen = choose_output(read_outputs(source, model), output)
        return dataclasses.replace(ds, output=chosen.key if chosen is not None else None)
    checked = _check_npz(_read_npz(folder, ds), source, model, output)
    return dataclasses.replace(ds, output=checked.output)


def default_preset(source: ModelSource) -> str:
    """'samples' for models the bundled data fits (trained like them), else 'imagenet'."""
    return "samples" if bundled_fits(source) else "imagenet"


def _image_data(path: str | Path | bytes, source: ModelSource, preset: str,
                dest: Path | None = None, mean: Any = None, std: Any = None,
                resize: int | None = None) -> Any:
    from uif_explorer.io.image_data import load_image_data

    return load_image_data(path, source.input_shape, source.layout, preset,
                           num_outputs=source.num_classes, dest=dest, mean=mean, std=std,
                           resize=resize)


def image_data(folder: str | Path, ds: DataSource, source: ModelSource) -> Any:
    """The :class:`~uif_explorer.io.image_data.ImageData` of stored image-folder data (its
    classes, splits and arrays), preprocessed as ``ds`` says."""
    return _image_data(Path(folder) / str(ds.file), source, str(ds.preset), mean=ds.mean,
                       std=ds.std, resize=ds.resize)


def model_outputs(source: ModelSource, model: Any) -> int | None:
    """The model's number of outputs (classes): recorded for registry architectures and
    samples, else read from one forward pass; None when that fails (then not checked)."""
    if source.num_classes is not None:
        return int(source.num_classes)
    backend = source.backend
    try:
        out = np.asarray(backend.forward(model, backend.example_input(source.input_shape)))
    except Exception:  # noqa: BLE001 - a model that cannot run is refused elsewhere
        return None
    return int(out.shape[-1]) if out.ndim == 2 else None


def store_images(folder: str | Path, data: bytes, source: ModelSource,
                 preset: str | None = None, *, model: Any = None, mean: Any = None,
                 std: Any = None, resize: int | None = None) -> DataSource:
    """A zip of class folders, checked (class count against the model's outputs, read from
    ``model`` when the source does not record it) and extracted into ``datasets/<sha>`` (a
    refused zip leaves the workspace as it was); scores use its evaluation split, BatchNorm
    re-estimation its calibration split and fine-tuning its fine-tuning split.
    ``mean``/``std``/``resize``: the custom preset's numbers."""
    loading.check_upload_size(data)
    if source.inputs:
        raise LoadError(f"Expected an .npz for a model with {len(source.inputs)} inputs (image "
                        "folders feed one image tensor). Received: a zip of image folders; "
                        "upload one array per input and 'labels' under Arrays (.npz).")
    sha, preset = loading.sha256_of(data), preset or default_preset(source)
    rel = f"{DATASETS}/{sha[:16]}"
    custom = preset == "custom"
    mean, std = (_floats(mean), _floats(std)) if custom else (None, None)
    resize = int(resize) if custom and resize else None
    from uif_explorer.io.image_data import load_image_data

    outputs = model_outputs(source, model) if model is not None else source.num_classes
    images = load_image_data(data, source.input_shape, source.layout, preset,
                             num_outputs=outputs, dest=Path(folder) / rel, mean=mean, std=std,
                             resize=resize)
    return DataSource(kind=IMAGES, file=rel, sha256=sha, count=images.count("evaluation"),
                      for_model=source.key, preset=preset, mean=mean, std=std, resize=resize)


def split_table(images: Any) -> list[dict[str, Any]]:
    """One row per class: its name and its number of images in each split."""
    from uif_explorer.io.image_data import SPLIT_WORDS, SPLITS

    labels = np.asarray(images.folder.labels)
    n = len(images.classes)
    counts = {s: np.bincount(labels[images.indices[s]], minlength=n) for s in SPLITS}
    return [{"class": name, **{SPLIT_WORDS[s]: int(counts[s][i]) for s in SPLITS}}
            for i, name in enumerate(images.classes)]


def _floats(value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    return tuple(float(v) for v in np.atleast_1d(np.asarray(value, dtype=np.float64)))


def file_data(path: str | Path, source: ModelSource, preset: str | None = None
              ) -> DataSource:
    """An ``.npz`` or a folder of class folders named on the command line, checked like an
    upload but read in place (``preset``: the folder's preprocessing, default as
    :func:`default_preset`)."""
    path = Path(path)
    if path.is_dir():
        preset = preset or default_preset(source)
        images = _image_data(path, source, preset)
        return DataSource(kind=IMAGES, file=str(path.resolve()), for_model=source.key,
                          count=images.count("evaluation"), preset=preset)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LoadError(f"Expected an .npz file with an array 'x' (and optionally 'y'). "
                        f"Received: {str(path)!r} ({exc.strerror or exc})") from exc
    return dataclasses.replace(_check_npz(raw, source), file=str(path.resolve()))


def _bundled_arrays(split: str, limit: int | None, layout: str
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The bundled images of ``split`` as float32 in ``layout`` ('NCHW' or 'NHWC')."""
    x, y = bundled.load_arrays(split)
    x, y = (x[:limit], y[:limit]) if limit else (x, y)
    x = bundled.preprocess(x)
    return (x[..., None] if layout == "NHWC" else x[:, None]), y


def arrays(folder: str | Path, ds: DataSource, source: ModelSource, limit: int | None
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """``(x, y)`` of the data in the model's layout (``y`` None without labels)."""
    if ds.kind == BUNDLED:
        return _bundled_arrays("test", limit, source.layout)
    if ds.kind == IMAGES:
        x, y = image_data(folder, ds, source).arrays("evaluation")
        return head(x, limit), head(y, limit)
    raw = _read_npz(folder, ds)
    if ds.arrays:
        x, y, _ = load_multi_input_npz(raw, source.inputs, ds.arrays)
    else:
        x, y = loading.load_npz_dataset(raw, source.layout, source.num_classes,
                                        tuple(source.input_shape[1:]))
    return head(x, limit), head(y, limit)


def _read_npz(folder: str | Path, ds: DataSource) -> bytes:
    try:
        return (Path(folder) / str(ds.file)).read_bytes()
    except OSError as exc:
        raise LoadError("The uploaded .npz is no longer in this workspace; upload it again on "
                        "the Model page.") from exc


def head(x: Any, limit: int | None) -> Any:
    """The first ``limit`` samples of an array, of each array of a tuple (several inputs),
    or None; all of them when ``limit`` is None or 0."""
    if x is None or not limit:
        return x
    return tuple(a[:limit] for a in x) if isinstance(x, tuple) else x[:limit]


def sample_count(x: Any) -> int:
    """Samples in an array or a tuple of arrays (one per input)."""
    return len(x[0]) if isinstance(x, tuple) else len(x)


def calibration_images(folder: str | Path, ds: DataSource | None, source: ModelSource
                       ) -> np.ndarray:
    """The images calibration runs on (adaptive BN, int8 ranges): bundled training images, or
    the first ``CALIB_IMAGES`` of the session's data, in the model's layout."""
    if ds is None or ds.kind == BUNDLED:
        return _bundled_arrays("train", CALIB_IMAGES, source.layout)[0]
    if ds.kind == IMAGES:
        return _calibration_split(image_data(folder, ds, source))
    return arrays(folder, ds, source, CALIB_IMAGES)[0]


def _calibration_split(images: Any) -> np.ndarray:
    """The calibration split's first ``CALIB_IMAGES`` images (the evaluation split's when the
    calibration split is empty: a tiny folder)."""
    x = images.arrays("calibration")[0]
    return (x if len(x) else images.arrays("evaluation")[0])[:CALIB_IMAGES]


def finetune_arrays(folder: str | Path, ds: DataSource, source: ModelSource
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of the fine-tuning split of image-folder data, in the model's layout."""
    x, y = image_data(folder, ds, source).arrays("finetune")
    if not len(x):
        raise LoadError(f"The fine-tuning split of {ds.title} is empty: add images (each class "
                        "gives half of its images to fine-tuning) and upload it again.")
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
    finetune_data: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None
    """The user's fine-tuning images ``(x, y)`` (image folders), None otherwise."""
    output: str | None = None
    """The entry of a dict or tuple output scored as the class scores."""

    def describe(self) -> str:
        """What a score from this evaluator is, for the captions next to it."""
        if self.bundled and not self.label_free:
            return data_source(self.images)
        return f"{self.score_name} on the first {self.images:,} images of {self.data_title}" + (
            f", output '{self.output}'" if self.output is not None else "") + (
            " (no labels: scored against the original model's predictions)"
            if self.label_free else "")

    @property
    def short(self) -> str:
        return "Label-free score" if self.label_free else "Accuracy"

    def score(self, model: Any) -> float:
        return float(self.eval_fn(model, *self.eval_args))


def make_evaluator(source: ModelSource, model: Any, ds: DataSource | None, images: int,
                   folder: str | Path) -> Evaluator:
    """The evaluator for ``model`` on ``ds`` (bundled when None and it fits the model)."""
    if ds is None:
        if not bundled_fits(source):
            raise LoadError(needs_data(source))
        ds = DataSource()
    is_bundled = ds.kind == BUNDLED
    if ds.kind == IMAGES:  # one scan of the folder for both splits
        split = image_data(folder, ds, source)
        x, y = (a[:images] for a in split.arrays("evaluation"))
        calib_x = _calibration_split(split)
    else:
        x, y = arrays(folder, ds, source, images)
        calib_x = (_bundled_arrays("train", CALIB_IMAGES, source.layout)[0] if is_bundled
                   else head(x, CALIB_IMAGES))
    chosen = {"output": ds.output} if ds.output is not None else {}
    eval_fn, eval_args, calib_fn, calib_args = source.backend.scoring(
        model, x, y, calib_x, batch_fixed=source.batch_fixed, **chosen)
    label_free = y is None
    tune = (partial(finetune_arrays, folder, ds, source) if ds.kind == IMAGES and not label_free
            else None)
    return Evaluator(eval_fn, eval_args, calib_fn, calib_args,
                     LABEL_FREE_NAME if label_free else TOP1_NAME, label_free, sample_count(x),
                     ds.title, is_bundled, tune, ds.output)

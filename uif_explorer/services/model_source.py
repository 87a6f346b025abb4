"""The current model of the app and the CLI: where it comes from, how to rebuild it, and its
backend (``services.backends``), which summarises and prunes it.

One :class:`ModelSource` describes any model the app or the CLI works on: a bundled sample
(PyTorch or Keras), a registry architecture with uploaded weights, a ``torch.export`` program, a
``.keras`` file or (trust option only) a pickled module. Its ``name`` is the stem of the
workspace files (``<name>.sens``...) and, with the upload's digest, the cache key: two models
never share files or cached objects. Uploads are stored as ``<workspace>/uploads/<sha>.<ext>``
(the user's file name is never a path), so a reloaded page rebuilds the same model.

The CLI names a model by id (:func:`from_model_id`: a sample, or ``torchvision:<arch>``, with an
optional weights file); the app's uploads are made in ``services.uploads`` and zipped workspaces
are opened in ``services.workspace_info``. No Streamlit here; TensorFlow is imported only when
a Keras source is used.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from uif_explorer import zoo
from uif_explorer.io import loading
from uif_explorer.io.loading import LoadError
from uif_explorer.io.workspace import atomic_write_json, sanitize_name
from uif_explorer.services.backends import Backend, backend_for

SAMPLE, WEIGHTS, PT2, KERAS, PICKLE = "sample", "weights", "pt2", "keras", "pickle"
KINDS = (SAMPLE, WEIGHTS, PT2, KERAS, PICKLE)
DEFAULT_SAMPLE = "resnet20"
TORCHVISION_PREFIX = "torchvision:"
TORCHVISION_INPUT = (1, 3, 224, 224)
STATE_FILE = "app_model.json"  # the session's current model, so a reload finds it again


@dataclass(frozen=True)
class ModelSource:
    """Where the current model comes from (plain data: JSON-able, hashable).

    Attributes:
        kind: 'sample', 'weights' (registry architecture + uploaded weights), 'pt2', 'keras'
            or 'pickle'.
        name: workspace file stem (sanitised); a sample's key for samples.
        title: what the pages call it.
        framework: 'torch' or 'keras'.
        arch: the sample key or ``torchvision:<arch>`` ('weights' kind), else None.
        num_classes: classes of a registry architecture ('weights' kind).
        input_shape: the input signature, batch first (NCHW for torch, NHWC for Keras).
        file: the upload, relative to the workspace folder (``uploads/<sha256>.<ext>``).
        sha256: digest of the uploaded bytes.
        inputs: ``(shape, dtype)`` of every input of a program that takes several (batch 1),
            from its example inputs; empty for one float input of ``input_shape``.
    """

    kind: str
    name: str
    title: str
    framework: str = "torch"
    arch: str | None = None
    num_classes: int | None = None
    input_shape: tuple[int, ...] = ()
    file: str | None = None
    sha256: str | None = None
    notes: tuple[str, ...] = field(default=())
    batch_fixed: bool = False  # an exported program that only runs at batch 1
    inputs: tuple[tuple[tuple[int, ...], str], ...] = field(default=())

    @property
    def is_sample(self) -> bool:
        return self.kind == SAMPLE

    @property
    def key(self) -> str:
        """Cache key: differs for every model (samples by name, uploads by digest)."""
        return f"{self.kind}:{self.name}:{self.sha256 or ''}:{self.num_classes or ''}"

    @property
    def input_label(self) -> str:
        return "x".join(str(int(d)) for d in self.input_shape)

    @property
    def signature(self) -> Any:
        """What the backends build example inputs from: the input shape, or for several
        inputs their ``((shape, dtype), ...)``."""
        return self.inputs or self.input_shape

    @property
    def backend(self) -> Backend:
        """The framework's backend: runners, widths, export, fine-tuning (never branch on
        ``framework`` outside the backends)."""
        return backend_for(self.framework)

    @property
    def layout(self) -> str:
        return "NHWC" if self.framework == "keras" else "NCHW"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_shape"] = list(self.input_shape)
        out["notes"] = list(self.notes)
        out["inputs"] = [[list(shape), dtype] for shape, dtype in self.inputs]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSource:
        """Rebuild from ``to_dict`` output; a malformed entry raises LoadError."""
        try:
            src = cls(kind=str(data["kind"]), name=sanitize_name(str(data["name"])),
                      title=str(data.get("title") or data["name"]),
                      framework=str(data.get("framework", "torch")), arch=data.get("arch"),
                      num_classes=data.get("num_classes"),
                      input_shape=tuple(int(d) for d in data.get("input_shape") or ()),
                      file=data.get("file"), sha256=data.get("sha256"),
                      notes=tuple(str(n) for n in data.get("notes") or ()),
                      batch_fixed=bool(data.get("batch_fixed", False)),
                      inputs=tuple((tuple(int(d) for d in shape), str(dtype))
                                   for shape, dtype in data.get("inputs") or ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise LoadError(f"Not a model description: {exc}") from exc
        if src.kind not in KINDS or src.framework not in ("torch", "keras"):
            raise LoadError(f"Unknown model kind {src.kind!r}.")
        if src.kind == SAMPLE and (src.arch or src.name) not in zoo.SAMPLE_MODELS:
            raise LoadError(f"Unknown sample model {src.arch or src.name!r}.")
        if src.file is not None and not _is_upload_path(src.file):
            raise LoadError("The stored upload path is not an uploads/<sha256>.<ext> name.")
        return src


def _is_upload_path(rel: str) -> bool:
    parts = str(rel).split("/")
    if len(parts) != 2 or parts[0] != "uploads":
        return False
    stem, _, ext = parts[1].partition(".")
    return len(stem) == 64 and all(c in "0123456789abcdef" for c in stem) and ext.isalnum()


def sample_source(name: str) -> ModelSource:
    """A bundled sample model (PyTorch or Keras) as a source."""
    sample = zoo.get_sample(name)
    return ModelSource(kind=SAMPLE, name=name, title=sample.title, framework=sample.framework,
                       arch=name, num_classes=10, input_shape=tuple(sample.input_shape))


# -- the architecture registry ------------------------------------------------------------------
def registry_architectures() -> list[str]:
    """Architectures an uploaded state dict can be loaded into: the PyTorch samples, then
    ``torchvision:<name>`` for every torchvision classification model."""
    return list(zoo.TORCH_SAMPLES) + [TORCHVISION_PREFIX + n
                                      for n in zoo.torchvision_architectures()]


def default_input_shape(arch: str) -> tuple[int, ...]:
    if arch in zoo.SAMPLE_MODELS:
        return tuple(zoo.SAMPLE_MODELS[arch].input_shape)
    return TORCHVISION_INPUT


def build_architecture(arch: str, num_classes: int) -> Any:
    """A randomly initialised registry architecture with ``num_classes`` outputs."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise LoadError(f"Expected a positive number of classes. Received {num_classes!r}.")
    if arch.startswith(TORCHVISION_PREFIX):
        name = arch[len(TORCHVISION_PREFIX):]
        if name not in zoo.torchvision_architectures():
            raise LoadError(f"Unknown torchvision architecture {name!r}; pick one from the list.")
        return zoo.build_torchvision(name, num_classes=num_classes)
    if arch in zoo.TORCH_SAMPLES:
        return zoo.resolve_builder(zoo.SAMPLE_MODELS[arch].builder)(num_classes=num_classes)
    raise LoadError(f"Unknown architecture {arch!r}: pick a sample model or a torchvision one.")


def _arch_title(arch: str) -> str:
    if arch in zoo.SAMPLE_MODELS:
        return zoo.SAMPLE_MODELS[arch].title
    return arch


def _check_shape(shape: tuple[int, ...] | list[int] | None) -> tuple[int, ...]:
    shape = tuple(int(d) for d in (shape or ()))
    if len(shape) < 2 or any(d < 1 for d in shape) or shape[0] != 1:
        raise LoadError(f"Expected an input shape with batch 1 first, e.g. 1x3x224x224. "
                        f"Received {'x'.join(map(str, shape)) or 'nothing'}.")
    return shape


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1x3x224x224"`` or ``"1,3,224,224"`` -> ``(1, 3, 224, 224)`` (LoadError if not)."""
    cleaned = str(text).lower().replace(",", "x").replace(" ", "")
    try:
        return _check_shape([int(p) for p in cleaned.split("x") if p])
    except ValueError as exc:
        raise LoadError(f"Expected an input shape like 1x3x224x224. Received {text!r}.") from exc



def _read_upload(folder: str | Path, source: ModelSource) -> bytes:
    if source.file is None or not _is_upload_path(source.file):
        raise LoadError("This model has no stored upload; upload it again on the Model page.")
    path = Path(folder) / source.file
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LoadError("The uploaded file is no longer in this workspace; upload it again on "
                        "the Model page.") from exc


# -- a model named by id (the CLI, workspace.json) ---------------------------------------------
def from_model_id(model_id: str, *, weights: str | Path | None = None,
                  num_classes: int | None = None,
                  input_shape: tuple[int, ...] | None = None) -> tuple[ModelSource, Any]:
    """A sample (with its trained weights) or ``torchvision:<arch>``, optionally with a state
    dict / safetensors file (never unpickled); LoadError with a fix for a bad id or file."""
    model_id = str(model_id)
    if model_id.startswith(TORCHVISION_PREFIX):
        model = build_architecture(model_id, int(num_classes or 1000))
        shape = input_shape or TORCHVISION_INPUT
        src = ModelSource(kind=WEIGHTS, name=sanitize_name(model_id[len(TORCHVISION_PREFIX):]),
                          title=model_id, arch=model_id, num_classes=int(num_classes or 1000),
                          input_shape=_check_shape(shape))
    elif model_id in zoo.SAMPLE_MODELS:
        src = sample_source(model_id)
        if weights and src.framework != "torch":
            raise LoadError(f"Expected a PyTorch model for a weights file: {model_id} is a "
                            f"{src.backend.title} sample. Received: weights={str(weights)!r}")
        model = (build_architecture(model_id, 10) if weights
                 else load_model(src, Path(".")))
        if input_shape:
            src = dataclasses.replace(src, input_shape=_check_shape(input_shape))
    else:
        known = ", ".join(zoo.SAMPLE_MODELS)
        raise LoadError(f"Unknown model {model_id!r}. Use a sample ({known}) or "
                        "'torchvision:<name>'.")
    if weights:
        loading.apply_state_dict(model, loading.load_state_dict(Path(weights).read_bytes()))
        model = model.eval()
    return src, model


# -- rebuilding, inputs, summaries, runners ----------------------------------------------------
def load_model(source: ModelSource, folder: str | Path) -> Any:
    """The model of ``source`` (eval mode), rebuilt from the bundled or stored file."""
    if source.kind == SAMPLE:
        if source.framework == "keras":
            return zoo.load_keras_sample(source.arch or source.name)
        return zoo.load_torch_sample(source.arch or source.name)
    data = _read_upload(folder, source)
    if source.kind == WEIGHTS:
        model = build_architecture(str(source.arch), int(source.num_classes or 0))
        loading.apply_state_dict(model, loading.load_state_dict(data))
        return model.eval()
    if source.kind == PT2:
        return loading.load_exported_program(data)
    if source.kind == KERAS:
        return loading.load_keras_model(data, folder)
    return loading.load_pickled_module(data, loading.trust_pickle_enabled())


def example_input(source: ModelSource) -> Any:
    """Zeros of the input signature: a torch tensor (a tuple of them for several inputs), or a
    float32 array for Keras."""
    return source.backend.example_input(source.signature)


def summarize(source: ModelSource, model: Any) -> Any:
    """Params, MACs and the layer table (a ``summary.ModelSummary``) of a private copy."""
    return source.backend.summarize(model, source.signature)


def make_runner(source: ModelSource, model: Any, method: str, workdir: str | Path, *,
                name: str | None = None, excludes: list[str] | None = None) -> Any:
    """The pruning runner of ``source`` in ``workdir`` (named ``name``, default the source's
    name), on a private copy: the caller's model is never changed."""
    return source.backend.make_runner(model, source.signature, method, Path(workdir),
                                      name or source.name, excludes)


def groups_table(source: ModelSource, model: Any, excludes: list[str] | None = None) -> Any:
    """The channel groups (which layers are tied, their channels, why fixed) of the model."""
    return source.backend.groups_table(model, source.signature, excludes)


# -- the session's current model, persisted in its workspace ----------------------------------
def save_current(folder: str | Path, source: ModelSource) -> None:
    atomic_write_json(Path(folder) / STATE_FILE, {"format_version": 1, **source.to_dict()})


def read_current(folder: str | Path) -> ModelSource | None:
    """The model a session in this workspace used last (None when unknown or unreadable)."""
    try:
        data = json.loads((Path(folder) / STATE_FILE).read_text())
        return ModelSource.from_dict(data)
    except (OSError, ValueError, LoadError):
        return None




# names that moved to services.uploads and services.workspace_info (kept for callers)
_MOVED = {name: "uif_explorer.services.uploads" for name in (
    "store_upload", "from_weights", "from_pt2", "from_keras", "from_pickle",
    "keras_input_shape")}
_MOVED["import_workspace"] = "uif_explorer.services.workspace_info"


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

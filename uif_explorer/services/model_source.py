"""The app's current model: where it comes from, how to rebuild it, summarise it and prune it.

One :class:`ModelSource` describes any model the app works on: a bundled sample (PyTorch or
Keras), a registry architecture with uploaded weights, a ``torch.export`` program, a ``.keras``
file or (trust option only) a pickled module. Its ``name`` is the stem of the workspace files
(``<name>.sens``...) and, with the upload's digest, the cache key: two models never share files
or cached objects. Uploads are stored as ``<workspace>/uploads/<sha256>.<ext>`` (the user's file
name is never a path), so a reloaded page rebuilds the same model from the session's folder.

No Streamlit here (the pages and ``uif_explorer.ui`` call this); TensorFlow is imported only
when a Keras source is used.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from uif_explorer import zoo
from uif_explorer.io import loading
from uif_explorer.io.loading import LoadError
from uif_explorer.io.workspace import atomic_write_bytes, atomic_write_json, sanitize_name

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
    def layout(self) -> str:
        return "NHWC" if self.framework == "keras" else "NCHW"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_shape"] = list(self.input_shape)
        out["notes"] = list(self.notes)
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
                      batch_fixed=bool(data.get("batch_fixed", False)))
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


# -- storing uploads ---------------------------------------------------------------------------
def store_upload(folder: str | Path, data: bytes, ext: str) -> tuple[str, str]:
    """Write the bytes as ``uploads/<sha256>.<ext>`` in the workspace; (sha256, relative path)."""
    sha = loading.sha256_of(data)
    rel = f"uploads/{sha}.{ext}"
    path = Path(folder) / rel
    if not path.exists():
        atomic_write_bytes(path, data)
    return sha, rel


def _read_upload(folder: str | Path, source: ModelSource) -> bytes:
    if source.file is None or not _is_upload_path(source.file):
        raise LoadError("This model has no stored upload; upload it again on the Model page.")
    path = Path(folder) / source.file
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LoadError("The uploaded file is no longer in this workspace; upload it again on "
                        "the Model page.") from exc


def _upload_name(prefix: str, sha: str) -> str:
    return sanitize_name(f"{prefix}-{sha[:10]}")


# -- making sources from uploads (each returns the source and the loaded model) ----------------
def from_weights(folder: str | Path, data: bytes, arch: str, num_classes: int,
                 input_shape: tuple[int, ...] | None = None) -> tuple[ModelSource, Any]:
    """A registry architecture with an uploaded state dict / safetensors (never unpickled)."""
    loading.check_upload_size(data)
    state = loading.load_state_dict(data)
    model = build_architecture(arch, int(num_classes))
    loading.apply_state_dict(model, state)
    kind = loading.sniff(data)
    sha, rel = store_upload(folder, data, "safetensors" if kind == "safetensors" else "pth")
    shape = _check_shape(input_shape or default_input_shape(arch))
    short = arch.split(":")[-1]
    src = ModelSource(kind=WEIGHTS, name=_upload_name(short, sha),
                      title=f"{_arch_title(arch)} ({num_classes} classes, uploaded weights)",
                      framework="torch", arch=arch, num_classes=int(num_classes),
                      input_shape=shape, file=rel, sha256=sha)
    return src, model.eval()


def _pt2_input_shape(module: Any) -> tuple[int, ...] | None:
    """The first tensor input's shape recorded in an exported program's graph."""
    graph = getattr(module, "graph", None)
    if graph is None:
        return None
    for node in graph.nodes:
        if node.op == "placeholder":
            val = node.meta.get("val")
            shape = getattr(val, "shape", None)
            if shape is not None:
                try:
                    return tuple(int(d) for d in shape)
                except TypeError:  # symbolic (dynamic) dimensions
                    return None
    return None


def from_pt2(folder: str | Path, data: bytes,
             input_shape: tuple[int, ...] | None = None) -> tuple[ModelSource, Any]:
    """A ``torch.export`` program (``ep.module()``); the input shape comes from the program."""
    module = loading.load_exported_program(data)
    sha, rel = store_upload(folder, data, "pt2")
    shape = input_shape or _pt2_input_shape(module)
    if shape is None:
        raise LoadError("The program's input shape could not be read (dynamic shapes?). Enter "
                        "the input shape, e.g. 1x3x224x224, and upload it again.")
    shape = tuple(shape)
    if shape[0] != 1:
        shape = (1, *shape[1:])
    shape = _check_shape(shape)
    fixed = not _runs_at_batch(module, shape, 2)
    notes = (("The program was exported with a fixed batch of 1, so it is scored one image "
              "at a time (slower) and not fine-tuned here. Export it with dynamic_shapes="
              "{'x': {0: torch.export.Dim('batch')}} for batched scoring.",) if fixed else ())
    src = ModelSource(kind=PT2, name=_upload_name("exported", sha),
                      title=f"Exported program {sha[:10]} (.pt2)", framework="torch",
                      input_shape=shape, file=rel, sha256=sha, notes=notes, batch_fixed=fixed)
    return src, module


def _runs_at_batch(module: Any, shape: tuple[int, ...], batch: int) -> bool:
    """Whether an exported program accepts ``batch`` inputs (its guards may fix batch 1)."""
    import torch

    try:
        with torch.no_grad():
            module(torch.zeros((batch, *shape[1:])))
    except Exception:  # noqa: BLE001 - a failed guard or a baked-in reshape
        return False
    return True


def from_keras(folder: str | Path, data: bytes) -> tuple[ModelSource, Any]:
    """A ``.keras`` model: config checked against the allowlist, then loaded in safe mode."""
    model = loading.load_keras_model(data, folder)
    sha, rel = store_upload(folder, data, "keras")
    shape = keras_input_shape(model)
    src = ModelSource(kind=KERAS, name=_upload_name(getattr(model, "name", "keras"), sha),
                      title=f"{getattr(model, 'name', 'Keras model')} (uploaded .keras)",
                      framework="keras", input_shape=shape, file=rel, sha256=sha)
    return src, model


def keras_input_shape(model: Any) -> tuple[int, ...]:
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        raise LoadError(f"Expected a Keras model with one input. Received {len(inputs)} inputs.")
    shape = tuple(inputs[0].shape)
    if any(d is None for d in shape[1:]):
        raise LoadError(f"The model's input shape {shape} has unknown dimensions; give its "
                        "Input a fixed shape (keras.Input(shape=(28, 28, 1))) and save again.")
    return (1, *(int(d) for d in shape[1:]))


def from_pickle(folder: str | Path, data: bytes, trust: bool,
                input_shape: tuple[int, ...] | None) -> tuple[ModelSource, Any]:
    """A whole pickled ``nn.Module``: only with the server's trust option."""
    model = loading.load_pickled_module(data, trust)
    shape = _check_shape(input_shape)
    sha, rel = store_upload(folder, data, "pkl")
    src = ModelSource(kind=PICKLE, name=_upload_name(type(model).__name__, sha),
                      title=f"{type(model).__name__} (pickled module)", framework="torch",
                      input_shape=shape, file=rel, sha256=sha)
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
    """Zeros of the input signature: a torch tensor, or a float32 array for Keras."""
    if source.framework == "keras":
        import numpy as np

        return np.zeros(source.input_shape, dtype="float32")
    import torch

    return torch.zeros(source.input_shape)


def summarize(source: ModelSource, model: Any) -> Any:
    """Params, MACs and the layer table (a ``summary.ModelSummary``) of a private copy."""
    from uif_explorer.services import summary

    if source.framework == "keras":
        return summarize_keras_model(model, source.input_shape)
    return summary.summarize_torch_model(copy.deepcopy(model), example_input(source))


def summarize_keras_model(model: Any, input_shape: tuple[int, ...]) -> Any:
    """The Keras counterpart of ``summarize_torch_model``: MACs of conv/dense layers (the
    same definition), params in the PyTorch sense, one row per layer with params or MACs."""
    import pandas as pd

    from uif_explorer.keras.graph import resolve_layer
    from uif_explorer.keras.macs import count_params, macs_table
    from uif_explorer.services.summary import TABLE_COLUMNS, ModelSummary, shape_label

    rows = macs_table(model, tuple(input_shape))
    seen = {r["layer"] for r in rows}
    table = []
    for r in rows:
        try:
            params = count_params(resolve_layer(model, r["layer"]))
        except Exception:  # noqa: BLE001 - a nested path the resolver does not know
            params = 0
        table.append({"name": r["layer"], "type": r["type"], "params": params,
                      "macs": int(r["macs"]), "output_shape": shape_label(r["output_shape"])})
    for layer in model.layers:
        if layer.name in seen:
            continue
        params = count_params(layer)
        if params:
            shape = getattr(layer, "output", None)
            shape = getattr(shape, "shape", None)
            table.append({"name": layer.name, "type": type(layer).__name__, "params": params,
                          "macs": 0, "output_shape": shape_label(
                              (1, *shape[1:]) if shape is not None else None)})
    macs = int(sum(r["macs"] for r in table))
    df = pd.DataFrame(table, columns=[c for c in TABLE_COLUMNS if c != "macs_share"])
    df["macs_share"] = df["macs"].astype(float) * 100.0 / max(macs, 1)
    df = df.loc[:, list(TABLE_COLUMNS)].reset_index(drop=True)
    return ModelSummary(params=count_params(model), macs=macs,
                        input_shape=(tuple(int(d) for d in input_shape),), table=df)


def make_runner(source: ModelSource, model: Any, method: str, workdir: str | Path) -> Any:
    """The pruning runner of ``source`` in ``workdir``, on a private copy for PyTorch (the
    Keras runner never mutates its model: it works on masked copies)."""
    if source.framework == "keras":
        from uif_explorer.keras import IterativePruningRunner

        return IterativePruningRunner(model, tuple(source.input_shape), workdir=workdir,
                                      name=source.name)
    from uif_explorer.torch.runners import get_pruning_runner

    return get_pruning_runner(copy.deepcopy(model), example_input(source), method,
                              workdir=workdir, name=source.name)


def groups_table(source: ModelSource, model: Any) -> Any:
    """The channel groups (which layers are tied, their channels, why fixed) of the model."""
    if source.framework == "keras":
        from uif_explorer.keras import KerasPruner

        return KerasPruner(model, tuple(source.input_shape)).groups_table()
    from uif_explorer.torch.pruner import ChannelPruner

    return ChannelPruner(copy.deepcopy(model), example_input(source)).groups_table()


def plan(runner: Any, ratio: float) -> Any:
    """``runner.plan`` for both backends (``removal_ratio`` / ``ratio``)."""
    return runner.plan(ratio)


def search(runner: Any, source: ModelSource, ev: Any, num_subnet: int, ratio: float,
           forced: bool, progress: Any) -> dict[str, Any]:
    """One-step search for both backends, scored by the evaluator ``ev``."""
    if source.framework == "keras":
        return runner.search(calibration_fn=ev.calib_fn, calib_args=ev.calib_args,
                             eval_fn=ev.eval_fn, eval_args=ev.eval_args, num_subnet=num_subnet,
                             ratio=ratio, forced=forced, progress=progress)
    return runner.search(calibration_fn=ev.calib_fn, calib_args=ev.calib_args,
                         eval_fn=ev.eval_fn, eval_args=ev.eval_args, num_subnet=num_subnet,
                         removal_ratio=ratio, forced=forced, progress=progress)


def build_candidate(runner: Any, source: ModelSource, ratio: float, index: int) -> Any:
    """Candidate ``index`` of a finished search as a slim model (writes its spec)."""
    if source.framework == "keras":
        return runner.prune_candidate(ratio, index=index)
    return runner.prune(removal_ratio=ratio, index=index)


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


# -- workspace folders made elsewhere (CLI / API) ----------------------------------------------
def import_workspace(folder: str | Path, data: bytes) -> tuple[ModelSource, list[str]]:
    """Extract a zipped workspace folder into ``folder`` and return the model it names.

    Members are checked by :func:`loading.workspace_members` (no absolute paths, ``..``,
    symlinks or unknown types) and written under their sanitised base names. The returned
    source is named like the archive's ``.sens`` / ``.search`` files, so the pages find them.
    """
    import dataclasses

    members = loading.workspace_members(data)
    try:
        info = json.loads(members["workspace.json"])
    except ValueError as exc:
        raise LoadError("The archive's workspace.json is not valid JSON.") from exc
    if not isinstance(info, dict) or info.get("kind") not in (None, "uif-explorer-workspace"):
        raise LoadError("The archive's workspace.json was not written by UIF Explorer.")
    model_id = str(info.get("model_id") or DEFAULT_SAMPLE)
    shape = tuple(int(d) for d in info.get("input_shape") or ()) or None
    weights = info.get("weights")
    notes: list[str] = []
    if weights:
        base = sanitize_name(Path(str(weights)).name)
        if base not in members:
            raise LoadError(
                f"The workspace was made with the weights file {Path(str(weights)).name!r}, "
                "which is not in the archive. Put it into the folder before zipping, or "
                f"upload it on the Model page for the architecture {model_id!r}."
            )
        arch = model_id if (model_id.startswith(TORCHVISION_PREFIX)
                            or model_id in zoo.TORCH_SAMPLES) else None
        if arch is None:
            raise LoadError(f"The workspace names the model {model_id!r}, which is not a "
                            "registry architecture (a sample or torchvision:<name>).")
        num_classes = int(info.get("num_classes") or (10 if arch in zoo.SAMPLE_MODELS
                                                       else 1000))
        source, _ = from_weights(folder, members[base], arch, num_classes, shape)
    elif model_id in zoo.SAMPLE_MODELS:
        source = sample_source(model_id)
    else:
        raise LoadError(
            f"The workspace names {model_id!r} without weights; only sample models come with "
            "their weights. Add the weights file to the folder, zip it again and upload it."
        )
    written = []
    for name, blob in members.items():
        if weights and name == sanitize_name(Path(str(weights)).name):
            continue  # stored as uploads/<sha256>.<ext> by from_weights
        atomic_write_bytes(Path(folder) / name, blob)
        written.append(name)
    stems = _run_names(members)
    named = sanitize_name(str(info["name"])) if info.get("name") else None
    if named in stems:
        stems.remove(named)
        stems.insert(0, named)
    if stems:
        if len(stems) > 1:
            notes.append(f"The archive holds analyses of several models ({', '.join(stems)}); "
                         f"showing {stems[0]}.")
        source = dataclasses.replace(source, name=stems[0])
    notes.append(f"Extracted {len(written)} file(s) into this session's workspace.")
    return source, notes


def _run_names(members: dict[str, bytes]) -> list[str]:
    """The model names (file stems) of the archive's analyses, then of its searches."""
    names: list[str] = []
    for suffix in (".sens", ".search"):
        for member, blob in sorted(members.items()):
            if not member.endswith(suffix):
                continue
            try:
                model = json.loads(blob).get("model")
            except (ValueError, AttributeError):
                continue
            if isinstance(model, str) and sanitize_name(model) not in names:
                names.append(sanitize_name(model))
    return names

"""Loading models and data from files a user hands us, without running their code.

Everything here treats the bytes as untrusted: the format is sniffed from the content (never the
file name), archives are checked for size before they are read (zip bombs), PyTorch files are
read with ``weights_only=True`` (no arbitrary unpickling), safetensors and ``.npz`` are read
without pickle, and a whole pickled ``nn.Module`` is only accepted when the caller passes
``trust=True`` (the app's explicit trust option). Every failure is a :class:`LoadError` whose
message says what is wrong and how to fix it.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

MAX_UNCOMPRESSED = 2 * 1024**3  # bytes an archive may expand to
MAX_RATIO = 200  # uncompressed / compressed size beyond which an archive is a bomb


class LoadError(ValueError):
    """A file that cannot be used: the message says what is wrong and what to do."""


def sniff(data: bytes) -> str:
    """Format from content: 'empty', 'safetensors', 'hdf5', 'pickle', 'torch-zip', 'pt2',
    'keras', 'npz', 'zip', 'onnx' or 'unknown'."""
    if not data:
        return "empty"
    if data[:8] == b"\x89HDF\r\n\x1a\n":
        return "hdf5"
    if data[:2] == b"PK":
        return _sniff_zip(data)
    if data[:1] == b"\x80" and len(data) > 2 and data[1] in range(2, 6):
        return "pickle"
    if len(data) > 8:
        n = int.from_bytes(data[:8], "little")
        if 0 < n < len(data) and data[8:9] == b"{":
            return "safetensors"
    if data[:1] == b"\x08" and b"onnx" in data[:64].lower() + data[:256]:
        return "onnx"
    return "unknown"


def _sniff_zip(data: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile:
        return "unknown"
    base = {n.split("/", 1)[-1] for n in names}
    if "config.json" in names and any(n.endswith(".weights.h5") or n == "model.weights.h5"
                                      for n in names):
        return "keras"
    if any(n.endswith("serialized_exported_program.json") or "/models/" in n
           and n.endswith(".json") for n in names) or any(n.endswith("archive_format")
                                                           for n in names):
        return "pt2"
    if "data.pkl" in base:
        return "torch-zip"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "zip"


def check_archive(data: bytes) -> None:
    """Refuse archives that would expand too far (zip bombs) or are corrupt."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            total = sum(i.file_size for i in infos)
            if total > MAX_UNCOMPRESSED or total > MAX_RATIO * max(1, len(data)) + 10**7:
                raise LoadError(
                    f"The archive would expand to {total / 1e6:.0f} MB from {len(data) / 1e6:.1f}"
                    " MB: refused as a possible zip bomb. Upload the file uncompressed."
                )
            bad = zf.testzip()
            if bad is not None:
                raise LoadError(f"The archive is corrupt (member {bad!r} fails its CRC check).")
    except zipfile.BadZipFile as exc:
        raise LoadError(f"The file is not a readable archive ({exc}); upload it again.") from exc


# -- PyTorch weights ----------------------------------------------------------------------------
def load_state_dict(data: bytes) -> dict[str, Any]:
    """A state dict from safetensors or a ``torch.save`` file, on the CPU, never unpickled."""
    import torch

    kind = sniff(data)
    if kind == "empty":
        raise LoadError("The file is empty.")
    if kind == "safetensors":
        from safetensors.torch import load as load_safetensors

        try:
            return dict(load_safetensors(data))
        except Exception as exc:  # noqa: BLE001 - any parse failure is the same to the user
            raise LoadError(f"The safetensors file is corrupt: {exc}") from exc
    if kind not in ("torch-zip", "pickle"):
        raise LoadError(
            f"Expected PyTorch weights (a state dict saved with torch.save, or safetensors). "
            f"Received a {kind} file."
        )
    if kind == "torch-zip":
        check_archive(data)
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError...
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise LoadError(
                "The file holds Python objects, not only tensors, and is not unpickled here "
                "(it could run code). Save `model.state_dict()` instead of the model, or start "
                "the app with the trust option to load whole pickled models you trust."
            ) from exc
        raise LoadError(f"The PyTorch file cannot be read ({msg}); it may be truncated.") from exc
    return unwrap_state_dict(obj)


def unwrap_state_dict(obj: object) -> dict[str, Any]:
    """Accept {'state_dict': ...} / {'model': ...} wrappers and DDP's 'module.' prefixes."""
    import torch

    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()
    ):
        raise LoadError("Expected a state dict (parameter names -> tensors) in the file.")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def apply_state_dict(model: Any, state: Mapping[str, Any]) -> None:
    """Load ``state`` into ``model`` strictly; a mismatch names the keys and shapes that differ."""
    import torch

    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append("shapes differ for " + "; ".join(shapes[:5]))
        if missing:
            parts.append(f"{len(missing)} keys missing from the file (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        raise LoadError(
            "These weights do not fit the chosen architecture: " + "; ".join(parts)
            + ". Check the architecture and its number of classes."
        )
    for k, v in state.items():
        if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all():
            raise LoadError(f"The weights hold NaN or Inf values (first in {k!r}).")
    model.load_state_dict(state, strict=True)


# -- datasets ----------------------------------------------------------------------------------
def read_npz(data: bytes, expected: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (read without pickle, archive size checked first);
    ``expected`` names what it should hold, for the refusal of a file that is no .npz."""
    if sniff(data) != "npz":
        raise LoadError(f"Expected an .npz file (numpy.savez) with {expected}. Received: a "
                        f"file of type {sniff(data)!r}; save the arrays with numpy.savez and "
                        "upload that.")
    check_archive(data)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except ValueError as exc:
        raise LoadError(f"The .npz holds objects that need pickle, refused: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - corrupt members
        raise LoadError(f"The .npz cannot be read ({exc}); save it again with numpy.savez."
                        ) from exc


def load_npz_dataset(data: bytes, layout: str = "NCHW", num_classes: int | None = None,
                     input_shape: tuple[int, ...] | None = None) -> tuple[np.ndarray,
                                                                          np.ndarray | None]:
    """``x`` (float32 preprocessed, or uint8 with the sample models' preprocessing) and an
    optional ``y`` of integer labels from an ``.npz`` (no pickle)."""
    from uif_explorer.data import preprocess

    arrays = read_npz(data, "an array 'x' and optionally 'y'")
    if "x" not in arrays:
        raise LoadError(f"Expected an array named 'x' in the .npz. Received: {sorted(arrays)}")
    x, y = arrays["x"], arrays.get("y")
    if x.ndim < 2 or len(x) == 0:
        raise LoadError(f"Expected 'x' with a batch axis and at least one sample. Received "
                        f"shape {x.shape}.")
    if x.dtype == np.uint8:
        if x.ndim == 3:
            x = x[:, None] if layout == "NCHW" else x[..., None]
        x = preprocess(x)
    elif x.dtype.kind == "f":
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise LoadError("'x' holds NaN or Inf values.")
    else:
        raise LoadError(f"Expected 'x' as float32 (preprocessed) or uint8. Received {x.dtype}.")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise LoadError(f"Expected samples of shape {tuple(input_shape)} ({layout}). Received "
                        f"{tuple(x.shape[1:])}.")
    if y is not None:
        if y.dtype.kind not in "iu" or y.ndim != 1 or len(y) != len(x):
            raise LoadError(f"Expected 'y' as one integer label per sample ({len(x)}). Received "
                            f"dtype {y.dtype}, shape {y.shape}.")
        if num_classes is not None and (y.min() < 0 or y.max() >= num_classes):
            raise LoadError(f"Expected labels in 0..{num_classes - 1}. Received labels in "
                            f"{int(y.min())}..{int(y.max())}.")
        y = y.astype(np.int64)
    return x, y


# -- upload limits -----------------------------------------------------------------------------
DEFAULT_MAX_UPLOAD_MB = 500
TRUST_ENV = "UIF_TRUST_PICKLE"
MAX_UPLOAD_ENV = "UIF_MAX_UPLOAD_MB"


def max_upload_mb() -> int:
    """The upload limit in MB: ``UIF_MAX_UPLOAD_MB`` (a positive integer), else 500."""
    raw = os.environ.get(MAX_UPLOAD_ENV, "").strip()
    try:
        value = int(raw) if raw else DEFAULT_MAX_UPLOAD_MB
    except ValueError:
        value = DEFAULT_MAX_UPLOAD_MB
    return value if value > 0 else DEFAULT_MAX_UPLOAD_MB


def check_upload_size(data: bytes, limit_mb: int | None = None) -> None:
    """Refuse empty files and files over the limit (checked by us, whatever the web server
    allowed), so one upload cannot fill the memory or the disk of a shared server."""
    limit = max_upload_mb() if limit_mb is None else int(limit_mb)
    if not data:
        raise LoadError("The file is empty; upload it again.")
    if len(data) > limit * 1024 * 1024:
        raise LoadError(
            f"The file is {len(data) / 1024**2:.0f} MB; uploads are limited to {limit} MB. "
            f"Start the app with {MAX_UPLOAD_ENV}=<MB> to allow larger files."
        )


def trust_pickle_enabled() -> bool:
    """Whether the server was started with the explicit trust option (``UIF_TRUST_PICKLE=1``)."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- torch.export programs ---------------------------------------------------------------------
_PT2_ALLOWED_TOP = {"archive_format", "archive_version", "byteorder", ".data"}
_PT2_ALLOWED_DATA = {"weights", "constants", "sample_inputs"}


def _pt2_members(zf: zipfile.ZipFile) -> list[str]:
    """Members of a ``.pt2`` archive, refusing anything that ``torch.export.load`` could turn
    into code: compiled kernels (AOTInductor ``.so``), pickled weights or custom objects."""
    names = zf.namelist()
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1:
        raise LoadError("The .pt2 archive has several top-level folders; save it again with "
                        "torch.export.save(ep, 'model.pt2').")
    for name in names:
        parts = name.split("/")[1:]
        if not parts or parts == [""]:
            continue
        head = parts[0]
        if head in _PT2_ALLOWED_TOP or head in ("models", "extra"):
            continue
        if head == "data" and len(parts) > 1 and parts[1] in _PT2_ALLOWED_DATA:
            continue
        raise LoadError(
            f"The .pt2 archive holds {'/'.join(parts)!r}, which is not part of a plain exported "
            "program (compiled AOTInductor or ExecuTorch payloads are refused: they run native "
            "code). Upload the output of torch.export.save(torch.export.export(model, args))."
        )
    return names


def _check_pt2_payloads(zf: zipfile.ZipFile, names: list[str]) -> None:
    """No member may need unpickling: configs say ``use_pickle: false`` and every ``.pt``
    member loads with ``weights_only=True`` (``torch.export.load`` would otherwise fall back
    to a full unpickle)."""
    import json

    import torch

    for name in names:
        if name.endswith("_config.json") and "/data/" in name:
            try:
                config = json.loads(zf.read(name)).get("config", {})
            except (ValueError, AttributeError) as exc:
                raise LoadError(f"The .pt2 archive's {name!r} is not valid JSON.") from exc
            for fqn, meta in (config or {}).items():
                if not isinstance(meta, dict):
                    raise LoadError(f"The .pt2 archive's {name!r} is malformed.")
                if meta.get("use_pickle"):
                    raise LoadError(
                        f"The .pt2 archive stores {fqn!r} as a pickle, which could run code; "
                        "refused. Export a model whose weights are plain tensors."
                    )
                path = str(meta.get("path_name", ""))
                if "/constants/" in name and not path.startswith("tensor_"):
                    raise LoadError(
                        f"The .pt2 archive holds a custom object constant ({fqn!r}), which is "
                        "loaded by unpickling; refused. Export a model without TorchScript or "
                        "opaque objects."
                    )
        elif name.endswith(".pt"):
            try:
                torch.load(io.BytesIO(zf.read(name)), map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - anything but plain tensors is refused
                raise LoadError(
                    f"The .pt2 archive's {name.split('/', 1)[-1]!r} holds Python objects, not "
                    "only tensors, and is not unpickled here. Export the model again with "
                    "plain tensor example inputs."
                ) from exc


def load_exported_program(data: bytes) -> Any:
    """An ``nn.Module`` (``ep.module()``) from the bytes of a ``torch.export.save`` file,
    without unpickling anything and on the CPU."""
    import torch

    check_upload_size(data)
    kind = sniff(data)
    if kind != "pt2":
        raise LoadError(f"Expected a torch.export program (.pt2, written by torch.export.save). "
                        f"Received a {kind} file.")
    check_archive(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = _pt2_members(zf)
        _check_pt2_payloads(zf, names)
    try:
        ep = torch.export.load(io.BytesIO(data))
        module = ep.module()
    except LoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - version skew, corrupt graph, CUDA-only ops...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise LoadError(
            f"torch.export.load could not read the program ({type(exc).__name__}: {first}). "
            f"Export it with torch {torch.__version__.split('+')[0]} on the CPU "
            "(model.cpu() before torch.export.export) and upload it again."
        ) from exc
    if not isinstance(module, torch.nn.Module):
        raise LoadError("The .pt2 program did not give a PyTorch module.")
    # ep.module() refuses .train()/.eval() (which evaluation and export call); a copy is a
    # plain GraphModule with the same graph and weights that accepts them.
    import copy

    from uif_explorer.io.validation import check_finite_module

    check_finite_module(module)
    return copy.deepcopy(module).eval()


def exported_inputs(module: Any) -> list[tuple[tuple[int, ...], str]] | None:
    """``(shape, dtype)`` of each input of a program from :func:`load_exported_program`, in
    call order, read from the example inputs it was exported with (its graph's placeholders);
    None when a size is symbolic (dynamic shapes). Inputs other than positional tensors
    (keyword arguments, dicts, lists) are refused: the app calls ``model(*inputs)``."""
    spec = getattr(module, "_in_spec", None)
    if spec is not None:
        from torch.utils import _pytree

        args, kwargs = _pytree.tree_unflatten(list(range(spec.num_leaves)), spec)
        if kwargs or any(not isinstance(a, int) for a in args):
            raise LoadError("Expected a program exported with positional tensor inputs "
                            "(torch.export.export(model, (x1, x2))). Received one whose inputs "
                            "hold keyword arguments, dicts or lists; export it with plain "
                            "tensors in a tuple and upload it again.")
    graph = getattr(module, "graph", None)
    if graph is None:
        return None
    out = []
    for node in graph.nodes:
        if node.op != "placeholder":
            continue
        val = node.meta.get("val")
        try:
            out.append((tuple(int(d) for d in val.shape), str(val.dtype).removeprefix("torch.")))
        except (AttributeError, TypeError):  # symbolic (dynamic) sizes, or not a tensor
            return None
    return out or None


# -- Keras .keras files ------------------------------------------------------------------------
KERAS_LAYERS = frozenset("""
Activation ActivityRegularization AdaptiveAveragePooling1D AdaptiveAveragePooling2D
AdaptiveAveragePooling3D AdaptiveMaxPooling1D AdaptiveMaxPooling2D AdaptiveMaxPooling3D Add
AdditiveAttention AlphaDropout Attention Average AveragePooling1D AveragePooling2D
AveragePooling3D AvgPool1D AvgPool2D AvgPool3D BatchNormalization Bidirectional CenterCrop
Concatenate Conv1D Conv1DTranspose Conv2D Conv2DTranspose Conv3D Conv3DTranspose ConvLSTM1D
ConvLSTM2D ConvLSTM3D Convolution1D Convolution1DTranspose Convolution2D Convolution2DTranspose
Convolution3D Convolution3DTranspose Cropping1D Cropping2D Cropping3D Dense DepthwiseConv1D
DepthwiseConv2D Dot Dropout ELU EinsumDense Embedding Flatten GRU GaussianDropout GaussianNoise
GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D GlobalAvgPool1D
GlobalAvgPool2D GlobalAvgPool3D GlobalMaxPool1D GlobalMaxPool2D GlobalMaxPool3D
GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D GroupNormalization Identity InputLayer
LSTM LayerNormalization LeakyReLU Masking MaxPool1D MaxPool2D MaxPool3D MaxPooling1D
MaxPooling2D MaxPooling3D Maximum Minimum MultiHeadAttention Multiply Normalization PReLU
Permute RMSNormalization ReLU RepeatVector Rescaling Reshape Resizing SeparableConv1D
SeparableConv2D SeparableConvolution1D SeparableConvolution2D SimpleRNN Softmax
SpatialDropout1D SpatialDropout2D SpatialDropout3D Subtract TimeDistributed UnitNormalization
UpSampling1D UpSampling2D UpSampling3D ZeroPadding1D ZeroPadding2D ZeroPadding3D
""".split())
"""Built-in Keras layers a ``.keras`` upload may hold. ``Lambda`` (arbitrary code),
``TFSMLayer``, ``TorchModuleWrapper``, ``JaxLayer``/``FlaxLayer`` and custom classes are not."""
KERAS_MODELS = {("keras.src.models.functional", "Functional"),
                ("keras.src.models.sequential", "Sequential"),
                ("keras", "Functional"), ("keras", "Sequential"),
                ("keras.models", "Functional"), ("keras.models", "Sequential")}
KERAS_HELPER_MODULES = frozenset({
    "keras", "keras.initializers", "keras.regularizers", "keras.constraints", "keras.optimizers",
    "keras.optimizers.schedules", "keras.losses", "keras.metrics", "keras.activations",
    "keras.dtype_policies",
})
MAX_KERAS_CONFIG = 64 * 1024 * 1024


def _keras_objects(obj: Any, path: str = "config") -> Any:
    """Every ``{"class_name": ..., "module": ...}`` entry of a Keras config, depth first."""
    if isinstance(obj, dict):
        if "class_name" in obj:
            yield path, obj
        for key, value in obj.items():
            yield from _keras_objects(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _keras_objects(value, f"{path}[{i}]")


def check_keras_config(data: bytes) -> dict[str, Any]:
    """Read a ``.keras`` archive's ``config.json`` without Keras and refuse anything that is not
    a Functional / Sequential model of built-in layers (returns the parsed config)."""
    import json

    kind = sniff(data)
    if kind != "keras":
        raise LoadError(f"Expected a Keras model file (.keras, written by model.save). "
                        f"Received a {kind} file. Legacy .h5 files: load them in Keras and "
                        "save again as .keras.")
    check_archive(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo("config.json")
        if info.file_size > MAX_KERAS_CONFIG:
            raise LoadError("The .keras file's config.json is larger than 64 MB; refused.")
        try:
            config = json.loads(zf.read("config.json"))
        except ValueError as exc:
            raise LoadError("The .keras file's config.json is not valid JSON; save the model "
                            "again with model.save('model.keras').") from exc
    if not isinstance(config, dict) or "class_name" not in config:
        raise LoadError("The .keras file's config.json does not describe a model.")
    for where, entry in _keras_objects(config):
        cls, module = entry.get("class_name"), entry.get("module")
        registered = entry.get("registered_name")
        if cls == "__keras_tensor__" and module is None:
            continue
        if cls in ("__lambda__", "__function__", "__bytes__") or cls == "Lambda":
            what = "Lambda layer" if cls == "Lambda" else "serialised Python function"
            raise LoadError(
                f"The model holds a {what} ({where}): its code would run when loaded, so it "
                "is refused. "
                "Replace it with built-in Keras layers (e.g. Activation, Rescaling, Reshape) "
                "and save again."
            )
        if registered not in (None, cls):
            raise LoadError(
                f"The model holds a custom object {registered!r} ({where}). Only built-in Keras "
                "layers load safely here; rebuild the model from keras.layers and save again."
            )
        if (module, cls) in KERAS_MODELS:
            continue
        if module == "keras.layers":
            if cls not in KERAS_LAYERS:
                raise LoadError(
                    f"The model holds a {cls} layer ({where}), which is not among the built-in "
                    "layers this app loads (no Lambda, TFSMLayer or wrapped torch/JAX "
                    "modules). Replace it and save again."
                )
            continue
        if module in KERAS_HELPER_MODULES:
            continue
        raise LoadError(
            f"The model holds the class {cls!r} from module {module!r} ({where}). Only "
            "Functional and Sequential models of built-in Keras layers are accepted: a "
            "subclassed keras.Model or a custom layer runs its own Python code and has no "
            "inspectable graph to prune. Rebuild it with the Functional API "
            "(keras.Model(inputs, outputs)) or keras.Sequential and save it again."
        )
    return config


def load_keras_model(data: bytes, workdir: str | os.PathLike) -> Any:
    """A Keras model from ``.keras`` bytes: the config is checked first (no Keras import), then
    ``keras.saving.load_model(safe_mode=True)`` reads a copy under ``<workdir>/uploads``."""
    check_upload_size(data)
    check_keras_config(data)
    folder = Path(workdir) / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sha256_of(data)}.keras"
    if not path.exists():
        from uif_explorer.io.workspace import atomic_write_bytes

        atomic_write_bytes(path, data)
    import keras

    try:
        try:
            model = keras.saving.load_model(str(path), safe_mode=True, compile=False)
        except Exception as exc:  # noqa: BLE001 - Keras raises many types for bad files
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise LoadError(
                f"Keras could not load the model in safe mode ({type(exc).__name__}: {first}). "
                f"Save it again with Keras {keras.__version__} (model.save('model.keras'))."
            ) from exc
        if not isinstance(model, keras.Model):
            raise LoadError("The .keras file does not hold a keras.Model.")
        for weight in model.weights:
            value = np.asarray(keras.ops.convert_to_numpy(weight))
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise LoadError(f"The model's weights hold NaN or Inf values (first in "
                                f"{weight.path!r}); train or save it again.")
    except LoadError:
        path.unlink(missing_ok=True)  # a refused upload leaves nothing in the workspace
        raise
    return model


# -- whole pickled modules (trust option only) -------------------------------------------------
def load_pickled_module(data: bytes, trust: bool) -> Any:
    """A whole ``torch.save(model)`` module; unpickling runs code, so only with ``trust``."""
    import torch

    if not trust:
        raise LoadError(
            "Whole pickled models are refused: unpickling a file runs the code inside it, so an "
            "uploaded pickle could take over this server. Upload a state dict, safetensors, a "
            "torch.export program (.pt2) or a .keras file instead; or, on your own machine "
            f"with files you trust, start the app with {TRUST_ENV}=1 (./run.sh --trust-pickle)."
        )
    check_upload_size(data)
    kind = sniff(data)
    if kind not in ("torch-zip", "pickle"):
        raise LoadError(f"Expected a pickled PyTorch model (torch.save(model, ...)). Received a "
                        f"{kind} file.")
    if kind == "torch-zip":
        check_archive(data)
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - missing classes, truncated files...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise LoadError(
            f"The pickle could not be loaded ({type(exc).__name__}: {first}). Its classes must "
            "be importable by the server (start it from your project's folder / PYTHONPATH)."
        ) from exc
    if not isinstance(obj, torch.nn.Module):
        raise LoadError(f"The pickle holds a {type(obj).__name__}, not an nn.Module. For a "
                        "state dict, choose the architecture and upload it as weights.")
    from uif_explorer.io.validation import check_finite_module

    check_finite_module(obj)
    return obj.eval()


# -- workspace archives ------------------------------------------------------------------------
WORKSPACE_SUFFIXES = (".sens", ".search", ".spec", ".json", ".safetensors", ".pth", ".pt")
WORKSPACE_NAMES = ("latest_spec",)
MAX_WORKSPACE_MEMBERS = 2000


def member_parts(info: zipfile.ZipInfo, fix: str) -> list[str]:
    """The path parts of an archive member, refusing absolute paths, drive letters, ``..`` and
    symbolic links (names that could point outside the folder they are extracted into).
    ``fix`` ends the message: what the user should zip instead."""
    import stat

    name = info.filename.replace("\\", "/")
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or parts[0].endswith(":"):
        raise LoadError(f"The archive member {name!r} points outside its folder; refused. {fix}")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise LoadError(f"The archive member {name!r} is a symbolic link; refused. {fix}")
    return parts


def workspace_members(data: bytes) -> dict[str, bytes]:
    """The usable files of a zipped workspace folder, by sanitised base name.

    Refuses absolute paths, ``..``, symlinks, unknown file types and too many members; a
    single top folder (``.vai/``) is stripped. Names never become paths as given: each is
    reduced to ``[A-Za-z0-9_.-]`` and used inside the target folder only.
    """
    from uif_explorer.io.workspace import sanitize_name

    check_upload_size(data)
    if sniff(data) not in ("zip", "npz", "keras", "pt2", "torch-zip"):
        raise LoadError("Expected a .zip of a workspace folder (workspace.json, *.sens, "
                        "*.search, *.spec).")
    check_archive(data)
    out: dict[str, bytes] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > MAX_WORKSPACE_MEMBERS:
            raise LoadError(f"The archive has {len(infos)} files; a workspace has far fewer.")
        for info in infos:
            parts = member_parts(info, "Zip the workspace folder itself.")
            name = "/".join(parts)
            base = parts[-1]
            if parts[0] in ("__MACOSX",) or base.startswith("._"):
                continue
            if not (base.endswith(WORKSPACE_SUFFIXES) or base in WORKSPACE_NAMES):
                raise LoadError(
                    f"The archive holds {base!r}, which is not a workspace file (expected "
                    "workspace.json, *.sens, *.search, *.spec, *.json, latest_spec and "
                    "optionally the weights). Zip only the workspace folder."
                )
            if len(parts) > 3:
                raise LoadError(f"The archive member {name!r} is nested too deeply; zip the "
                                "workspace folder itself.")
            clean = sanitize_name(base)
            if clean in out:
                raise LoadError(f"The archive holds {base!r} twice.")
            out[clean] = zf.read(info)
    if "workspace.json" not in out:
        raise LoadError("The archive holds no workspace.json: zip a folder made by "
                        "`uif-explorer ana/search --workdir ...` (or the API with "
                        "session.write_workspace_info).")
    return out

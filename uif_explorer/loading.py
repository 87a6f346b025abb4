"""Loading models and data from files a user hands us, without running their code.

Everything here treats the bytes as untrusted: the format is sniffed from the content (never the
file name), archives are checked for size before they are read (zip bombs), PyTorch files are
read with ``weights_only=True`` (no arbitrary unpickling), safetensors and ``.npz`` are read
without pickle, and a whole pickled ``nn.Module`` is only accepted when the caller passes
``trust=True`` (the app's explicit trust option). Every failure is a :class:`LoadError` whose
message says what is wrong and how to fix it.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
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
def load_npz_dataset(data: bytes, layout: str = "NCHW", num_classes: int | None = None,
                     input_shape: tuple[int, ...] | None = None) -> tuple[np.ndarray,
                                                                          np.ndarray | None]:
    """``x`` (float32 preprocessed, or uint8 with the sample models' preprocessing) and an
    optional ``y`` of integer labels from an ``.npz`` (no pickle)."""
    from uif_explorer.data import preprocess

    if sniff(data) != "npz":
        raise LoadError("Expected an .npz file (numpy.savez) with an array 'x' and optionally "
                        "'y'.")
    check_archive(data)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as exc:
        raise LoadError(f"The .npz holds objects that need pickle, refused: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - corrupt members
        raise LoadError(f"The .npz cannot be read ({exc}).") from exc
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

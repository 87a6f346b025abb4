"""Models uploaded to the app: each ``from_*`` checks the bytes, stores them as
``<workspace>/uploads/<sha256>.<ext>`` (the user's file name is never a path) and returns the
``ModelSource`` that rebuilds the model after a reload, with the loaded model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uif_explorer.io import loading
from uif_explorer.io.loading import LoadError
from uif_explorer.io.workspace import atomic_write_bytes, sanitize_name
from uif_explorer.services.model_source import (
    KERAS,
    PICKLE,
    PT2,
    WEIGHTS,
    ModelSource,
    _arch_title,
    _check_shape,
    build_architecture,
    default_input_shape,
)


# -- storing uploads ---------------------------------------------------------------------------
def store_upload(folder: str | Path, data: bytes, ext: str) -> tuple[str, str]:
    """Write the bytes as ``uploads/<sha256>.<ext>`` in the workspace; (sha256, relative path)."""
    sha = loading.sha256_of(data)
    rel = f"uploads/{sha}.{ext}"
    path = Path(folder) / rel
    if not path.exists():
        atomic_write_bytes(path, data)
    return sha, rel


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


def from_pt2(folder: str | Path, data: bytes,
             input_shape: tuple[int, ...] | None = None) -> tuple[ModelSource, Any]:
    """A ``torch.export`` program (``ep.module()``); its inputs (one or several tensors) come
    from the example inputs it was exported with, at batch 1 (``input_shape``: the shape
    of a one-input program whose sizes are dynamic)."""
    module = loading.load_exported_program(data)
    found = loading.exported_inputs(module)
    sha, rel = store_upload(folder, data, "pt2")
    if found is None and input_shape is None:
        raise LoadError("The program's input shape could not be read (dynamic shapes?). Enter "
                        "the input shape, e.g. 1x3x224x224, and upload it again.")
    specs = [(tuple(input_shape), "float32")] if found is None or (
        input_shape and len(found) == 1) else found
    specs = [(_check_shape((1, *shape[1:])), dtype) for shape, dtype in specs]
    several = tuple(specs) if len(specs) > 1 else ()
    fixed = not _runs_at_batch(module, specs, 2)
    notes = (("The program was exported with a fixed batch of 1, so it is scored one image "
              "at a time (slower) and not fine-tuned here. Export it with dynamic_shapes="
              "{'x': {0: torch.export.Dim('batch')}} for batched scoring.",) if fixed else ())
    if several:
        notes += (f"The program takes {len(specs)} inputs; its size, MACs and channel groups "
                  "are measured on zeros of each. To score and prune it, upload an .npz with "
                  "one array per input and 'labels' under Evaluation data (Arrays) below.",)
    src = ModelSource(kind=PT2, name=_upload_name("exported", sha),
                      title=f"Exported program {sha[:10]} (.pt2)", framework="torch",
                      input_shape=specs[0][0], file=rel, sha256=sha, notes=notes,
                      batch_fixed=fixed, inputs=several)
    return src, module


def _runs_at_batch(module: Any, specs: list[tuple[tuple[int, ...], str]], batch: int) -> bool:
    """Whether an exported program accepts ``batch`` inputs (its guards may fix batch 1)."""
    import torch

    try:
        with torch.no_grad():
            module(*(torch.zeros((batch, *shape[1:]), dtype=getattr(torch, dtype))
                     for shape, dtype in specs))
    except Exception:  # noqa: BLE001 - a failed guard or a baked-in reshape
        return False
    return True


def from_keras(folder: str | Path, data: bytes) -> tuple[ModelSource, Any]:
    """A ``.keras`` model: config checked against the allowlist, then loaded in safe mode; a
    model the pruner cannot follow is refused now, not on a later page."""
    from uif_explorer.keras.graph import check_model

    model = loading.load_keras_model(data, folder)
    check_model(model)
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

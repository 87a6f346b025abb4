"""Export a (slim) PyTorch model: state dict, ``torch.export`` program, ONNX, TorchScript.

Each file is written to a temporary name and renamed into place. ONNX exports are checked:
ONNX Runtime must reproduce the PyTorch output (relative error <= 1e-4) or the export fails.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from uif_explorer.io.workspace import atomic_write_bytes, atomic_write_with
from uif_explorer.torch.macs import Inputs, as_tuple

FORMATS = ("state_dict", "safetensors", "pt2", "onnx", "torchscript")
ONNX_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The model could not be exported in the requested format."""


def _via_tmp(path: Path, write) -> Path:
    """``write(tmp)`` then fsync and rename (exporters pick the format from the suffix)."""
    return atomic_write_with(path, write, suffix=path.suffix)


def check_onnx(path: Path, model: nn.Module, inputs: Inputs) -> float:
    """Relative error between ONNX Runtime and PyTorch on ``inputs``."""
    import onnxruntime as ort

    args = as_tuple(inputs)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: a.detach().cpu().numpy() for i, a in zip(sess.get_inputs(), args,
                                                            strict=False)}
    got = sess.run(None, feed)[0]
    with torch.no_grad():
        want = model(*args)
    want = (want if torch.is_tensor(want) else want[0]).detach().cpu().numpy()
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-12))


def export_torch(model: nn.Module, inputs: Inputs, fmt: str, path: Path) -> Path:
    """Write ``model`` (in eval mode) as ``fmt`` to ``path``; returns the path."""
    if fmt not in FORMATS:
        raise ValueError(f"Expected a format in {FORMATS}. Received: fmt={fmt!r}")
    model = model.eval()
    args = tuple(a.detach().cpu() for a in as_tuple(inputs))
    path = Path(path)
    try:
        if fmt in ("state_dict", "safetensors"):
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            if fmt == "safetensors" or path.suffix == ".safetensors":
                from safetensors.torch import save

                atomic_write_bytes(path, save(state))
            else:
                buf = io.BytesIO()
                torch.save(state, buf)
                atomic_write_bytes(path, buf.getvalue())
            return path
        if fmt == "pt2":
            program = torch.export.export(model, args, strict=False)
            return _via_tmp(path, lambda p: torch.export.save(program, p))
        if fmt == "torchscript":
            traced = torch.jit.trace(model, args, check_trace=False)
            return _via_tmp(path, lambda p: traced.save(p))

        def write_onnx(p: str) -> None:
            torch.onnx.export(model, args, p, dynamo=True, external_data=False)
            err = check_onnx(Path(p), model, args)
            if err > ONNX_TOLERANCE:
                raise ExportError(f"ONNX Runtime output differs from PyTorch (relative error "
                                  f"{err:.1e} > {ONNX_TOLERANCE}).")

        return _via_tmp(path, write_onnx)
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - exporters raise many types
        raise ExportError(f"Could not export as {fmt}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc

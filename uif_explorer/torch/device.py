"""Which device the app's and the CLI's PyTorch jobs run on (analysis, search, OFA search,
fine-tuning, latency).

WHY one place: the engine runs a model where its weights are (``evaluation.model_device``),
which is right for the API, where the user's own ``eval_fn`` decides. The app and the CLI start
the jobs themselves, so they choose: ``auto`` (CUDA when present, else the CPU), ``cpu`` or
``cuda`` (``cuda:N`` for one GPU of several). The choice is process-wide (``set_job_device``):
the CLI sets it from ``--device``, the app from its sidebar; it is read when a job copies the
model, so the user's model and the session's cached models stay where they are.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch

__all__ = ["CHOICES", "describe", "job_device", "resolve_device", "set_job_device",
           "to_job_device"]

CHOICES = ("auto", "cpu", "cuda")
T = TypeVar("T")

_choice: str | None = None  # None: models stay where they are (the API's behaviour)


def resolve_device(choice: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; ``cpu``; ``cuda`` / ``cuda:N``."""
    text = str(choice).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"Expected a CUDA GPU for device={choice!r}, but PyTorch sees none "
                             f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). "
                             "Choose 'auto' or 'cpu', or install a CUDA build of PyTorch on a "
                             f"machine with an NVIDIA GPU. Received: device={choice!r}")
        index = text.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ValueError(f"Expected cuda:N with N below {torch.cuda.device_count()} (the "
                             f"GPUs PyTorch sees). Received: device={choice!r}")
        return torch.device(text)
    raise ValueError(f"Expected a device in {CHOICES} (or cuda:N). Received: device={choice!r}")


def set_job_device(choice: str | None) -> torch.device | None:
    """Choose the device of the jobs started from now on (checked at once); None: none."""
    global _choice
    device = None if choice is None else resolve_device(choice)
    _choice = None if choice is None else str(choice)
    return device


def job_device() -> torch.device | None:
    """The chosen jobs' device, or None when nothing was chosen (models stay put)."""
    return None if _choice is None else resolve_device(_choice)


def to_job_device(value: T) -> T:
    """A module or tensor (or a tuple of tensors) moved to the jobs' device when one is
    chosen; modules are moved in place, so pass a private copy."""
    device = job_device()
    if device is None:
        return value
    return _moved(value, device)


def _moved(value: Any, device: torch.device) -> Any:
    if isinstance(value, (torch.nn.Module, torch.Tensor)):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_moved(v, device) for v in value)
    return value


def describe(device: torch.device | None = None) -> str:
    """'CUDA: NVIDIA H200' or 'CPU (8 threads)': what the app and the CLI show."""
    device = job_device() if device is None else device
    if device is not None and device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    return f"CPU ({torch.get_num_threads()} threads)"

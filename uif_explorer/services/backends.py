"""One interface over the PyTorch and Keras backends for the app and the CLI.

Pages and CLI commands never branch on the framework: they ask :func:`backend_for` for the
model's backend and call the same methods (runner, widths, MACs, latency, export, int8,
slim model, fine-tune job). The two implementations live in ``torch_backend`` and
``keras_backend``; the Keras one is imported only when a Keras model asks for it, so TensorFlow
is never loaded for a PyTorch model.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

FRAMEWORKS = ("torch", "keras")


@dataclass(frozen=True)
class ExportFormat:
    """A download the Export page offers and ``uif-explorer export --format`` writes."""

    fmt: str  # the backend's format name (``export_torch``'s fmt, or 'keras')
    label: str  # button label
    suffix: str  # file name suffix, dot included
    mime: str = "application/octet-stream"
    make_label: str | None = None  # made and checked on a button press, not at download time
    check_caption: str = ""  # shown once made; ``{error}`` is the check's relative error

    @property
    def on_demand(self) -> bool:
        return self.make_label is not None


class Backend(Protocol):
    """What the service layer needs from a framework (see ``torch_backend``/``keras_backend``).

    ``inputs`` is the example input (``example_input(shape)``); ``runner`` is the backend's
    pruning runner; ``ev`` an ``eval_data.Evaluator``; ``pruned`` a ``PrunedModel``;
    ``target`` what a ratio is a fraction of ('macs' or 'latency', ``latency_target``).
    """

    framework: str
    title: str
    export_formats: tuple[ExportFormat, ...]  # what the Export page offers
    int8_format: ExportFormat  # the quantized file (``quantize_int8``; made on a press)
    file_formats: tuple[str, ...]  # what ``export_file`` writes (the first is the default)
    finetune_lr: float  # the page's default learning rate
    finetune_help: str

    def example_input(self, shape: Sequence[int]) -> Any: ...
    def private_copy(self, model: Any) -> Any: ...
    def make_runner(self, model: Any, shape: Sequence[int], method: str, workdir: Path,
                    name: str | None, excludes: Sequence[str] | None = None) -> Any: ...
    def scoring(self, model: Any, x: Any, y: Any, calib_x: Any, batch_fixed: bool = False
                ) -> tuple[Any, tuple, Any, tuple]: ...
    def groups_table(self, model: Any, shape: Sequence[int],
                     excludes: Sequence[str] | None = None) -> Any: ...
    def summarize(self, model: Any, shape: Sequence[int]) -> Any: ...
    def prune(self, runner: Any, ratio: float, mode: str, channel_divisible: int = 2,
              target: str = "macs") -> Any: ...
    def search(self, runner: Any, ev: Any, num_subnet: int, ratio: float, forced: bool,
               progress: Any = None, executor: Any = None, target: str = "macs"
               ) -> dict[str, Any]: ...
    def build_candidate(self, runner: Any, ratio: float, index: int | None,
                        mode: str = "slim", target: str = "macs") -> Any: ...
    def slim_of(self, pruned: Any, original: Any, runner: Any) -> Any: ...
    def out_widths(self, model: Any) -> dict[str, int]: ...
    def cost(self, model: Any, shape: Sequence[int]) -> tuple[float, float]: ...
    def forward(self, model: Any, inputs: Any) -> Any: ...
    def export_bytes(self, model: Any, inputs: Any, fmt: str, workdir: Path) -> bytes: ...
    def export_file(self, model: Any, inputs: Any, fmt: str, path: Path) -> Path: ...
    def export_checked(self, model: Any, inputs: Any, fmt: str,
                       workdir: Path) -> dict[str, Any]: ...
    def export_note(self, ofa_subnet: bool) -> str: ...
    def quantize_int8(self, model: Any, inputs: Any, calibration: Any, path: Path,
                      check_x: Any = None, check_y: Any = None) -> Any: ...
    def slim_state(self, model: Any) -> dict[str, Any]: ...
    def finetune(self, pruned: Any, original: Any, runner: Any, epochs: int, lr: float,
                 batches: int, data: Callable[[], tuple[Any, Any]] | None = None
                 ) -> Callable[[Any], tuple[Any, Any]]: ...
    def machine_note(self) -> str: ...
    def file_call(self, path: Path, inputs: Any) -> Callable[[], Any]: ...
    def file_note(self) -> str: ...


def cpu_note(framework: str) -> str:
    """The machine a latency was measured on, for the caption next to it."""
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} logical CPUs, {framework}, batch 1, CPU"


def fp32_beside(int8_path: Path) -> Path:
    """Where an int8 handoff keeps its fp32 file: next to the int8 one, "int8" in the name
    read as "fp32" (the Export page times both files)."""
    int8_path = Path(int8_path)
    return int8_path.with_name(int8_path.name.replace("int8", "fp32"))


def backend_for(framework: str) -> Backend:
    """The backend of ``framework`` ('torch' or 'keras'); Keras is imported only here."""
    if framework == "torch":
        from uif_explorer.services.torch_backend import TORCH

        return TORCH
    if framework == "keras":
        from uif_explorer.services.keras_backend import KERAS

        return KERAS
    raise ValueError(f"Expected a framework in {FRAMEWORKS}. Received: framework={framework!r}")


def time_calls(calls: Mapping[str, Callable[[], Any]], repeats: int = 10, warmup: int = 2,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median milliseconds of each call, runs interleaved so that machine noise hits every
    variant alike."""
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(warmup):
        for call in calls.values():
            call()
    for _ in range(repeats):
        for name, call in calls.items():
            start = clock()
            call()
            times[name].append((clock() - start) * 1000.0)
    return {name: statistics.median(v) for name, v in times.items()}


def measure_latency(backend: Backend, models: Mapping[str, Any], inputs: Any,
                    repeats: int = 10, warmup: int = 2,
                    clock: Callable[[], float] = time.perf_counter,
                    files: Mapping[str, Path] | None = None) -> dict[str, float]:
    """Median milliseconds per forward (batch 1) of each model (run through
    ``backend.forward``) and of each exported file (``backend.file_call``: ONNX Runtime or
    TFLite), all interleaved."""
    on_file = {name: backend.file_call(Path(path), inputs)  # CPU inputs, before a move
               for name, path in (files or {}).items()}
    if hasattr(backend, "latency_models"):  # PyTorch: copies on the chosen device
        models, inputs = backend.latency_models(models, inputs)
    calls = {name: partial(backend.forward, m, inputs) for name, m in models.items()}
    calls.update(on_file)
    return time_calls(calls, repeats, warmup, clock)

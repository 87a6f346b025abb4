"""The PyTorch side of ``services.backends.Backend`` (imports torch, never TensorFlow)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from uif_explorer.services.backends import ExportFormat, cpu_note, fp32_beside

TRACE_LOCK = threading.RLock()
"""torch.export keeps its pre-dispatch mode stack in a process-wide global, so two captures or
exports in two threads (two app sessions, a page and a job) corrupt each other ("Trying to pop
empty mode stack"). Every call here that traces the model holds this lock."""

TRAIN_BATCH = 128  # fine-tuning batch size ("batches of 128" on the page)
TrainData = Callable[[], tuple[Any, Any]]
"""Makes the fine-tuning images ``(x, y)`` as numpy arrays in the model's layout."""


def _train_loader(data: TrainData | None, batches: int) -> Any:
    """Shuffled (seeded) batches of the user's fine-tuning images, or the bundled ones."""
    if data is None:
        from uif_explorer import data as bundled

        return bundled.torch_loader("train", batch_size=TRAIN_BATCH, limit=batches * TRAIN_BATCH)
    from torch.utils.data import DataLoader

    return DataLoader(samples(*data()), batch_size=TRAIN_BATCH, shuffle=True,
                      generator=torch.Generator().manual_seed(0))


class Samples(Dataset):
    """Samples of a model with several inputs: ``((x1[i], x2[i], ...), y[i])``, or
    ``((x1[i], ...),)`` without labels; batches then feed ``model(x1, x2, ...)``."""

    def __init__(self, xs: Sequence[torch.Tensor], y: torch.Tensor | None = None) -> None:
        self.xs, self.y = tuple(xs), y

    def __len__(self) -> int:
        return len(self.xs[0])

    def __getitem__(self, i: int) -> tuple:
        inputs = tuple(x[i] for x in self.xs)
        return (inputs,) if self.y is None else (inputs, self.y[i])


def samples(x: Any, y: Any = None) -> Any:
    """A dataset of numpy ``x`` (an array, or a tuple of arrays: one per input) and ``y``."""
    labels = () if y is None else (torch.from_numpy(y),)
    if isinstance(x, tuple):
        return Samples([torch.from_numpy(a) for a in x], *labels)
    return TensorDataset(torch.from_numpy(x), *labels)


SUFFIXES = {"state_dict": ".pth", "safetensors": ".safetensors", "pt2": ".pt2",
            "onnx": ".onnx", "torchscript": ".torchscript.pt"}


def is_sparse(model: nn.Module) -> bool:
    """Whether ``model`` is a sparse pruned model (mask buffers beside its weights)."""
    from uif_explorer.torch.apply import MASK_SUFFIX

    return any(name.endswith(MASK_SUFFIX) for name, _ in model.named_buffers())


def slim_of(model: nn.Module, original: nn.Module) -> nn.Module:
    """The slim version of a pruned model (a sparse one is sliced; a slim one returned)."""
    if not is_sparse(model):
        return model
    from uif_explorer.torch.apply import make_slim, slim_state_dict

    slim = make_slim(original, model.uif_capture, model.uif_plan)
    slim.load_state_dict(slim_state_dict(model))
    return slim.eval()


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def out_widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv and linear layer, by module name."""
    widths = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            widths[name] = int(m.weight.shape[1] if m.transposed else m.weight.shape[0])
        elif isinstance(m, nn.Linear):
            widths[name] = int(m.weight.shape[0])
    return widths


def export_bytes(model: nn.Module, inputs: Any, fmt: str, workdir: Path) -> bytes:
    """The file ``export_torch`` writes, as bytes (written under ``workdir/exports``)."""
    path = Path(workdir) / "exports" / f"slim{SUFFIXES[fmt]}"
    return TorchBackend().export_file(model, inputs, fmt, path).read_bytes()


def onnx_checked(model: nn.Module, inputs: Any, workdir: Path) -> dict[str, Any]:
    """ONNX bytes of ``model`` and ONNX Runtime's relative error vs PyTorch (checked <= 1e-4)."""
    from uif_explorer.torch.export import check_onnx

    with TRACE_LOCK:
        blob = export_bytes(model, inputs, "onnx", workdir)
        path = Path(workdir) / "exports" / "slim.onnx"
        return {"bytes": blob, "error": check_onnx(path, copy.deepcopy(model).eval(), inputs)}


class TorchBackend:
    """PyTorch models: runners from ``get_pruning_runner``, exports from ``export_torch``."""

    framework = "torch"
    title = "PyTorch"
    export_formats = (
        ExportFormat("safetensors", "Slim state dict (.safetensors)", ".safetensors"),
        ExportFormat("torchscript", "TorchScript (.pt)", ".torchscript.pt"),
        ExportFormat("pt2", "torch.export program (.pt2)", ".pt2"),
        ExportFormat("onnx", "ONNX (.onnx)", ".onnx",
                     make_label="Make ONNX (checked with ONNX Runtime)",
                     check_caption="ONNX Runtime check passed: relative error {error:.1e} (at "
                     "most 1e-4 allowed) on the example input."),
    )
    file_formats = ("state_dict", "safetensors", "pt2", "onnx", "torchscript")
    int8_format = ExportFormat("int8_onnx", "int8 (ONNX Runtime QDQ)", ".int8.onnx",
                               make_label="Make int8 (ONNX Runtime QDQ)")
    finetune_lr = 0.01
    finetune_help = "SGD with distillation from the unpruned model"

    def example_input(self, shape: Sequence[Any]) -> Any:
        """Zeros of ``shape``; of each ``(shape, dtype)`` for a program with several inputs."""
        if shape and not isinstance(shape[0], int):
            return tuple(torch.zeros(tuple(s), dtype=getattr(torch, d)) for s, d in shape)
        return torch.zeros(tuple(shape))

    def private_copy(self, model: nn.Module) -> nn.Module:
        return copy.deepcopy(model)

    def make_runner(self, model: nn.Module, shape: Sequence[int], method: str, workdir: Path,
                    name: str | None, excludes: Sequence[str] | None = None) -> Any:
        """A runner on a private copy (the caller's model, often a shared cached one, is
        never changed)."""
        from uif_explorer.torch.runners import get_pruning_runner

        with TRACE_LOCK:
            return get_pruning_runner(copy.deepcopy(model), self.example_input(shape), method,
                                      workdir=workdir, name=name, excludes=excludes or None)

    def scoring(self, model: nn.Module, x: Any, y: Any, calib_x: Any, batch_fixed: bool = False,
                output: str | None = None) -> tuple[Any, tuple, Any, tuple]:
        """``(eval_fn, eval_args, calibration_fn, calib_args)`` over numpy arrays (a tuple of
        them for a model with several inputs): top-1 with labels, else the label-free agreement
        with a copy of ``model``; adaptive BN on ``calib_x``. ``output``: the entry of a dict or
        tuple output that holds the class scores. An exported program fixed at batch 1 is run
        one sample at a time."""
        from torch.utils.data import DataLoader

        from uif_explorer.torch.evaluation import (
            adaptive_bn_calibration,
            make_label_free_eval,
            top1_accuracy,
        )
        from uif_explorer.torch.outputs import OutputOf, PickOutput

        batch = 1 if batch_fixed else 256
        calib = DataLoader(samples(calib_x), batch_size=min(batch, 64))
        if y is not None:
            fn, loader = top1_accuracy, DataLoader(samples(x, y), batch_size=batch)
        else:
            reference = copy.deepcopy(model)
            fn = make_label_free_eval(OutputOf(reference, output) if output else reference)
            loader = DataLoader(samples(x), batch_size=batch)
        return ((PickOutput(fn, output) if output else fn), (loader,), adaptive_bn_calibration,
                (calib,))

    def groups_table(self, model: nn.Module, shape: Sequence[int],
                     excludes: Sequence[str] | None = None) -> Any:
        from uif_explorer.torch.pruner import ChannelPruner

        with TRACE_LOCK:
            return ChannelPruner(copy.deepcopy(model), self.example_input(shape),
                                 list(excludes or [])).groups_table()

    def summarize(self, model: nn.Module, shape: Sequence[int]) -> Any:
        from uif_explorer.services.summary import summarize_torch_model

        with TRACE_LOCK:
            return summarize_torch_model(copy.deepcopy(model), self.example_input(shape))

    def prune(self, runner: Any, ratio: float, mode: str, channel_divisible: int = 2,
              target: str = "macs") -> Any:
        return runner.prune(removal_ratio=ratio, mode=mode, channel_divisible=channel_divisible,
                            target=target)

    def search(self, runner: Any, ev: Any, num_subnet: int, ratio: float, forced: bool,
               progress: Any = None, executor: Any = None, target: str = "macs"
               ) -> dict[str, Any]:
        extra = {"executor": executor} if executor is not None else {}
        return runner.search(calibration_fn=ev.calib_fn, calib_args=ev.calib_args,
                             eval_fn=ev.eval_fn, eval_args=ev.eval_args, num_subnet=num_subnet,
                             removal_ratio=ratio, forced=forced, progress=progress,
                             target=target, **extra)

    def build_candidate(self, runner: Any, ratio: float, index: int | None,
                        mode: str = "slim", target: str = "macs") -> Any:
        return runner.prune(removal_ratio=ratio, index=index, mode=mode, target=target)

    def slim_of(self, pruned: Any, original: nn.Module, runner: Any) -> nn.Module:
        # no copy first: slim_of only reads the sparse model, and a deep copy of an exported
        # program's GraphModule drops the plan and capture attributes it needs
        return slim_of(pruned.model, original)

    def out_widths(self, model: nn.Module) -> dict[str, int]:
        return out_widths(model)

    def cost(self, model: nn.Module, shape: Sequence[int]) -> tuple[float, float]:
        from uif_explorer.torch.macs import model_cost

        with TRACE_LOCK:
            c = model_cost(copy.deepcopy(model), self.example_input(shape))
        return c.macs / 1e6, c.params / 1e6

    def forward(self, model: nn.Module, inputs: Any) -> Any:
        with torch.inference_mode():
            out = model.eval()(*inputs) if isinstance(inputs, tuple) else model.eval()(inputs)
        if isinstance(out, torch.Tensor) and out.is_cuda:
            torch.cuda.synchronize(out.device)  # the time of the work, not of its launch
            out = out.cpu()
        return out

    def latency_models(self, models: Mapping[str, nn.Module], inputs: Any
                       ) -> tuple[dict[str, nn.Module], Any]:
        """Copies of ``models`` and ``inputs`` on the jobs' device (torch/device.py), timed
        there; the originals stay where they are."""
        from uif_explorer.torch.device import to_job_device

        return ({k: to_job_device(copy.deepcopy(m)) for k, m in models.items()},
                to_job_device(inputs))

    def export_bytes(self, model: nn.Module, inputs: Any, fmt: str, workdir: Path) -> bytes:
        return export_bytes(model, inputs, fmt, workdir)

    def export_file(self, model: nn.Module, inputs: Any, fmt: str, path: Path) -> Path:
        from uif_explorer.torch.export import export_torch

        with TRACE_LOCK:
            return export_torch(copy.deepcopy(model), inputs, fmt, Path(path))

    def export_checked(self, model: nn.Module, inputs: Any, fmt: str,
                       workdir: Path) -> dict[str, Any]:
        """``{"bytes", "error"}`` of an ONNX file checked with ONNX Runtime."""
        if fmt != "onnx":
            raise ValueError(f"Expected fmt 'onnx' (the checked format). Received: {fmt!r}")
        return onnx_checked(model, inputs, workdir)

    def export_note(self, ofa_subnet: bool) -> str:
        rebuild = ("Rebuilds from the original architecture + `ofa_model(**ofa_args)` + "
                   "`get_static_subnet(subnet_setting)` + the state dict." if ofa_subnet else
                   "The slim model rebuilds from the original architecture + the spec + the "
                   "slim state dict.")
        return f"{rebuild} ONNX files are verified with ONNX Runtime when they are made."

    def quantize_int8(self, model: nn.Module, inputs: Any, calibration: Any, path: Path,
                      check_x: Any = None, check_y: Any = None) -> Any:
        """fp32 ONNX -> int8 QDQ at ``path`` (``torch.quantize``), checked on ``check_x``
        against the fp32 file before it is written; returns the ``QuantizationReport``."""
        from uif_explorer.torch.quantize import quantize_onnx

        with TRACE_LOCK:  # the fp32 ONNX is kept beside it: the Export page times both
            return quantize_onnx(copy.deepcopy(model), inputs, calibration, path,
                                 check_data=check_x, check_labels=check_y,
                                 fp32_path=fp32_beside(path))

    def file_call(self, path: Path, inputs: Any) -> Callable[[], Any]:
        """One forward of an ONNX file in ONNX Runtime (CPU, torch's thread count)."""
        from uif_explorer.torch.quantize import onnx_session

        sess = onnx_session(path, torch.get_num_threads())
        feed = {sess.get_inputs()[0].name: inputs.detach().cpu().numpy()}
        return lambda: sess.run(None, feed)

    def file_note(self) -> str:
        import onnxruntime as ort

        return f"ONNX Runtime {ort.__version__}, CPU, {torch.get_num_threads()} threads"

    def slim_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The slim state dict of a sparse or slim model (what ``--out`` files hold)."""
        if hasattr(model, "slim_state_dict"):
            return model.slim_state_dict()
        return plain_state_dict(model)

    def finetune(self, pruned: Any, original: nn.Module, runner: Any, epochs: int, lr: float,
                 batches: int, data: TrainData | None = None
                 ) -> Callable[[Any], tuple[nn.Module, Any]]:
        """Fine-tuning of a private copy of the pruned model, with distillation from
        ``original`` (the session's models are not changed), on ``data()`` (the user's
        fine-tuning images as ``(x, y)``, read in the job) or the bundled training images."""
        model, teacher = copy.deepcopy(pruned.model), copy.deepcopy(original)

        def train(progress: Any) -> tuple[nn.Module, Any]:
            from uif_explorer.torch.device import to_job_device
            from uif_explorer.torch.evaluation import model_device
            from uif_explorer.torch.finetune import fine_tune

            home = model_device(model)  # trained on the chosen device, handed back here
            history = fine_tune(to_job_device(model), _train_loader(data, batches),
                                epochs=epochs, lr=lr, teacher=to_job_device(teacher),
                                max_batches=batches, progress=progress)
            return model.to(home), history

        return train

    def machine_note(self) -> str:
        return cpu_note(f"torch {torch.__version__} with {torch.get_num_threads()} threads")


TORCH = TorchBackend()

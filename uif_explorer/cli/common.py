"""What the subcommands share: the model and data flags, opening the model through the
service layer (the app's ``ModelSource``, evaluators and backends), progress bars, files."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uif_explorer.cli.errors import CliError, command

EXECUTORS = ("inline", "process", "ray")


def shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a shape like 1,3,224,224; got {text!r}") \
            from exc


def model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="resnet20",
                   help="sample model name or torchvision:<arch> (default resnet20)")
    p.add_argument("--weights", help="state dict (.pth/.pt) or .safetensors for the model")
    p.add_argument("--num-classes", type=int, help="classes of a torchvision architecture")
    p.add_argument("--input-shape", type=shape, help="input signature, e.g. 1,3,224,224")
    p.add_argument("--workdir", default=".vai", help="workspace folder (default .vai)")
    p.add_argument("--name", help="model name used in workspace file names "
                   "(default: the model's name, e.g. resnet20)")
    p.add_argument("--exclude", action="append", default=[], help="module to keep unpruned")
    device_arg(p)


def device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="where PyTorch jobs run: auto (a CUDA GPU when present, else the CPU), "
                   "cpu, cuda or cuda:N (default auto)")


def data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="bundled",
                   help="'bundled' (Fashion-MNIST subset), an .npz with x (and y), or a "
                   "folder of class folders (docs/data.md)")
    p.add_argument("--limit", type=int, default=500, help="evaluation samples (default 500)")
    p.add_argument("--executor", choices=EXECUTORS, default="inline")


def check_ratio(value: float | None, flag: str = "--ratio") -> None:
    """A MACs ratio must be a fraction in (0, 1): checked before anything is loaded."""
    if value is None or not 0 < value < 1:
        raise CliError(f"Expected {flag} to be the fraction of MACs to remove, between 0 and 1 "
                       f"(e.g. {flag} 0.4). Received: {flag} {value}")


def check_positive(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise CliError(f"Expected {flag} to be a positive whole number. Received: {flag} {value}")


def check_model_args(args: argparse.Namespace) -> None:
    check_positive(args.num_classes, "--num-classes")
    if args.weights and not Path(args.weights).is_file():
        raise CliError(f"Expected --weights to be a state dict or .safetensors file. "
                       f"Received: --weights {args.weights} (no such file)")


def check_data_args(args: argparse.Namespace) -> None:
    check_positive(args.limit, "--limit")
    if args.data != "bundled" and not Path(args.data).exists():
        raise CliError(f"Expected --data to be 'bundled' or an .npz file, or a folder of class "
                       f"folders. Received: --data {args.data} (no such file)")


def executor(args: argparse.Namespace) -> str | None:
    return None if args.executor == "inline" else args.executor


@dataclass
class Opened:
    """The model named on the command line, through the app's service layer."""

    source: Any  # services.model_source.ModelSource
    model: Any

    @property
    def backend(self) -> Any:
        return self.source.backend


def open_model(args: argparse.Namespace) -> Opened:
    """Build the model and record it in ``<workdir>/workspace.json`` (the app reopens it)."""
    from uif_explorer.services.workspace_info import ModelChoice, write_workspace_info

    use_device(getattr(args, "device", "auto"))
    choice = ModelChoice(args.model, args.weights, args.num_classes, args.input_shape)
    source, model = choice.resolve()
    write_workspace_info(args.workdir, choice, _digest(source, model), name=args.name,
                         source=source)
    return Opened(source, model)


def use_device(choice: str) -> None:
    """``--device``: where this command's PyTorch jobs run (checked before the model loads)."""
    from uif_explorer.torch.device import set_job_device

    try:
        set_job_device(choice)
    except ValueError as exc:
        raise CliError(str(exc).replace("device=", "--device ")) from exc


def _digest(source: Any, model: Any) -> str:
    if source.framework != "torch":
        return ""
    from uif_explorer.torch.capture import digest_weights

    return digest_weights(model)


def runner(args: argparse.Namespace, opened: Opened, method: str) -> Any:
    from uif_explorer.services.model_source import make_runner

    return make_runner(opened.source, opened.model, method, Path(args.workdir), name=args.name,
                       excludes=args.exclude or None)


def evaluator(args: argparse.Namespace, opened: Opened) -> Any:
    """The evaluator of ``--data`` (bundled or an .npz read in place) on ``--limit`` images."""
    from uif_explorer.services import eval_data

    if args.data == "bundled":
        if not eval_data.bundled_fits(opened.source):
            raise CliError(
                f"The bundled 28x28 Fashion-MNIST data cannot score {args.model} (input "
                f"{opened.source.input_label}). Pass --data with an .npz holding an array 'x' "
                f"({opened.source.layout}, float32 preprocessed) and optionally labels 'y'.")
        data = None
    else:
        data = eval_data.file_data(args.data, opened.source)
    return eval_data.make_evaluator(opened.source, opened.model, data, int(args.limit),
                                    Path(args.workdir))


def require_analysis(args: argparse.Namespace, run: Any) -> None:
    """``prune`` needs a finished analysis: say which command makes it."""
    from uif_explorer.services.analysis import read_sens

    path = run.workspace.sens(run.name)
    sens = read_sens(path)
    if sens is None:
        raise CliError(f"No analysis of {run.name} in {args.workdir} yet: run "
                       f"`{command(args, 'ana')}` first, then prune again.")
    if not sens.get("complete"):
        raise CliError(f"The analysis in {path} is unfinished: run `{command(args, 'ana')}` "
                       "to finish it (it resumes where it stopped), then prune again.")


def progress(desc: str, unit: str) -> Any:
    """A ``progress(done, total, info)`` callback drawing a tqdm bar on stderr."""
    from tqdm import tqdm

    state: dict = {}

    def update(done: int, total: int | None, info: dict | None = None) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr,
                                      disable=None)
        bar.update(int(done) - bar.n)
        if info:
            shown = {k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in info.items()
                     if k in ("loss", "lr", "acc1", "macs", "epoch")}
            bar.set_postfix(shown, refresh=False)
        if total is not None and done >= total:
            bar.close()

    return update


def save_state(state: dict[str, Any], path: Path) -> None:
    """A state dict as ``.safetensors`` (or a torch ``.pth``), written atomically."""
    from uif_explorer.io.workspace import atomic_write_bytes

    if path.suffix == ".safetensors":
        import numpy as np
        from safetensors.numpy import save as save_numpy

        if all(isinstance(v, np.ndarray) for v in state.values()):
            atomic_write_bytes(path, save_numpy({k: np.ascontiguousarray(v)
                                                 for k, v in state.items()}))
            return
        from safetensors.torch import save

        atomic_write_bytes(path, save({k: v.contiguous() for k, v in state.items()}))
    else:
        import io

        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(path, buf.getvalue())

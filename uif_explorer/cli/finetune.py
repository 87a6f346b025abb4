"""``uif-explorer finetune``: fine-tune the sparse model of a spec on your images.

The app's **Fine-tune** job, from a terminal: the sparse model rebuilt from ``--spec`` (made by
``prune`` or ``search``) is trained on the fine-tuning split of ``--data`` (a folder of class
folders, docs/data.md; ``bundled``: the Fashion-MNIST training images), with distillation
from the unpruned model (PyTorch) or ``fit()`` (Keras). The scores before and after use the
app's protocol: BatchNorm statistics re-estimated on the calibration split, then top-1 on the
evaluation split. ``--out`` keeps the result: PyTorch a slim state dict (``export
--weights-slim``), Keras the sparse model's weights (``.weights.h5``, the guide's
``model.load_weights`` before ``get_slim_model``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from uif_explorer.cli import common
from uif_explorer.cli.errors import CliError

HELP = "fine-tune the sparse model of a spec on your images (or the bundled ones)"
PRESETS = ("imagenet", "samples")


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.model_args(p)
    p.add_argument("--spec", required=True, help="the spec prune or search wrote")
    p.add_argument("--data", default="bundled",
                   help="a folder of class folders (fine-tuning split for training, evaluation "
                   "split for the score) or 'bundled'")
    p.add_argument("--preset", choices=PRESETS,
                   help="preprocessing of a folder (default: samples for models the bundled "
                   "data fits, else imagenet)")
    p.add_argument("--limit", type=int, default=500, help="evaluation images (default 500)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, help="learning rate (default: the app's, per backend)")
    p.add_argument("--batches", type=int, default=10, help="batches of 128 per epoch")
    p.add_argument("--out", help="PyTorch: slim state dict (.safetensors or .pth); Keras: "
                   "sparse weights (.weights.h5)")


def check(args: argparse.Namespace) -> None:
    if not Path(args.spec).is_file():
        raise CliError(f"Expected --spec to be a spec file written by prune or search. "
                       f"Received: --spec {args.spec} (no such file)")
    for flag in ("limit", "epochs", "batches"):
        common.check_positive(getattr(args, flag), f"--{flag}")
    if args.lr is not None and not args.lr > 0:
        raise CliError(f"Expected --lr > 0, e.g. --lr 0.01. Received: --lr {args.lr}")
    if args.data != "bundled" and not Path(args.data).is_dir():
        raise CliError(f"Expected --data to be a folder of class folders (docs/data.md) or "
                       f"'bundled'. Received: --data {args.data} (not a folder)")
    common.check_model_args(args)


class _Job:
    """What ``fine_tune_job``'s work expects of a job: a progress callback."""

    def __init__(self) -> None:
        self.progress = common.progress("fine-tuning", "batch")


def _evaluator(args: argparse.Namespace, opened: common.Opened) -> Any:
    from uif_explorer.services import eval_data

    if args.data == "bundled":
        if not eval_data.bundled_fits(opened.source):
            raise CliError(f"The bundled 28x28 Fashion-MNIST data cannot fine-tune "
                           f"{args.model} (input {opened.source.input_label}): pass --data "
                           "with a folder of class folders.")
        data = None
    else:
        data = eval_data.file_data(args.data, opened.source, args.preset)
    return eval_data.make_evaluator(opened.source, opened.model, data, int(args.limit),
                                    Path(args.workdir))


def run(args: argparse.Namespace) -> int:
    from uif_explorer.services import previews, pruning_jobs
    from uif_explorer.services.pruned import SPARSE, PrunedModel

    opened = common.open_model(args)
    ev = _evaluator(args, opened)
    if not pruning_jobs.can_fine_tune(opened.source, ev):
        raise CliError("This model cannot be fine-tuned here: it needs labelled images (a "
                       "folder of class folders) and a batch size above 1.")
    runner = common.runner(args, opened, "iterative")
    sparse = runner.prune(spec_path=args.spec, mode=SPARSE)
    before = previews.score(sparse, ev, previews.app_protocol(sparse, ev))
    pruned = PrunedModel(model=sparse, kind=SPARSE, model_name=runner.name,
                         framework=opened.source.framework, source="finetune",
                         spec_path=str(args.spec), accuracy=before, images=ev.images,
                         score_source=ev.describe())
    backend = opened.backend
    lr = backend.finetune_lr if args.lr is None else float(args.lr)
    print(f"fine-tuning on {pruning_jobs.fine_tune_data(ev)}: {args.epochs} epoch(s) of at "
          f"most {args.batches} batches, lr {lr:g} ({backend.finetune_help})")
    work = pruning_jobs.fine_tune_job(pruned, opened.source, opened.model, runner, ev,
                                      args.epochs, lr, args.batches)
    result = work(_Job())
    tuned = result["model"]
    print(f"{ev.short} before {before:.2f} %, after {result['accuracy']:.2f} % "
          f"({result['score_source']})")
    if args.out:
        _save(backend, tuned, Path(args.out))
        print(f"fine-tuned weights written to {args.out}")
    return 0


def _save(backend: Any, model: Any, out: Path) -> None:
    """PyTorch: the slim state dict; Keras: the sparse model's weights (``.weights.h5``)."""
    if backend.framework == "keras":
        if not out.name.endswith(".weights.h5"):
            raise CliError(f"Expected --out to end with .weights.h5 for a Keras model. "
                           f"Received: --out {out}")
        out.parent.mkdir(parents=True, exist_ok=True)
        model.save_weights(str(out))
        return
    common.save_state(backend.slim_state(model), out)

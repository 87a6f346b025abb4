"""``uif-explorer ofa-train``: make and sandwich-train a supernet (once-for-all)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from uif_explorer.cli import common
from uif_explorer.cli.errors import CliError

NAME = "ofa-train"
HELP = "make and sandwich-train a supernet (once-for-all)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="mobilenetv2_small",
                   help="PyTorch sample model to start from (default mobilenetv2_small)")
    p.add_argument("--expand-ratio", type=float, nargs="+", default=[0.5, 0.75, 1.0],
                   help="fractions of each group's channels kept (default 0.5 0.75 1)")
    p.add_argument("--divisible", type=int, default=8, help="channel_divisible (default 8)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--images", type=int, default=10000,
                   help="first training images of the bundled subset (default all 10,000)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.02,
                   help="initial learning rate, cosine schedule (default 0.02: trained start)")
    p.add_argument("--eval-images", type=int, default=500,
                   help="test images to measure the max/min subnets on (0: skip)")
    p.add_argument("--workdir", default=".vai", help="workspace folder (default .vai)")
    p.add_argument("--name", help="file stem of the supernet (default <model>_supernet)")


def check(args: argparse.Namespace) -> None:
    from uif_explorer import zoo

    if args.model not in zoo.TORCH_SAMPLES:
        raise CliError(f"Expected --model to be a PyTorch sample model "
                       f"({', '.join(zoo.TORCH_SAMPLES)}). Received: --model {args.model}")
    if any(not 0 < r <= 1 for r in args.expand_ratio):
        raise CliError(f"Expected --expand-ratio values in (0, 1] (fractions of channels "
                       f"kept). Received: --expand-ratio {' '.join(map(str, args.expand_ratio))}")
    for flag in ("divisible", "epochs", "images", "batch_size"):
        common.check_positive(getattr(args, flag), "--" + flag.replace("_", "-"))


def run(args: argparse.Namespace) -> int:
    from uif_explorer.services import ofa_app

    path = ofa_app.train_supernet(
        args.model, Path(args.workdir), images=args.images, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, expand_ratio=args.expand_ratio,
        channel_divisible=args.divisible, eval_images=args.eval_images,
        name=args.name or f"{args.model}_supernet",
        progress=common.progress("sandwich", "step"))
    info = json.loads(path.read_text())
    acc, macs = info.get("accuracy") or {}, info.get("macs") or {}
    print(f"supernet saved: {path} (+ {path.with_suffix('.safetensors').name})")
    for mode in ("max", "min"):
        score = acc.get(f"{mode}_subnet")
        print(f"  {mode} subnet: {macs[f'{mode}_subnet']:.3f} M MACs"
              + (f", top-1 {score:.2f} % ({acc['test_data']})" if score is not None else ""))
    return 0

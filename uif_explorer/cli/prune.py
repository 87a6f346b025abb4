"""``uif-explorer prune``: prune to a MACs ratio from the finished analysis (``ana``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from uif_explorer.cli import common
from uif_explorer.services.latency_target import default_divisible

HELP = "prune to a MACs ratio from the finished analysis"


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.model_args(p)
    p.add_argument("--ratio", type=float, required=True, help="fraction of MACs to remove")
    p.add_argument("--mode", choices=["sparse", "slim"], default="slim")
    p.add_argument("--divisible", type=int, default=None,
                   help="keep channel counts divisible by this (default: this CPU's vector "
                        "width, e.g. 8 with AVX2)")
    p.add_argument("--out", help="write the slim state dict (.safetensors or .pth)")


def check(args: argparse.Namespace) -> None:
    common.check_ratio(args.ratio)
    if args.divisible is not None:
        common.check_positive(args.divisible, "--divisible")
    args.divisible = default_divisible(args.divisible)
    common.check_model_args(args)


def run(args: argparse.Namespace) -> int:
    opened = common.open_model(args)
    runner = common.runner(args, opened, "iterative")
    common.require_analysis(args, runner)
    model = opened.backend.prune(runner, args.ratio, args.mode, args.divisible)
    spec = runner.workspace.latest_spec()
    print(f"pruned to {args.ratio:.0%} of the MACs removed; spec {spec}")
    if args.out:
        common.save_state(opened.backend.slim_state(model), Path(args.out))
        print(f"slim state dict written to {args.out}")
    return 0

"""``uif-explorer ana``: the resumable sensitivity analysis (``<workdir>/<name>.sens``)."""

from __future__ import annotations

import argparse

from uif_explorer.cli import common
from uif_explorer.cli.errors import CliError

HELP = "sensitivity analysis (resumable .sens)"
DEFAULT_RATIOS = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.model_args(p)
    common.data_args(p)
    p.add_argument("--ratios", default=DEFAULT_RATIOS,
                   help="channel ratios tried per group, comma separated")
    p.add_argument("--forced", action="store_true", help="start afresh instead of resuming")


def ratios(args: argparse.Namespace) -> list[float]:
    try:
        values = [float(r) for r in args.ratios.split(",") if r.strip()]
    except ValueError:
        values = []
    if not values or any(not 0 < r < 1 for r in values):
        raise CliError("Expected --ratios to be channel fractions between 0 and 1, comma "
                       f"separated (e.g. --ratios 0.3,0.6). Received: --ratios {args.ratios}")
    return values


def check(args: argparse.Namespace) -> None:
    ratios(args)
    common.check_model_args(args)
    common.check_data_args(args)


def run(args: argparse.Namespace) -> int:
    opened = common.open_model(args)
    ev = common.evaluator(args, opened)
    runner = common.runner(args, opened, "iterative")
    extra = {"executor": common.executor(args)} if common.executor(args) else {}
    sens = runner.ana(ev.eval_fn, args=ev.eval_args, forced=args.forced, ratios=ratios(args),
                      **extra)
    print(f"baseline {ev.score_name}: {sens['baseline']:.3f}; analysis saved in "
          f"{runner.workspace.sens(runner.name)}")
    return 0

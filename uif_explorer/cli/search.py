"""``uif-explorer search``: one-step search (candidates scored after adaptive BN)."""

from __future__ import annotations

import argparse
from pathlib import Path

from uif_explorer.cli import common

HELP = "one-step search (adaptive BN) at a MACs ratio"


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.model_args(p)
    common.data_args(p)
    p.add_argument("--ratio", type=float, required=True, help="fraction of MACs to remove")
    p.add_argument("--num-subnet", type=int, default=50, help="candidates (default 50)")
    p.add_argument("--forced", action="store_true", help="start afresh instead of resuming")
    p.add_argument("--refine", type=int, metavar="K",
                   help="then fine-tune the top K candidates on bundled training images, "
                        "re-score, keep the better half with twice the budget, until one is "
                        "left (successive halving; resumable)")
    p.add_argument("--refine-steps", type=int, default=20, metavar="S",
                   help="fine-tuning batches of the first refinement stage (default 20)")
    p.add_argument("--out", help="write the best candidate's slim state dict")


def check(args: argparse.Namespace) -> None:
    common.check_ratio(args.ratio)
    common.check_positive(args.num_subnet, "--num-subnet")
    common.check_model_args(args)
    common.check_data_args(args)
    if args.refine is not None:
        common.check_positive(args.refine, "--refine")
        common.check_positive(args.refine_steps, "--refine-steps")
        if getattr(args, "data", None) not in (None, "bundled"):
            raise common.CliError(
                "Expected --refine with the bundled data: refinement fine-tunes on the bundled "
                f"training images. Received: --data {args.data}. Drop --refine, or search on "
                "the bundled data.")


def run(args: argparse.Namespace) -> int:
    opened = common.open_model(args)
    ev = common.evaluator(args, opened)
    runner = common.runner(args, opened, "one_step")
    res = opened.backend.search(runner, ev, args.num_subnet, args.ratio, args.forced,
                                executor=common.executor(args))
    if args.refine is not None:
        from uif_explorer.services import refinement_jobs

        choice = refinement_jobs.RefineChoice(keep=min(args.refine, args.num_subnet),
                                              steps=args.refine_steps)
        res = refinement_jobs.refine(
            runner, ev, res, refinement_jobs.make_refinement(opened.source.framework, choice),
            common.progress("refining", "fine-tune"))
        view = refinement_jobs.refinement_view(res)
        for line in refinement_jobs.stage_lines(view) if view else []:
            print(line)
        best = view.winner if view and view.winner is not None else res["ranking"][0]
    else:
        best = res["ranking"][0]
    print(f"best candidate {best}: {ev.score_name} {res['candidates'][best]['score']:.3f} "
          f"(baseline {res['baseline']['score']:.3f}); saved in "
          f"{runner.workspace.search(runner.name, args.ratio)}")
    if args.out:
        slim = opened.backend.build_candidate(runner, args.ratio, None)
        common.save_state(opened.backend.slim_state(slim), Path(args.out))
        print(f"slim state dict written to {args.out}")
    return 0

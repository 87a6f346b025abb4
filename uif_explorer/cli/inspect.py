"""``uif-explorer inspect``: params, MACs, the layer table and the channel groups."""

from __future__ import annotations

import argparse

from uif_explorer.cli import common

HELP = "params, MACs, layer table and channel groups"


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.model_args(p)


def check(args: argparse.Namespace) -> None:
    common.check_model_args(args)


def run(args: argparse.Namespace) -> int:
    from uif_explorer.services import model_source

    opened = common.open_model(args)
    summary = model_source.summarize(opened.source, opened.model)
    print(f"{args.model}: {summary.params_m:.3f}M params, {summary.macs_m:.2f}M MACs at input "
          f"{summary.input_label}")
    print(summary.table.to_string(index=False))
    print()
    print(model_source.groups_table(opened.source, opened.model, args.exclude or None)
          .to_string(index=False))
    return 0

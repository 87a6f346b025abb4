"""``uif-explorer export``: a slim model rebuilt from a spec, in a deployable format."""

from __future__ import annotations

import argparse
from pathlib import Path

from uif_explorer.cli import common
from uif_explorer.cli.errors import CliError

HELP = "export a slim model from a spec"
FORMATS = ("state_dict", "safetensors", "pt2", "onnx", "torchscript", "keras")


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.model_args(p)
    p.add_argument("--spec", required=True, help="the spec prune or search wrote")
    p.add_argument("--weights-slim", help="slim state dict to load (default: sliced weights)")
    p.add_argument("--format", choices=FORMATS,
                   help="PyTorch: state_dict (default), safetensors, pt2, onnx, torchscript; "
                   "Keras: keras (default)")
    p.add_argument("--out", required=True)


def check(args: argparse.Namespace) -> None:
    if not Path(args.spec).is_file():
        raise CliError(f"Expected --spec to be a spec file written by prune or search. "
                       f"Received: --spec {args.spec} (no such file)")
    if args.weights_slim and not Path(args.weights_slim).is_file():
        raise CliError(f"Expected --weights-slim to be a state dict file. Received: "
                       f"--weights-slim {args.weights_slim} (no such file)")
    common.check_model_args(args)


def run(args: argparse.Namespace) -> int:
    opened = common.open_model(args)
    backend = opened.backend
    fmt = args.format or backend.file_formats[0]
    if fmt not in backend.file_formats:
        raise CliError(f"Expected --format to be one of {', '.join(backend.file_formats)} for "
                       f"a {backend.title} model. Received: --format {fmt}")
    runner = common.runner(args, opened, "iterative")
    slim = runner.prune(spec_path=args.spec, mode="slim")
    if args.weights_slim:
        from uif_explorer.io.loading import apply_state_dict, load_state_dict

        apply_state_dict(slim, load_state_dict(Path(args.weights_slim).read_bytes()))
    inputs = backend.example_input(opened.source.input_shape)
    out = backend.export_file(slim, inputs, fmt, Path(args.out))
    print(f"wrote {out}")
    return 0

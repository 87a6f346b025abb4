"""``uif-explorer export``: a slim model rebuilt from a spec, in a deployable format."""

from __future__ import annotations

import argparse
from pathlib import Path

from uif_explorer.cli import common
from uif_explorer.cli.errors import CliError

HELP = "export a slim model from a spec"
FORMATS = ("state_dict", "safetensors", "pt2", "onnx", "torchscript", "keras", "int8")


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.model_args(p)
    p.add_argument("--spec", required=True, help="the spec prune or search wrote")
    p.add_argument("--weights-slim", help="slim state dict to load (default: sliced weights)")
    p.add_argument("--format", choices=FORMATS,
                   help="PyTorch: state_dict (default), safetensors, pt2, onnx, torchscript; "
                   "Keras: keras (default); both: int8 (ONNX Runtime QDQ / TFLite, checked "
                   "against fp32, docs/quantization.md)")
    p.add_argument("--out", required=True)
    p.add_argument("--data", default="bundled",
                   help="int8: 'bundled', an .npz with x (and y), or a folder of class folders; "
                   "calibration and check images come from it (docs/data.md)")
    p.add_argument("--limit", type=int, default=200,
                   help="int8: evaluation images the int8 file is checked on (default 200)")


def check(args: argparse.Namespace) -> None:
    if not Path(args.spec).is_file():
        raise CliError(f"Expected --spec to be a spec file written by prune or search. "
                       f"Received: --spec {args.spec} (no such file)")
    if args.weights_slim and not Path(args.weights_slim).is_file():
        raise CliError(f"Expected --weights-slim to be a state dict file. Received: "
                       f"--weights-slim {args.weights_slim} (no such file)")
    common.check_model_args(args)
    common.check_data_args(args)


def run(args: argparse.Namespace) -> int:
    opened = common.open_model(args)
    backend = opened.backend
    fmt = args.format or backend.file_formats[0]
    if fmt not in (*backend.file_formats, "int8"):
        raise CliError(f"Expected --format to be one of {', '.join(backend.file_formats)} for "
                       f"a {backend.title} model, or int8. Received: --format {fmt}")
    runner = common.runner(args, opened, "iterative")
    slim = runner.prune(spec_path=args.spec, mode="slim")
    if args.weights_slim:
        from uif_explorer.io.loading import apply_state_dict, load_state_dict

        apply_state_dict(slim, load_state_dict(Path(args.weights_slim).read_bytes()))
    if fmt == "int8":
        return _int8(args, opened, slim)
    inputs = backend.example_input(opened.source.input_shape)
    out = backend.export_file(slim, inputs, fmt, Path(args.out))
    print(f"wrote {out}")
    return 0


def _int8(args: argparse.Namespace, opened: common.Opened, slim: object) -> int:
    """The checked int8 file of the slim model, and its fp32-vs-int8 report."""
    from uif_explorer.services import eval_data, export_report

    ds = None if args.data == "bundled" else eval_data.file_data(args.data, opened.source)
    try:
        report = export_report.make_int8(opened.backend, slim, opened.source, ds,
                                         Path(args.workdir), int(args.limit), Path(args.out))
    except (ValueError, RuntimeError) as exc:  # QuantizationError is a RuntimeError
        raise CliError(str(exc)) from exc
    print(export_report.int8_table(report).to_string(index=False))
    print(export_report.int8_tolerance(report))
    print(f"wrote {report.int8_path}")
    return 0

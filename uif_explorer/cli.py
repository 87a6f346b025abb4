"""``uif-explorer`` (also ``python -m uif_explorer``): the API's workflow from a terminal.

Every subcommand works on the same workspace files as the API and the app, so an analysis run
here (on a GPU box, or with ``--executor ray`` on a cluster) can be opened in the app later.

    uif-explorer inspect --model resnet20
    uif-explorer ana     --model resnet20 --data bundled --limit 500
    uif-explorer prune   --model resnet20 --ratio 0.4 --mode slim --out slim.safetensors
    uif-explorer search  --model resnet20 --ratio 0.5 --num-subnet 50 --executor process
    uif-explorer export  --model resnet20 --spec .vai/ResNet-xxxxxx_ratio_0.4.spec --format onnx
    uif-explorer app     --port 8501
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a shape like 1,3,224,224; got {text!r}") \
            from exc


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="resnet20",
                   help="sample model name or torchvision:<arch> (default resnet20)")
    p.add_argument("--weights", help="state dict (.pth/.pt) or .safetensors for the model")
    p.add_argument("--num-classes", type=int, help="classes of a torchvision architecture")
    p.add_argument("--input-shape", type=_shape, help="input signature, e.g. 1,3,224,224")
    p.add_argument("--workdir", default=".vai", help="workspace folder (default .vai)")
    p.add_argument("--name", help="model name used in workspace file names")
    p.add_argument("--exclude", action="append", default=[], help="module to keep unpruned")


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="bundled",
                   help="'bundled' (Fashion-MNIST subset) or an .npz with x (and y)")
    p.add_argument("--limit", type=int, default=500, help="evaluation samples (default 500)")
    p.add_argument("--executor", choices=["inline", "process", "ray"], default="inline")


def _setup(args: argparse.Namespace):
    from uif_explorer.session import ModelChoice, write_workspace_info
    from uif_explorer.torch.capture import digest_weights

    choice = ModelChoice(args.model, args.weights, args.num_classes, args.input_shape)
    model = choice.build()
    x = choice.example_input()
    write_workspace_info(args.workdir, choice, digest_weights(model))
    return choice, model, x


def _eval_fn(args: argparse.Namespace, model, choice):
    from uif_explorer.session import evaluation_loader
    from uif_explorer.torch.evaluation import make_label_free_eval, top1_accuracy

    loader, labelled = evaluation_loader(args.data, args.limit,
                                         num_classes=args.num_classes,
                                         input_shape=tuple(choice.example_input().shape[1:]))
    if labelled:
        return top1_accuracy, loader, "top-1 accuracy (%)"
    fn = make_label_free_eval(model)
    return fn, loader, fn.score_name


def cmd_inspect(args: argparse.Namespace) -> int:
    from uif_explorer.torch.macs import model_cost
    from uif_explorer.torch.pruner import ChannelPruner

    _, model, x = _setup(args)
    cost = model_cost(model, x)
    print(f"{args.model}: {cost.params_m:.3f}M params, {cost.macs_m:.2f}M MACs at input "
          f"{'x'.join(map(str, x.shape))}")
    print(cost.table.to_string(index=False))
    print()
    print(ChannelPruner(model, x, args.exclude).groups_table().to_string(index=False))
    return 0


def _progress_runner(args, method):
    from uif_explorer import get_pruning_runner

    choice, model, x = _setup(args)
    runner = get_pruning_runner(model, x, method, workdir=args.workdir, name=args.name,
                                excludes=args.exclude or None)
    return choice, model, runner


def cmd_ana(args: argparse.Namespace) -> int:
    choice, model, runner = _progress_runner(args, "iterative")
    fn, loader, score = _eval_fn(args, model, choice)
    ratios = [float(r) for r in args.ratios.split(",")]
    sens = runner.ana(fn, args=(loader,), forced=args.forced, ratios=ratios,
                      executor=None if args.executor == "inline" else args.executor)
    print(f"baseline {score}: {sens['baseline']:.3f}; analysis saved in "
          f"{runner.workspace.sens(runner.name)}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    _, _, runner = _progress_runner(args, "iterative")
    model = runner.prune(removal_ratio=args.ratio, mode=args.mode,
                         channel_divisible=args.divisible)
    spec = runner.workspace.latest_spec()
    print(f"pruned {runner.pruner.removal(model.uif_plan):.1%} of the MACs; spec {spec}")
    if args.out:
        _save_state(model.slim_state_dict() if args.mode == "sparse" else model.state_dict(),
                    Path(args.out))
        print(f"slim state dict written to {args.out}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    choice, model, runner = _progress_runner(args, "one_step")
    from uif_explorer.session import evaluation_loader
    from uif_explorer.torch.evaluation import adaptive_bn_calibration

    fn, loader, score = _eval_fn(args, model, choice)
    calib, _ = evaluation_loader(args.data, args.limit, num_classes=args.num_classes,
                                 input_shape=tuple(choice.example_input().shape[1:]))
    res = runner.search(calibration_fn=adaptive_bn_calibration, calib_args=(calib,),
                        eval_fn=fn, eval_args=(loader,), num_subnet=args.num_subnet,
                        removal_ratio=args.ratio, forced=args.forced,
                        executor=None if args.executor == "inline" else args.executor)
    best = res["ranking"][0]
    print(f"best candidate {best}: {score} {res['candidates'][best]['score']:.3f} "
          f"(baseline {res['baseline']['score']:.3f}); saved in "
          f"{runner.workspace.search(runner.name, args.ratio)}")
    if args.out:
        slim = runner.prune(removal_ratio=args.ratio, index=None)
        _save_state(slim.state_dict(), Path(args.out))
        print(f"slim state dict written to {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from uif_explorer.export import export_torch

    _, _, runner = _progress_runner(args, "iterative")
    slim = runner.prune(spec_path=args.spec, mode="slim")
    if args.weights_slim:
        from uif_explorer.loading import apply_state_dict, load_state_dict

        apply_state_dict(slim, load_state_dict(Path(args.weights_slim).read_bytes()))
    out = export_torch(slim, runner.input_signature, args.format, Path(args.out))
    print(f"wrote {out}")
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    env = {**os.environ, "UIF_PORT": str(args.port)}
    return subprocess.call([str(REPO_ROOT / "run.sh")], env=env)


def _save_state(state, path: Path) -> None:
    from safetensors.torch import save

    from uif_explorer.workspace import atomic_write_bytes

    if path.suffix == ".safetensors":
        atomic_write_bytes(path, save({k: v.contiguous() for k, v in state.items()}))
    else:
        import io

        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(path, buf.getvalue())


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="uif-explorer", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="params, MACs, layer table and channel groups")
    _model_args(p)
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("ana", help="sensitivity analysis (resumable .sens)")
    _model_args(p)
    _data_args(p)
    p.add_argument("--ratios", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9")
    p.add_argument("--forced", action="store_true")
    p.set_defaults(func=cmd_ana)
    p = sub.add_parser("prune", help="prune to a MACs ratio from the finished analysis")
    _model_args(p)
    p.add_argument("--ratio", type=float, required=True, help="fraction of MACs to remove")
    p.add_argument("--mode", choices=["sparse", "slim"], default="slim")
    p.add_argument("--divisible", type=int, default=2)
    p.add_argument("--out", help="write the slim state dict (.safetensors or .pth)")
    p.set_defaults(func=cmd_prune)
    p = sub.add_parser("search", help="one-step search (adaptive BN) at a MACs ratio")
    _model_args(p)
    _data_args(p)
    p.add_argument("--ratio", type=float, required=True)
    p.add_argument("--num-subnet", type=int, default=50)
    p.add_argument("--forced", action="store_true")
    p.add_argument("--out", help="write the best candidate's slim state dict")
    p.set_defaults(func=cmd_search)
    p = sub.add_parser("export", help="export a slim model from a spec")
    _model_args(p)
    p.add_argument("--spec", required=True)
    p.add_argument("--weights-slim", help="slim state dict to load (default: sliced weights)")
    p.add_argument("--format", choices=["state_dict", "pt2", "onnx", "torchscript"],
                   default="state_dict")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("app", help="start the web app (same as ./run.sh)")
    p.add_argument("--port", type=int, default=8501)
    p.set_defaults(func=cmd_app)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from uif_explorer.core.plan import PlanError
    from uif_explorer.loading import LoadError
    from uif_explorer.workspace import WorkspaceError

    try:
        return int(args.func(args) or 0)
    except (LoadError, PlanError, WorkspaceError, ValueError, TypeError) as exc:
        print(f"uif-explorer: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

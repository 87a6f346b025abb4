"""``uif-explorer`` (also ``python -m uif_explorer``): the API's workflow from a terminal.

Every subcommand works on the same workspace files as the API and the app, so an analysis run
here (on a GPU box, or with ``--executor ray`` on a cluster) can be opened in the app later.

    uif-explorer inspect --model resnet20
    uif-explorer ana     --model resnet20 --data bundled --limit 500
    uif-explorer prune   --model resnet20 --ratio 0.4 --mode slim --out slim.safetensors
    uif-explorer search  --model resnet20 --ratio 0.5 --num-subnet 50 --executor process
    uif-explorer export  --model resnet20 --spec .vai/ResNet-xxxxxx_ratio_0.4.spec --format onnx
    uif-explorer ofa-train  --model mobilenetv2_small --expand-ratio 0.5 0.75 1 --epochs 1
    uif-explorer ofa-search --supernet mobilenetv2_small --min-macs 3 --max-macs 5
    uif-explorer app     --port 8501
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


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
    from uif_explorer.services.session import ModelChoice, write_workspace_info
    from uif_explorer.torch.capture import digest_weights

    choice = ModelChoice(args.model, args.weights, args.num_classes, args.input_shape)
    model = choice.build()
    x = choice.example_input()
    write_workspace_info(args.workdir, choice, digest_weights(model), name=args.name)
    return choice, model, x


def _eval_fn(args: argparse.Namespace, model, choice):
    from uif_explorer.services.session import evaluation_loader
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
    from uif_explorer.services.session import evaluation_loader
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
    from uif_explorer.torch.export import export_torch

    _, _, runner = _progress_runner(args, "iterative")
    slim = runner.prune(spec_path=args.spec, mode="slim")
    if args.weights_slim:
        from uif_explorer.io.loading import apply_state_dict, load_state_dict

        apply_state_dict(slim, load_state_dict(Path(args.weights_slim).read_bytes()))
    out = export_torch(slim, runner.input_signature, args.format, Path(args.out))
    print(f"wrote {out}")
    return 0


def cmd_ofa_train(args: argparse.Namespace) -> int:
    from uif_explorer import zoo
    from uif_explorer.services import ofa_app

    if args.model not in zoo.TORCH_SAMPLES:
        raise ValueError(f"Expected --model to be a PyTorch sample model "
                         f"({', '.join(zoo.TORCH_SAMPLES)}). Received: {args.model!r}")
    if any(not 0 < r <= 1 for r in args.expand_ratio):
        raise ValueError(f"Expected --expand-ratio values in (0, 1] (fractions of channels "
                         f"kept). Received: {args.expand_ratio}")
    path = ofa_app.train_supernet(
        args.model, Path(args.workdir), images=args.images, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, expand_ratio=args.expand_ratio,
        channel_divisible=args.divisible, eval_images=args.eval_images,
        name=args.name or f"{args.model}_supernet", progress=_tqdm_progress("sandwich", "step"))
    info = json.loads(path.read_text())
    acc, macs = info.get("accuracy") or {}, info.get("macs") or {}
    print(f"supernet saved: {path} (+ {path.with_suffix('.safetensors').name})")
    for mode in ("max", "min"):
        score = acc.get(f"{mode}_subnet")
        print(f"  {mode} subnet: {macs[f'{mode}_subnet']:.3f} M MACs"
              + (f", top-1 {score:.2f} % ({acc['test_data']})" if score is not None else ""))
    return 0


def _supernet_ref(args: argparse.Namespace):
    """A bundled supernet by sample name, or a supernet .json (``save_supernet``'s) by path."""
    from uif_explorer import zoo
    from uif_explorer.io.workspace import read_json
    from uif_explorer.services import ofa_app

    bundled = {r.sample: r for r in ofa_app.bundled_supernets()}
    if args.supernet in bundled:
        return bundled[args.supernet]
    path = Path(args.supernet)
    if path.suffix != ".json":
        path = path.with_suffix(".json")
    if not path.exists():
        raise ValueError(f"Expected --supernet to be a bundled supernet ({', '.join(bundled)}) "
                         f"or a supernet .json file. Received: {args.supernet!r} (no {path})")
    info = read_json(path, kind=ofa_app.SUPERNET_KIND)
    sample = args.model or info.get("sample")
    if sample not in zoo.TORCH_SAMPLES:
        raise ValueError(f"{path} does not name its sample model; pass --model (one of "
                         f"{', '.join(zoo.TORCH_SAMPLES)}).")
    return ofa_app.SupernetRef(f"file:{path}", sample, path, False, str(path), info)


def cmd_ofa_search(args: argparse.Namespace) -> int:
    from uif_explorer.services import ofa_app
    from uif_explorer.torch.ofa import save_subnet_config

    ref = _supernet_ref(args)
    _, ofa_model = ofa_app.load_supernet_ref(ref)
    span = ofa_app.supernet_span(ofa_model)

    def pick(macs: float | None, flops: float | None, which: str) -> float | None:
        if macs is not None and flops is not None and macs != flops:
            raise ValueError(f"Expected --{which}-macs or --{which}-flops (the guide's name for "
                             f"the same MACs), not both. Received: {macs} and {flops}")
        return macs if macs is not None else flops

    lo = pick(args.min_macs, args.min_flops, "min")
    hi = pick(args.max_macs, args.max_flops, "max")
    lo, hi = (span[0] if lo is None else lo), (span[1] if hi is None else hi)
    settings = ofa_app.search_settings(
        lo, hi, population=args.population, iterations=args.iterations, images=args.images,
        macs_step=args.macs_step, mutate_size=args.mutate_size,
        crossover_size=args.crossover_size, calib_batches=args.calib_batches)
    name = args.name or ofa_app.search_name(ref, settings)
    ofa_app.check_range(ofa_model, lo, hi)
    print(f"searching {lo:.3f}-{hi:.3f} M MACs of {ref.path.name} (its subnets: "
          f"{span[0]:.3f}-{span[1]:.3f} M), at most {ofa_app.planned_evaluations(settings)} "
          f"subnets, top-1 on the first {args.images} bundled test images", file=sys.stderr)
    path = ofa_app.run_search(ofa_model, ref, Path(args.workdir), settings, name=name,
                              forced=args.forced, progress=_tqdm_progress(name, "subnet"),
                              executor=None if args.executor == "inline" else args.executor)
    evo = ofa_app.read_search(path) or {}
    pareto_path = Path(args.pareto) if args.pareto else path.with_name(
        path.name.replace("_evolution.json", "_pareto.json"))
    save_subnet_config(evo.get("pareto_set", {}), pareto_path)
    print(f"{len(evo.get('history', []))} subnets evaluated; {len(evo.get('pareto_front', []))} "
          f"on the Pareto front. Search: {path}; Pareto set: {pareto_path}")
    for key, entry in (evo.get("pareto_set") or {}).items():
        print(f"  {key:>8} M MACs bin: {entry['acc1']:.2f} % ({entry['macs']:.3f} M MACs, "
              f"{entry['params']:.4f} M params, {entry['net_id']})")
    return 0


def _tqdm_progress(desc: str, unit: str):
    """A ``progress(done, total, info)`` callback drawing a tqdm bar on stderr."""
    from tqdm import tqdm

    state: dict = {}

    def progress(done: int, total: int | None, info: dict | None = None) -> None:
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

    return progress


def cmd_app(args: argparse.Namespace) -> int:
    env = {**os.environ, "UIF_PORT": str(args.port)}
    extra = ["--trust-pickle"] if args.trust_pickle else []
    return subprocess.call([str(REPO_ROOT / "run.sh"), *extra], env=env)


def _save_state(state, path: Path) -> None:
    from safetensors.torch import save

    from uif_explorer.io.workspace import atomic_write_bytes

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
    p = sub.add_parser("ofa-train", help="make and sandwich-train a supernet (once-for-all)")
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
    p.set_defaults(func=cmd_ofa_train)
    p = sub.add_parser("ofa-search", help="evolutionary search of a supernet's subnets")
    p.add_argument("--supernet", default="mobilenetv2_small",
                   help="bundled supernet (mobilenetv2_small, resnet20) or a supernet .json")
    p.add_argument("--model", help="sample model of a supernet .json that does not name one")
    p.add_argument("--min-macs", type=float, help="MACs range in millions (default: all)")
    p.add_argument("--max-macs", type=float)
    p.add_argument("--min-flops", type=float, help="the guide's name for --min-macs")
    p.add_argument("--max-flops", type=float, help="the guide's name for --max-macs")
    p.add_argument("--macs-step", type=float, help="Pareto-set bin width, M MACs (default: "
                   "about 20 bins over the range)")
    p.add_argument("--population", type=int, default=16, help="parent_popu_size (default 16)")
    p.add_argument("--iterations", type=int, default=10, help="generations (default 10)")
    p.add_argument("--mutate-size", type=int, help="default population / 2")
    p.add_argument("--crossover-size", type=int, help="default population / 4")
    p.add_argument("--images", type=int, default=500,
                   help="first bundled test images that score each subnet (default 500)")
    p.add_argument("--calib-batches", type=int, default=4,
                   help="training batches of 64 for BatchNorm calibration (default 4)")
    p.add_argument("--executor", choices=["inline", "process", "ray"], default="inline")
    p.add_argument("--workdir", default=".vai", help="workspace folder (default .vai)")
    p.add_argument("--name", help="name of the search files (default: supernet + settings tag)")
    p.add_argument("--pareto", help="where to write the Pareto set "
                   "(default <workdir>/<name>_pareto.json)")
    p.add_argument("--forced", action="store_true", help="start afresh instead of resuming")
    p.set_defaults(func=cmd_ofa_search)
    p = sub.add_parser("app", help="start the web app (same as ./run.sh)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--trust-pickle", action="store_true",
                   help="accept whole pickled nn.Module uploads (runs their code; see "
                   "docs/security.md)")
    p.set_defaults(func=cmd_app)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from uif_explorer.core.plan import PlanError
    from uif_explorer.io.loading import LoadError
    from uif_explorer.io.workspace import WorkspaceError

    try:
        return int(args.func(args) or 0)
    except (LoadError, PlanError, WorkspaceError, ValueError, TypeError) as exc:
        print(f"uif-explorer: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``uif-explorer ofa-search``: evolutionary search of a supernet's subnets (Pareto set)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from uif_explorer.cli import common
from uif_explorer.cli.errors import CliError

NAME = "ofa-search"
HELP = "evolutionary search of a supernet's subnets"


def add_arguments(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--executor", choices=common.EXECUTORS, default="inline")
    p.add_argument("--workdir", default=".vai", help="workspace folder (default .vai)")
    p.add_argument("--name", help="name of the search files (default: supernet + settings tag)")
    p.add_argument("--pareto", help="where to write the Pareto set "
                   "(default <workdir>/<name>_pareto.json)")
    p.add_argument("--forced", action="store_true", help="start afresh instead of resuming")
    common.device_arg(p)


def _pick(macs: float | None, flops: float | None, which: str) -> float | None:
    if macs is not None and flops is not None and macs != flops:
        raise CliError(f"Expected --{which}-macs or --{which}-flops (the guide's name for the "
                       f"same MACs), not both. Received: --{which}-macs {macs} and "
                       f"--{which}-flops {flops}")
    return macs if macs is not None else flops


def check(args: argparse.Namespace) -> None:
    _pick(args.min_macs, args.min_flops, "min")
    _pick(args.max_macs, args.max_flops, "max")
    for flag in ("population", "images", "calib_batches"):
        common.check_positive(getattr(args, flag), "--" + flag.replace("_", "-"))
    common.use_device(args.device)  # subnets are scored there (torch/ofa/search.py)


def supernet_ref(args: argparse.Namespace) -> Any:
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
        raise CliError(f"Expected --supernet to be a bundled supernet ({', '.join(bundled)}) "
                       f"or a supernet .json file. Received: --supernet {args.supernet} "
                       f"(no {path})")
    info = read_json(path, kind=ofa_app.SUPERNET_KIND)
    sample = args.model or info.get("sample")
    if sample not in zoo.TORCH_SAMPLES:
        raise CliError(f"{path} does not name its sample model; pass --model (one of "
                       f"{', '.join(zoo.TORCH_SAMPLES)}).")
    return ofa_app.SupernetRef(f"file:{path}", sample, path, False, str(path), info)


def run(args: argparse.Namespace) -> int:
    from uif_explorer.services import ofa_app
    from uif_explorer.torch.ofa import save_subnet_config

    ref = supernet_ref(args)
    _, ofa_model = ofa_app.load_supernet_ref(ref)
    span = ofa_app.supernet_span(ofa_model)
    lo = _pick(args.min_macs, args.min_flops, "min")
    hi = _pick(args.max_macs, args.max_flops, "max")
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
                              forced=args.forced, progress=common.progress(name, "subnet"),
                              executor=common.executor(args))
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

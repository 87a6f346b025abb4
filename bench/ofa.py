"""OFA benchmark: the bundled MobileNetV2 supernet, and evolutionary vs random search.

    nice -n 19 .venv/bin/python bench/ofa.py                 # both parts, 5 seeds
    nice -n 19 .venv/bin/python bench/ofa.py --part search --seeds 5 --model resnet20

(a) ``train``: the bundled supernet (``sample_models/<model>_supernet.*``, trained by
    ``sample_models/train_supernet.py`` with the budget recorded in its JSON) on the whole
    bundled 2k test subset: top-1 of the original model, and of the max and min subnets after
    BatchNorm re-calibration (20 training batches of 128).
(b) ``search``: evolutionary search vs random search with the same number of evaluations, over
    the supernet's whole MACs span, for each seed: hypervolume of the Pareto front (MACs
    minimised, accuracy maximised; reference point = the span's largest MACs and the lowest
    accuracy any run saw), reported as mean +- std over seeds, plus the wall time of one
    uncached search. Candidates are scored on a few hundred test images after calibration on
    fixed training batches, so a subnet's score does not depend on when it is evaluated; scores
    are cached across runs (the same subnet is scored once for the whole bench).

Prints markdown tables (recorded in docs/ofa.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from uif_explorer.core.evolution import hypervolume, pareto_front  # noqa: E402
from uif_explorer.data import torch_dataset, torch_loader  # noqa: E402
from uif_explorer.torch.evaluation import adaptive_bn_calibration, top1_accuracy  # noqa: E402
from uif_explorer.torch.ofa import (  # noqa: E402
    get_static_subnet,
    load_bundled_supernet,
    run_evolutionary_search,
    run_random_search,
    sample_subnet,
)


def fixed_batches(split: str, images: int, batch_size: int, seed: int) -> list:
    """A fixed random subset as a list of (x, y) batches (the same every time it is read)."""
    x, y = torch_dataset(split).tensors
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:images]
    return [(x[idx[i:i + batch_size]], y[idx[i:i + batch_size]])
            for i in range(0, images, batch_size)]


def nice_step(span: float, bins: int = 20) -> float:
    raw = span / bins
    mag = 10 ** np.floor(np.log10(raw))
    return float(min((1, 2, 2.5, 5, 10), key=lambda m: abs(m * mag - raw)) * mag)


def part_train(name: str) -> None:
    pruner, ofa = load_bundled_supernet(name)
    info = json.loads((REPO / "sample_models" / f"{name}_supernet.json").read_text())
    test = torch_loader("test", batch_size=500)
    calib = fixed_batches("train", 20 * 128, 128, seed=1)
    rows = [("original model", pruner.original_macs, top1_accuracy(pruner.model, test))]
    for mode in ("max", "min"):
        _, setting = sample_subnet(ofa, mode)
        static, _, macs, _ = get_static_subnet(ofa, setting)
        adaptive_bn_calibration(static, calib, number_forward=20)
        rows.append((f"{mode} subnet", macs, top1_accuracy(static, test)))
    t = info["training"]
    print(f"\n### (a) Sandwich-trained supernet: {name}\n")
    print(f"Base: {info['base']}; budget: {t['epochs']} epochs x 79 steps (batch 128) on "
          f"{t['data']}, lr {t['lr']} cosine, distillation={t['distillation']}, "
          f"{t['seconds']:.0f} s on {t['threads']} threads of a shared 2-core machine.\n")
    print("| model | MACs (M) | top-1 on bundled 2k test (%) |\n|---|---:|---:|")
    for label, macs, acc in rows:
        print(f"| {label} | {macs:.3f} | {acc:.2f} |")


def part_search(name: str, seeds: list[int], images: int, args: argparse.Namespace) -> None:
    _, ofa = load_bundled_supernet(name)
    space = ofa.ofa_space
    lo = space.cost_m(space.choice.smallest())[0]
    hi = space.cost_m(space.choice.largest())[0]
    step = nice_step(hi - lo)
    calib = fixed_batches("train", 4 * 64, 64, seed=2)
    val = fixed_batches("test", images, images, seed=3)
    cache: dict[str, float] = {}

    def calib_and_eval(model, use_cache: bool = True):
        key = json.dumps([tuple(p.shape) for p in model.parameters()])
        if use_cache and key in cache:
            return cache[key]
        adaptive_bn_calibration(model, calib, number_forward=len(calib))
        cache[key] = top1_accuracy(model, val)
        return cache[key]

    search_args = dict(parent_popu_size=args.parent, iteration=args.iteration,
                       mutate_size=args.mutate, crossover_size=args.crossover)
    results: dict[str, list] = {"evolution": [], "random": []}
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for method in ("evolution", "random"):
                uncached = seed == seeds[0]
                fn = (lambda m: calib_and_eval(m, use_cache=False)) if uncached else \
                    calib_and_eval
                start = time.perf_counter()
                if method == "evolution":
                    out = run_evolutionary_search(
                        ofa, None, (), fn, (), "acc1", "max", lo, hi, step, seed=seed,
                        workdir=tmp, name=f"evo{seed}", **search_args)
                    n = len(out.history)
                else:
                    out = run_random_search(ofa, None, (), fn, (), "acc1", "max", lo, hi, step,
                                            num_subnets=n, seed=seed, workdir=tmp,
                                            name=f"rnd{seed}")
                if uncached:
                    times[method] = time.perf_counter() - start
                results[method].append(out.history)
                print(f"  seed {seed} {method}: {len(out.history)} evaluations, "
                      f"{len(out)} bins", flush=True)
    ref_acc = min(r["acc1"] for runs in results.values() for h in runs for r in h)
    print(f"\n### (b) Evolutionary vs random search: {name}\n")
    print(f"MACs span {lo:.3f}-{hi:.3f} M (min..max subnet), macs_step {step:g}; "
          f"{len(results['evolution'][0])} evaluations per search "
          f"(parent_popu_size {args.parent}, iteration {args.iteration}, mutate_size "
          f"{args.mutate}, crossover_size {args.crossover}); calibration: 4 fixed training "
          f"batches of 64; score: top-1 on {images} fixed test images; seeds {seeds}. "
          f"Hypervolume reference point: ({hi:.3f} M MACs, {ref_acc:.2f} %).\n")
    print("| method | hypervolume (M MACs x %), mean +- std | front size, mean | "
          "best top-1 (%), mean | wall time of one search (s) |\n|---|---:|---:|---:|---:|")
    for method, runs in results.items():
        hv = [hypervolume([(r["macs"], r["acc1"]) for r in h], hi, ref_acc) for h in runs]
        front = [len(pareto_front(h, "acc1")) for h in runs]
        best = [max(r["acc1"] for r in h) for h in runs]
        print(f"| {method} | {np.mean(hv):.2f} +- {np.std(hv):.2f} | {np.mean(front):.1f} | "
              f"{np.mean(best):.2f} | {times[method]:.1f} |")
    print("\nPer seed (hypervolume): " + "; ".join(
        f"seed {s}: evolution {hypervolume([(r['macs'], r['acc1']) for r in e], hi, ref_acc):.2f}"
        f", random {hypervolume([(r['macs'], r['acc1']) for r in q], hi, ref_acc):.2f}"
        for s, e, q in zip(seeds, results["evolution"], results["random"], strict=True)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("train", "search", "all"), default="all")
    ap.add_argument("--model", default="mobilenetv2_small",
                    choices=("mobilenetv2_small", "resnet20"))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--parent", type=int, default=8)
    ap.add_argument("--iteration", type=int, default=4)
    ap.add_argument("--mutate", type=int, default=4)
    ap.add_argument("--crossover", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {time.strftime('%Y-%m-%d %H:%M')}")
    if args.part in ("train", "all"):
        part_train(args.model)
    if args.part in ("search", "all"):
        part_search(args.model, list(range(args.seeds)), args.images, args)


if __name__ == "__main__":
    main()

"""Runner benchmarks on the sample ResNet-20 and the bundled Fashion-MNIST subset.

1. ``compare``: 50% of MACs removed by uniform L1, iterative (sensitivity) and one-step (best of
   ``--candidates``), each followed by the same short fine-tune; accuracy on the bundled test set.
2. ``kendall``: Kendall tau between each candidate's score (with adaptive BN, and without) and
   its accuracy after a 1-epoch fine-tune, with a bootstrap 95% interval.
3. ``throughput``: candidates scored per minute, in-process vs process pool vs Ray (2 workers).

    .venv/bin/python bench/runners.py compare kendall throughput
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uif_explorer import get_pruning_runner  # noqa: E402
from uif_explorer.data import torch_loader  # noqa: E402
from uif_explorer.torch.evaluation import adaptive_bn_calibration, top1_accuracy  # noqa: E402
from uif_explorer.torch.finetune import fine_tune  # noqa: E402
from uif_explorer.torch.pruner import ChannelPruner  # noqa: E402
from uif_explorer.zoo import load_torch_sample  # noqa: E402

X = torch.randn(1, 1, 28, 28)


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b (ties counted as neither concordant nor discordant)."""
    n = len(a)
    conc = disc = ties_a = ties_b = 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif da == db:
                conc += 1
            else:
                disc += 1
    denom = np.sqrt((conc + disc + ties_a) * (conc + disc + ties_b))
    return float((conc - disc) / denom) if denom else 0.0


def bootstrap_ci(a: np.ndarray, b: np.ndarray, reps: int = 2000, seed: int = 0):
    rng = np.random.default_rng(seed)
    vals = [kendall_tau(a[idx], b[idx]) for idx in
            (rng.integers(0, len(a), len(a)) for _ in range(reps))]
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


def tune(model: torch.nn.Module, epochs: float, teacher=None) -> float:
    train = torch_loader("train", batch_size=128)
    batches = int(len(train) * epochs)
    fine_tune(model, train, epochs=1, lr=0.02, max_batches=batches, teacher=teacher)
    return top1_accuracy(model, torch_loader("test"))


def compare(args) -> list[str]:
    base = load_torch_sample("resnet20")
    val = torch_loader("test", limit=args.val_images, batch_size=250)
    calib = torch_loader("train", limit=1000, batch_size=100)
    work = Path(tempfile.mkdtemp())
    rows = [("unpruned", top1_accuracy(base, torch_loader("test")), None, 0.0)]
    t = time.time()
    pr = ChannelPruner(base, X)
    plan = pr.plan_for_removal(0.5)
    uniform = pr.slim_model(plan)
    rows.append(("uniform L1", None, uniform, pr.removal(plan), time.time() - t))
    t = time.time()
    it = get_pruning_runner(base, X, "iterative", workdir=work)
    it.ana(top1_accuracy, args=(val,))
    sparse = it.prune(removal_ratio=0.5)
    rows.append(("iterative (sensitivity)", None, sparse, it.pruner.removal(sparse.uif_plan),
                 time.time() - t))
    t = time.time()
    os_ = get_pruning_runner(base, X, "one_step", workdir=work)
    os_.search(calibration_fn=adaptive_bn_calibration, calib_args=(calib, 10),
               eval_fn=top1_accuracy, eval_args=(val,), num_subnet=args.candidates,
               removal_ratio=0.5)
    best = os_.prune(removal_ratio=0.5)
    rows.append((f"one-step (best of {args.candidates})", None, best,
                 os_.pruner.removal(best.uif_plan), time.time() - t))
    out = [
        f"Sample ResNet-20, 50% of MACs removed, each fine-tuned {args.epochs} epoch(s) on the "
        f"bundled 10k train images (SGD lr 0.02, cosine, distillation from the unpruned model); "
        f"search/analysis scored on {args.val_images} test images; accuracy on the bundled 2k "
        "test images.",
        "",
        "| method | MACs removed | accuracy before fine-tune (%) | after fine-tune (%) |"
        " search/analysis time (s) |",
        "|---|---|---|---|---|",
        f"| unpruned | 0 | {rows[0][1]:.2f} | - | - |",
    ]
    for name, _, model, removal, secs in rows[1:]:
        before = top1_accuracy(model, torch_loader("test"))
        after = tune(model, args.epochs, teacher=base)
        out.append(f"| {name} | {removal:.3f} | {before:.2f} | {after:.2f} | {secs:.0f} |")
        print(out[-1], flush=True)
    return out


def kendall(args) -> list[str]:
    base = load_torch_sample("resnet20")
    val = torch_loader("test", limit=args.val_images, batch_size=250)
    calib = torch_loader("train", limit=1000, batch_size=100)
    runner = get_pruning_runner(base, X, "one_step", workdir=tempfile.mkdtemp())
    res = runner.search(calibration_fn=adaptive_bn_calibration, calib_args=(calib, 10),
                        eval_fn=top1_accuracy, eval_args=(val,), num_subnet=args.kendall_n,
                        removal_ratio=args.kendall_ratio)
    bn_scores, plain_scores, tuned = [], [], []
    for c in res["candidates"]:
        model = runner.prune(removal_ratio=args.kendall_ratio, index=c["id"])
        bn_scores.append(c["score"])
        plain_scores.append(top1_accuracy(copy.deepcopy(model), val))
        torch.manual_seed(0)  # the same batches for every candidate: less fine-tune noise
        tuned.append(tune(model, 1.0))
        print(c["id"], bn_scores[-1], plain_scores[-1], tuned[-1], flush=True)
    a, p, t = map(np.asarray, (bn_scores, plain_scores, tuned))
    out = [
        f"{len(t)} one-step candidates of the sample ResNet-20 at {args.kendall_ratio:.0%} MACs "
        "removal; fine-tuned 1 epoch on the bundled 10k train images; accuracy on the bundled "
        "2k test images.",
        "",
        "| score | Kendall tau vs fine-tuned accuracy | bootstrap 95% interval |",
        "|---|---|---|",
    ]
    for name, s in (("adaptive-BN score", a), ("score without BN calibration", p)):
        lo, hi = bootstrap_ci(s, t)
        out.append(f"| {name} | {kendall_tau(s, t):.2f} | [{lo:.2f}, {hi:.2f}] |")
    return out


def throughput(args) -> list[str]:
    base = load_torch_sample("resnet20")
    val = torch_loader("test", limit=args.val_images, batch_size=250)
    out = ["| executor | candidates | seconds | candidates per minute |", "|---|---|---|---|"]
    for i, executor in enumerate(["inline", "process", "ray"]):
        runner = get_pruning_runner(base, X, "one_step", workdir=tempfile.mkdtemp())
        t = time.time()
        runner.search(eval_fn=top1_accuracy, eval_args=(val,), num_subnet=args.throughput_n,
                      removal_ratio=0.5, executor=executor, seed=i)
        secs = time.time() - t
        out.append(f"| {executor} (2 workers) | {args.throughput_n} | {secs:.1f} | "
                   f"{60 * args.throughput_n / secs:.1f} |")
        print(out[-1], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parts", nargs="*", default=["compare", "kendall", "throughput"])
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--kendall-n", type=int, default=24)
    ap.add_argument("--kendall-ratio", type=float, default=0.5, help="MACs removed")
    ap.add_argument("--throughput-n", type=int, default=12)
    ap.add_argument("--val-images", type=int, default=500)
    ap.add_argument("--epochs", type=float, default=1.0)
    args = ap.parse_args()
    torch.manual_seed(0)
    report = [f"Command: `.venv/bin/python bench/runners.py {' '.join(sys.argv[1:])}`", ""]
    for part in args.parts:
        report += [f"### {part}", ""] + {"compare": compare, "kendall": kendall,
                                         "throughput": throughput}[part](args) + [""]
    print("\n".join(report))


if __name__ == "__main__":
    main()

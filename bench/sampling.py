"""One-step candidate sampling speed: valid candidates per second on torchvision ResNet-50.

A candidate is valid when its MACs removal lands within 1 point of the target; its MACs come
from per-group kept counts (``CostModel.macs_of_counts``), without building a model. The
one-time capture and importance computation are timed separately.

    nice .venv/bin/python bench/sampling.py              # ResNet-50, 1,000 candidates, 50%
    nice .venv/bin/python bench/sampling.py --model resnet18 --n 200 --ratio 0.3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uif_explorer.torch.runners import get_pruning_runner  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = torchvision.models.get_model(args.model, weights=None).eval()
    t0 = time.perf_counter()
    runner = get_pruning_runner(model, torch.randn(1, 3, 224, 224), "one_step",
                                workdir="/tmp/uif_sampling_bench")
    pr = runner.pruner
    t1 = time.perf_counter()
    pr.orders(runner.criterion)
    t2 = time.perf_counter()
    removals = []
    for cid in range(args.n):
        _, removal = runner._sample_counts(pr, args.ratio, 0, cid, 2)
        removals.append(removal)
    t3 = time.perf_counter()
    worst = max(abs(r - args.ratio) for r in removals)
    print(f"| model | groups | capture (s) | importance (s) | {args.n} candidates (s) "
          "| per candidate (ms) | worst |removal - target| |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.model} | {len(pr.graph.prunable_groups)} | {t1 - t0:.2f} | {t2 - t1:.2f} "
          f"| {t3 - t2:.2f} | {1000 * (t3 - t2) / args.n:.2f} | {worst:.4f} |")


if __name__ == "__main__":
    main()

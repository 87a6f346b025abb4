"""Real-size analysis speed: full re-evaluation versus reuse of unchanged activations.

torchvision ResNet-50 and MobileNetV2 (random weights) at 224 px, evaluation images as random
tensors labelled with the unpruned model's own predictions (so the baseline scores 100 % and
pruned groups lose points: a meaningful comparison). For each model, in one run:

* the quick analysis (the app's "quick" ratios 0.3/0.6) with ``reuse_activations=False``,
  ``True`` (attempt 1: exact prefix reuse) and ``"fused"`` (attempt 2: the changed layers also
  Conv+BN-folded, channels-last): wall time, speed-up, scores compared with full evaluation,
  and the time estimate (``eta_s`` in the progress info) checked after the first 10 % of the
  steps against the actual end;
* the ceiling of exact prefix reuse: steps x the whole model's multiply-adds over the
  multiply-adds the steps' changed layers run (no method that runs a step's changed layers
  as eager code does can beat it);
* a one-step search (``--candidates``, 20 by default) at 30 % MACs removal: its candidates
  are slim models that change the first layers, so nothing can be reused; it is timed once.

On a loaded machine the full run takes hours; ``--images`` and ``--groups`` (evenly spaced
groups, the others excluded) shrink it, and the table says what ran.

    .venv/bin/python bench/real_size.py --images 256               # the issue's full setting
    .venv/bin/python bench/real_size.py --images 8 --groups 10 --candidates 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset

from uif_explorer.core.scores import ScoreJob
from uif_explorer.services.analysis import SENS_PRESETS
from uif_explorer.torch.evaluation import top1_accuracy
from uif_explorer.torch.fastscore import reuse_scorer, suggest_batch_size
from uif_explorer.torch.fastscore.graph import node_costs, node_sizes
from uif_explorer.torch.pruner import ChannelPruner
from uif_explorer.torch.runners import get_pruning_runner

QUICK_RATIOS = SENS_PRESETS[0].ratios  # what the app's quick analysis uses


def _data(model: torch.nn.Module, images: int, size: int, batch: int) -> DataLoader:
    torch.manual_seed(0)
    x = torch.randn(images, 3, size, size)
    with torch.no_grad():
        labels = torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, images, batch)])
    return DataLoader(TensorDataset(x, labels), batch_size=batch)


def _excludes(model: torch.nn.Module, example: torch.Tensor, groups: int | None) -> list:
    """Modules of all but ``groups`` evenly spaced prunable groups."""
    if groups is None:
        return []
    prunable = [g for g in ChannelPruner(model, example, []).graph.groups if g.prunable]
    if groups >= len(prunable):
        return []
    step = len(prunable) / groups
    keep = {round(i * step) for i in range(groups)}
    keep_modules = {m for i in keep for m in prunable[i].modules}
    return sorted({m for i, g in enumerate(prunable) if i not in keep for m in g.modules}
                  - keep_modules)


def _ceiling(model, example, loader, excludes) -> float:
    """Speed-up of exact prefix reuse if time followed multiply-adds (recording left out)."""
    runner = get_pruning_runner(model, example, excludes=excludes, workdir=tempfile.mkdtemp())
    pr = runner._pruner_for(None)  # the groups ana analyses
    scorer = reuse_scorer(model, pr.capture, ScoreJob.of(top1_accuracy, (loader,)))
    work = node_costs(scorer.program, node_sizes(scorer.program, example))
    steps = [scorer.step(0, pr.plan({g.id: r}, "l1", channel_divisible=1))
             for g in pr.graph.groups if g.prunable for r in QUICK_RATIOS]
    return len(steps) * sum(work.values()) / sum(work[n] for s in steps for n in s.order)


def _analysis(model, example, loader, excludes, reuse: bool | str, workdir: Path) -> dict:
    runner = get_pruning_runner(model, example, workdir=workdir, excludes=excludes)
    events: list[tuple[float, int, int, float]] = []
    start = time.monotonic()

    def progress(done: int, total: int, info: dict) -> None:
        events.append((time.monotonic() - start, done, total, info.get("eta_s", float("nan"))))

    sens = runner.ana(top1_accuracy, args=(loader,), ratios=QUICK_RATIOS,
                      reuse_activations=reuse, progress=progress)
    took = time.monotonic() - start
    first = next(e for e in events if e[1] >= 0.1 * e[2])  # first estimate after 10 %
    eta_error = abs(first[0] + first[3] - took) / took
    scores = [sens["baseline"]] + [s for g in sens["groups"] for _, s in g["curve"]]
    return {"time": took, "steps": len(events), "scores": scores, "eta_error": eta_error,
            "eta_at": first[1] / first[2]}


def _search(model, example, loader, excludes, candidates: int, ratio: float,
            workdir: Path) -> float:
    runner = get_pruning_runner(model, example, method="one_step", workdir=workdir,
                                excludes=excludes)
    start = time.monotonic()
    runner.search(eval_fn=top1_accuracy, eval_args=(loader,), num_subnet=candidates,
                  removal_ratio=ratio)
    return time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,mobilenet_v2")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--groups", type=int, default=None, help="evenly spaced groups to analyse")
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--search-ratio", type=float, default=0.3)
    ap.add_argument("--batch", type=int, default=None, help="default: sized for the machine")
    ap.add_argument("--ceiling-only", action="store_true",
                    help="print only the exact-reuse ceiling (seconds, not hours)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for name in args.models.split(","):
        model = getattr(torchvision.models, name)(weights=None).eval()
        example = torch.zeros(1, 3, args.size, args.size)
        batch = args.batch or min(args.images, suggest_batch_size(model, example, largest=64))
        loader = _data(model, args.images, args.size, batch)
        excludes = _excludes(model, example, args.groups)
        ceiling = _ceiling(model, example, loader, excludes)
        if args.ceiling_only:
            print(f"{name}: exact-reuse ceiling {ceiling:.2f}x (groups: {args.groups or 'all'}, "
                  f"ratios {QUICK_RATIOS})", flush=True)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            full = _analysis(model, example, loader, excludes, False, Path(tmp) / "full")
            fast = _analysis(model, example, loader, excludes, True, Path(tmp) / "reuse")
            assert fast["scores"] == full["scores"], "reuse changed a score"
            fused = _analysis(model, example, loader, excludes, "fused", Path(tmp) / "fused")
            search = _search(model, example, loader, excludes, args.candidates, args.search_ratio,
                             Path(tmp) / "search")
        rows.append((name, batch, ceiling, full, fast, fused, search))
        print(f"{name}: done: {_row(*rows[-1])}", flush=True)
    if args.ceiling_only:
        return
    print(f"\n{args.images} images at {args.size} px, quick ratios {QUICK_RATIOS}, "
          f"groups: {args.groups or 'all'}, {args.candidates}-candidate search at "
          f"{args.search_ratio:.0%}\n")
    print("| model | batch | steps | exact-reuse ceiling | full (s) | attempt 1: reuse (s) | "
          "attempt 2: fused (s) | speed-up 1 / 2 | fused scores | "
          "ETA error after 10 % (full / 1 / 2) | search (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(_row(*row))


def _row(name: str, batch: int, ceiling: float, full: dict, fast: dict, fused: dict,
         search: float) -> str:
    diffs = [abs(a - b) for a, b in zip(fused["scores"], full["scores"], strict=True)]
    same = "identical" if not any(diffs) else (
        f"{sum(d > 0 for d in diffs)} of {len(diffs)} differ (max {max(diffs):.2g})")
    return (f"| {name} | {batch} | {full['steps']} | {ceiling:.2f}x | {full['time']:.1f} | "
            f"{fast['time']:.1f} | {fused['time']:.1f} | {full['time'] / fast['time']:.2f}x / "
            f"{full['time'] / fused['time']:.2f}x | {same} | {full['eta_error']:.0%} / "
            f"{fast['eta_error']:.0%} / {fused['eta_error']:.0%} | {search:.1f} |")


if __name__ == "__main__":
    main()

"""Latency of original vs slim models at half the MACs, PyTorch eager and ONNX Runtime.

Both models get identical treatment (same runtime, same threads, eval mode, no BN folding on
either side); runs are interleaved (original, slim, original, ...) so machine noise hits both
alike, and the median of ``--repeats`` timed runs is reported after warm-up.

    .venv/bin/python bench/latency.py                       # resnet18, resnet50, mobilenet_v2
    .venv/bin/python bench/latency.py --models resnet18 --repeats 20 --divisible 8

``--compare`` instead measures, interleaved per model (batch 1, eager): the original; ours at
50 % MACs with defaults; ours latency-targeted at 50 % of the predicted latency (this
machine's table, :mod:`uif_explorer.torch.latency`); with ``--calibrate N`` that plan
corrected in up to N rounds on whole-model timings of its slim model
(:func:`~uif_explorer.torch.latency.plan_to_measured`); and, when ``torch-pruning`` is installed
(``requirements-bench.txt``), Torch-Pruning uniform L1 at 50 % MACs, default and round_to=8.

    .venv/bin/python bench/latency.py --compare --models resnet18 mobilenet_v2 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uif_explorer.core.plan import PlanError  # noqa: E402
from uif_explorer.torch.pruner import ChannelPruner  # noqa: E402


def time_interleaved(fns: list, repeats: int, warmup: int = 3, stat=statistics.median
                     ) -> list[float]:
    """Median (or ``stat``) seconds per call of each fn, calls interleaved round-robin."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            samples[i].append(time.perf_counter() - t)
    time_interleaved.samples = samples  # the raw runs, for a second statistic
    return [stat(s) for s in samples]


def onnx_session(model: torch.nn.Module, x: torch.Tensor, threads: int):
    import onnxruntime as ort

    path = Path(tempfile.mkdtemp()) / "model.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    feed = {name: x.numpy()}
    return lambda: sess.run(None, feed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["resnet18", "resnet50", "mobilenet_v2"])
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--divisible", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--compare", action="store_true", help="ours (MACs, latency) vs TP")
    ap.add_argument("--points", type=int, default=6, help="channel counts timed per layer")
    ap.add_argument("--calibrate", type=int, default=0, metavar="ROUNDS",
                    help="--compare: also a latency plan corrected on measured slim models")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.compare:
        return compare(args)
    rows = []
    for name in args.models:
        model = torchvision.models.get_model(name, weights=None).eval()
        x1 = torch.randn(1, 3, 224, 224)
        pr = ChannelPruner(model, x1)
        plan = pr.plan_for_removal(args.ratio, channel_divisible=args.divisible)
        slim = pr.slim_model(plan).eval()
        macs_gain = pr.original_macs / pr.macs(plan)
        for batch in args.batches:
            x = torch.randn(batch, 3, 224, 224)
            with torch.inference_mode():
                t_orig, t_slim = time_interleaved(
                    [lambda m=model: m(x), lambda m=slim: m(x)], args.repeats
                )
            rows.append((name, "eager", batch, macs_gain, t_orig, t_slim))
            print(_fmt(rows[-1]), flush=True)
            if not args.no_onnx:
                so, ss = onnx_session(model, x, args.threads), onnx_session(slim, x, args.threads)
                t_orig, t_slim = time_interleaved([so, ss], args.repeats)
                rows.append((name, "onnxruntime", batch, macs_gain, t_orig, t_slim))
                print(_fmt(rows[-1]), flush=True)
    print()
    print(table(rows, args))


def _fmt(row) -> str:
    name, runtime, batch, gain, t_o, t_s = row
    return (f"{name} {runtime} batch {batch}: MACs gain {gain:.2f}x, original {t_o * 1e3:.1f} ms,"
            f" slim {t_s * 1e3:.1f} ms, latency gain {t_o / t_s:.2f}x")


def table(rows, args) -> str:
    lines = [
        f"Command: `.venv/bin/python bench/latency.py {' '.join(sys.argv[1:])}` "
        f"(torch {torch.__version__}, {args.threads} threads, median of {args.repeats}, "
        f"channel_divisible={args.divisible})",
        "",
        "| model | runtime | batch | MACs gain | original (ms) | slim (ms) | latency gain |"
        " latency gain / MACs gain |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, runtime, batch, gain, t_o, t_s in rows:
        lines.append(
            f"| {name} | {runtime} | {batch} | {gain:.2f}x | {t_o * 1e3:.1f} | {t_s * 1e3:.1f} |"
            f" {t_o / t_s:.2f}x | {(t_o / t_s) / gain:.2f} |"
        )
    return "\n".join(lines)


def tp_slim(model: torch.nn.Module, x: torch.Tensor, keep_macs: float, round_to: int | None):
    """Torch-Pruning's uniform L1 pruner at ``keep_macs`` of the MACs (its per-layer ratio
    refined once from the MACs it reaches), the classifier left whole as its docs do."""
    import copy

    import torch_pruning as tp

    base, _ = tp.utils.count_ops_and_params(model, x)
    ratio, slim, macs = 1 - keep_macs ** 0.5, None, base
    for _ in range(2):
        slim = copy.deepcopy(model)
        last = [m for m in slim.modules() if isinstance(m, torch.nn.Linear)][-1:]
        pruner = tp.pruner.MetaPruner(slim, x, importance=tp.importance.MagnitudeImportance(p=1),
                                      pruning_ratio=ratio, ignored_layers=last,
                                      round_to=round_to)
        pruner.step()
        macs, _ = tp.utils.count_ops_and_params(slim, x)
        ratio = 1 - (1 - ratio) * (keep_macs * base / macs) ** 0.5
    return slim.eval(), base / macs


def compare(args) -> None:
    """Original vs ours (50 % MACs, 50 % latency) vs Torch-Pruning, interleaved, batch 1."""
    from uif_explorer.torch.latency import latency_model, plan_to_measured

    try:
        import torch_pruning  # noqa: F401
        peer = True
    except ImportError:
        peer = False
    rows, notes = [], []
    for name in args.models:
        model = torchvision.models.get_model(name, weights=None).eval()
        x = torch.randn(1, 3, 224, 224)
        pr = ChannelPruner(model, x)
        t0 = time.perf_counter()
        lat = latency_model(pr, model, x, Path(tempfile.mkdtemp()) / f"{name}.latency",
                            threads=args.threads, max_points=args.points)
        notes.append(f"{name}: latency table measured in {time.perf_counter() - t0:.0f} s "
                     f"({args.points} counts per layer side); predicted overhead "
                     f"{lat.overhead * 1e3:.1f} ms fixed + {lat.scaled_overhead * 1e3:.1f} ms "
                     f"following activations, of {lat.original * 1e3:.1f} ms")
        macs_plan = pr.plan_for_removal(args.ratio)
        variants = [("original", model, 1.0, lat.original),
                    ("ours, 50 % MACs (defaults)", pr.slim_model(macs_plan).eval(),
                     pr.original_macs / pr.macs(macs_plan), lat.latency(macs_plan))]
        try:
            lat_plan = pr.plan_for_removal(args.ratio, latency=lat, strict=False)
            variants.append(("ours, 50 % latency (target='latency')",
                             pr.slim_model(lat_plan).eval(),
                             pr.original_macs / pr.macs(lat_plan), lat.latency(lat_plan)))
        except PlanError as exc:
            notes.append(f"{name}: target='latency' at {args.ratio}: {exc}")
        if args.calibrate:
            t0 = time.perf_counter()
            cal_plan, steps = plan_to_measured(pr, lat, model, x, args.ratio,
                                               threads=args.threads, rounds=args.calibrate)
            variants.append(("ours, 50 % latency, corrected on measured slim models",
                             pr.slim_model(cal_plan).eval(),
                             pr.original_macs / pr.macs(cal_plan), lat.latency(cal_plan)))
            took = time.perf_counter() - t0
            notes.append(f"{name}: correction rounds ({took:.0f} s): " + "; ".join(
                f"asked {s.asked:.3f} -> predicted {1 / (1 - s.predicted):.2f}x, measured "
                f"{1 / (1 - s.measured):.2f}x" for s in steps))
        if peer:
            for label, rt in (("Torch-Pruning L1, default", None),
                              ("Torch-Pruning L1, round_to=8", 8)):
                slim, gain = tp_slim(model, x, 1 - args.ratio, rt)
                variants.append((label, slim, gain, None))
        with torch.inference_mode():
            times = time_interleaved([lambda m=m: m(x) for _, m, *_ in variants], args.repeats)
        fastest = [min(s) for s in time_interleaved.samples]
        for (label, _, gain, predicted), t, f in zip(variants, times, fastest, strict=True):
            rows.append((name, label, gain, predicted, t, times[0], fastest[0] / f))
            print(f"{name} {label}: MACs gain {gain:.2f}x, {t * 1e3:.1f} ms, "
                  f"speed-up {times[0] / t:.2f}x (fastest runs {fastest[0] / f:.2f}x)",
                  flush=True)
    print()
    print(compare_table(rows, args, notes))


def compare_table(rows, args, notes) -> str:
    import platform

    from uif_explorer.core.latency import cpu_model

    try:
        import torch_pruning as tp
        peer = f", torch-pruning {tp.__version__}"
    except ImportError:
        peer = ", torch-pruning not installed"
    lines = [
        f"Command: `.venv/bin/python bench/latency.py {' '.join(sys.argv[1:])}` "
        f"({cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()}; torch "
        f"{torch.__version__}{peer}; {args.threads} threads, eager, batch 1, 224 px, random "
        f"weights, median of {args.repeats} interleaved runs)", "",
        "| model | variant | MACs gain | predicted speed-up | measured (ms) | measured speed-up |"
        " speed-up, fastest runs |",
        "|---|---|---|---|---|---|---|",
    ]
    originals = {r[0]: r[3] for r in rows if r[1] == "original"}
    for name, label, gain, predicted, t, t0, fast in rows:
        pred = f"{originals[name] / predicted:.2f}x" if predicted else "-"
        lines.append(f"| {name} | {label} | {gain:.2f}x | {pred} | {t * 1e3:.1f} | "
                     f"{t0 / t:.2f}x | {fast:.2f}x |")
    return "\n".join(lines + [""] + notes)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()

"""Latency of original vs slim models at half the MACs, PyTorch eager and ONNX Runtime.

Both models get identical treatment (same runtime, same threads, eval mode, no BN folding on
either side); runs are interleaved (original, slim, original, ...) so machine noise hits both
alike, and the median of ``--repeats`` timed runs is reported after warm-up.

    .venv/bin/python bench/latency.py                       # resnet18, resnet50, mobilenet_v2
    .venv/bin/python bench/latency.py --models resnet18 --repeats 20 --divisible 8

``--compare`` instead measures, per model, runtime (``--runtimes eager ort``) and batch
(``--batches 1 8``), interleaved: the original; ours at 50 % MACs at the API default
(``channel_divisible=2``) and at the app/CLI default (this CPU's SIMD width,
:func:`~uif_explorer.services.latency_target.default_divisible`); ours latency-targeted at
50 % of the predicted latency (a table measured for that runtime and batch,
:mod:`uif_explorer.torch.latency`), and with ``--calibrate N`` that plan corrected in up to N
rounds on whole-model timings of its slim model; and, when ``torch-pruning`` is installed
(``requirements-bench.txt``), Torch-Pruning uniform L1 at 50 % MACs, default and round_to=8.
ONNX Runtime runs the file written by the project's checked export (CPU EP, same threads).

    .venv/bin/python bench/latency.py --compare --models resnet18 --batches 1 8 \\
        --runtimes eager ort --threads 1 --calibrate 3
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
from uif_explorer.services.latency_target import default_divisible  # noqa: E402
from uif_explorer.torch.export import export_torch  # noqa: E402
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


def runner(model: torch.nn.Module, x: torch.Tensor, runtime: str, threads: int):
    """One call of ``model`` on ``x`` in ``runtime``: eager, or ONNX Runtime (CPU EP, same
    threads) on the file the project's checked export writes (:func:`export_torch`)."""
    if runtime == "eager":
        def call():
            with torch.inference_mode():
                return model(x)
        return call
    import onnxruntime as ort

    path = export_torch(model, x, "onnx", Path(tempfile.mkdtemp()) / "model.onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x.numpy()}
    return lambda: sess.run(None, feed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["resnet18", "resnet50", "mobilenet_v2"])
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--divisible", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runtimes", "--runtime", nargs="*", default=["eager", "onnxruntime"],
                    type=lambda r: {"ort": "onnxruntime"}.get(r, r),
                    choices=["eager", "onnxruntime"], help="eager and/or ort (ONNX Runtime)")
    ap.add_argument("--compare", action="store_true", help="ours (MACs, latency) vs TP")
    ap.add_argument("--points", type=int, default=6, help="channel counts timed per layer")
    ap.add_argument("--no-latency", action="store_true",
                    help="--compare: skip the latency tables and latency-targeted plans")
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
            for runtime in args.runtimes:
                t_orig, t_slim = time_interleaved(
                    [runner(m, x, runtime, args.threads) for m in (model, slim)], args.repeats)
                rows.append((name, runtime, batch, macs_gain, t_orig, t_slim))
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
    """Per model, runtime and batch, interleaved: the original, ours at defaults and at its
    best settings, Torch-Pruning default and round_to=8 (the plans are built once; the
    latency-targeted ones from this runtime's and batch's table)."""
    try:
        import torch_pruning  # noqa: F401
        peer = True
    except ImportError:
        peer = False
    simd, rows, notes = default_divisible(), [], []
    for name in args.models:
        model = torchvision.models.get_model(name, weights=None).eval()
        x1 = torch.randn(1, 3, 224, 224)
        pr = ChannelPruner(model, x1)
        fixed = [("original", model, None)]
        for label, div in (("ours, 50 % MACs, API default (channel_divisible=2)", 2),
                           (f"ours, 50 % MACs, app/CLI default (channel_divisible={simd})", simd)):
            plan = pr.plan_for_removal(args.ratio, channel_divisible=div)
            fixed.append((label, pr.slim_model(plan).eval(), plan))
        if peer:
            for label, rt in (("Torch-Pruning L1, default", None),
                              ("Torch-Pruning L1, round_to=8", 8)):
                fixed.append((label, *tp_slim(model, x1, 1 - args.ratio, rt)))
        for runtime in args.runtimes:
            for batch in args.batches:
                x = torch.randn(batch, 3, 224, 224)
                lat, targeted = latency_variants(pr, model, x, runtime, simd, args, notes,
                                                 name)
                variants = fixed[:3] + targeted + fixed[3:]
                calls = [runner(m, x, runtime, args.threads) for _, m, _ in variants]
                times = time_interleaved(calls, args.repeats)
                fastest = [min(s) for s in time_interleaved.samples]
                for (label, _, plan), t, f in zip(variants, times, fastest, strict=True):
                    row = (name, runtime, batch, label, macs_gain(pr, plan),
                           predicted_gain(lat, plan), t, times[0] / t, fastest[0] / f)
                    rows.append(row)
                    print(" ".join(map(str, row)), flush=True)
        print(f"\nAfter {name} (a run cut short still leaves the finished models):")
        print(compare_table(rows, args, notes), flush=True)


def predicted_gain(lat, plan) -> float | None:
    """The latency model's speed-up for our plans (none for the peer's models)."""
    if lat is None or plan is None or isinstance(plan, float):
        return None
    return lat.original / lat.latency(plan)


def macs_gain(pr: ChannelPruner, plan) -> float:
    """Original MACs / the variant's: a plan's from the pruner; Torch-Pruning's as it counts."""
    if plan is None:
        return 1.0
    return plan if isinstance(plan, float) else pr.original_macs / pr.macs(plan)


def latency_variants(pr, model, x, runtime: str, div: int, args, notes: list[str],
                     name: str):
    """This runtime's and batch's latency model and the latency-targeted variants built on it
    (target='latency', and with ``--calibrate`` corrected on measured slim models)."""
    from uif_explorer.torch.latency import latency_model, plan_to_measured

    if args.no_latency:
        return None, []
    key = f"{name} {runtime} batch {len(x)}"
    t0 = time.perf_counter()
    lat = latency_model(pr, model, x, Path(tempfile.mkdtemp()) / "table.latency", runtime,
                        threads=args.threads, max_points=args.points)
    notes.append(f"{key}: table in {time.perf_counter() - t0:.0f} s ({args.points} counts per"
                 f" layer side), overhead {lat.overhead * 1e3:.1f} ms fixed + "
                 f"{lat.scaled_overhead * 1e3:.1f} ms with activations, of "
                 f"{lat.original * 1e3:.1f} ms")
    out = []
    try:
        plan = pr.plan_for_removal(args.ratio, channel_divisible=div, latency=lat, strict=False)
        out.append((f"ours, 50 % latency (target='latency', channel_divisible={div})",
                    pr.slim_model(plan).eval(), plan))
    except PlanError as exc:
        notes.append(f"{key}: target='latency' at {args.ratio}: {exc}")
    if args.calibrate:
        t0 = time.perf_counter()
        plan, steps = plan_to_measured(pr, lat, model, x, args.ratio, runtime=runtime,
                                       threads=args.threads, rounds=args.calibrate,
                                       channel_divisible=div)
        out.append((f"ours, 50 % latency, --calibrate {args.calibrate}",
                    pr.slim_model(plan).eval(), plan))
        notes.append(f"{key}: correction rounds ({time.perf_counter() - t0:.0f} s): " + "; ".join(
            f"asked {s.asked:.3f} -> predicted {1 / (1 - s.predicted):.2f}x, measured "
            f"{1 / (1 - s.measured):.2f}x" for s in steps))
    return lat, out


def compare_table(rows, args, notes) -> str:
    import platform

    import onnxruntime

    from uif_explorer.core.latency import cpu_model

    try:
        import torch_pruning as tp
        peer = f", torch-pruning {tp.__version__}"
    except ImportError:
        peer = ", torch-pruning not installed"
    lines = [
        f"Command: `.venv/bin/python bench/latency.py {' '.join(sys.argv[1:])}` "
        f"({cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()}, load average "
        f"at the end {os.getloadavg()[0]:.1f}; torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__} (CPU EP){peer}; {args.threads} intra-op threads, 224 px, "
        f"random weights, median of {args.repeats} interleaved runs)", "",
        "| model | runtime | batch | variant | MACs gain | predicted speed-up | measured (ms) |"
        " measured speed-up | speed-up, fastest runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runtime, batch, label, gain, predicted, t, speed, fast in rows:
        pred = f"{predicted:.2f}x" if predicted else "-"
        lines.append(f"| {name} | {runtime} | {batch} | {label} | {gain:.2f}x | {pred} | "
                     f"{t * 1e3:.1f} | {speed:.2f}x | {fast:.2f}x |")
    return "\n".join(lines + [""] + notes)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()

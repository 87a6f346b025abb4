"""Latency of original vs slim models at half the MACs, PyTorch eager and ONNX Runtime.

Both models get identical treatment (same runtime, same threads, eval mode, no BN folding on
either side); runs are interleaved (original, slim, original, ...) so machine noise hits both
alike, and the median of ``--repeats`` timed runs is reported after warm-up.

    .venv/bin/python bench/latency.py                       # resnet18, resnet50, mobilenet_v2
    .venv/bin/python bench/latency.py --models resnet18 --repeats 20 --divisible 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from uif_explorer.torch.pruner import ChannelPruner  # noqa: E402


def time_interleaved(fns: list, repeats: int, warmup: int = 3) -> list[float]:
    """Median seconds per call of each fn, calls interleaved round-robin."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            samples[i].append(time.perf_counter() - t)
    return [statistics.median(s) for s in samples]


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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
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


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()

"""Prune + int8 under ONNX Runtime: fp32 original / slim fp32 / int8 original / slim int8.

For each model, four ONNX files side by side in one run: the original and its slim version
(50 % of the MACs removed through the public one-step API with ``channel_divisible=8``), each
in fp32 (``export_torch``) and int8 (``quantize_onnx_file``: QDQ, per-channel, calibrated on
200 bundled training images). Latency is the median of interleaved runs (original fp32, slim
fp32, original int8, slim int8, original fp32, ...) at batch 1, so machine noise hits all four
alike. The sample models' slim versions get the short distillation fine-tune a user would do
(``fine_tune(..., teacher=original)``) before export; their score is top-1 accuracy on the
bundled 2,000 test images, run through the ONNX files themselves. torchvision ResNet-50 (random
weights, 224 px) is timed for speed only: it has no matching data, so no score.

    .venv/bin/python bench/quantize.py              # resnet20, mobilenetv2_small, resnet50
    .venv/bin/python bench/quantize.py --models resnet20 --threads 2 --repeats 50
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from latency import time_interleaved  # noqa: E402

from uif_explorer import (  # noqa: E402
    adaptive_bn_calibration,
    fine_tune,
    get_pruning_runner,
    make_label_free_eval,
    top1_accuracy,
)
from uif_explorer.data import torch_loader  # noqa: E402
from uif_explorer.torch import count_macs  # noqa: E402
from uif_explorer.torch.export import export_torch  # noqa: E402
from uif_explorer.torch.quantize import onnx_session, quantize_onnx_file  # noqa: E402
from uif_explorer.zoo import SAMPLE_MODELS, build_torchvision, load_torch_sample  # noqa: E402

VARIANTS = ("fp32 original", "fp32 slim", "int8 original", "int8 slim")


@dataclass
class Row:
    model: str
    variant: str
    macs: float  # millions
    size: int  # bytes
    latency: float = float("nan")  # seconds
    score: float | None = None  # top-1 % on the bundled test images


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo states it (the platform's name elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def slim_model(name: str, model: torch.nn.Module, x: torch.Tensor, args, workdir: Path):
    """50 % of the MACs removed through the public one-step API (channel_divisible=8)."""
    runner = get_pruning_runner(model, x, "one_step", workdir=workdir)
    if name in SAMPLE_MODELS:
        search = torch_loader("train", limit=500, batch_size=250, shuffle=False)
        runner.search(calibration_fn=adaptive_bn_calibration, calib_args=(search,),
                      eval_fn=top1_accuracy, eval_args=(search,), num_subnet=args.num_subnet,
                      removal_ratio=args.ratio, channel_divisible=8)
        slim = runner.prune(removal_ratio=args.ratio)
        t = time.perf_counter()
        fine_tune(slim, torch_loader("train"), epochs=args.epochs, lr=0.02, teacher=model,
                  max_batches=args.finetune_batches)
        print(f"  {name}: slim fine-tuned ({args.epochs} epoch) in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        return slim.eval()
    probe = [(torch.randn(2, *x.shape[1:], generator=torch.Generator().manual_seed(1)),)]
    runner.search(eval_fn=make_label_free_eval(model), eval_args=(probe,), num_subnet=1,
                  removal_ratio=args.ratio, channel_divisible=8)
    return runner.prune(removal_ratio=args.ratio).eval()


def data_for(name: str, x: torch.Tensor):
    """(calibration images, check images, check labels): bundled data, or random for 224 px."""
    if name in SAMPLE_MODELS:
        calib = torch_loader("train", limit=200, batch_size=200, shuffle=False)
        test = torch_loader("test", batch_size=500)
        return calib, test, None
    gen = torch.Generator().manual_seed(2)
    return (torch.randn(16, *x.shape[1:], generator=gen),
            torch.randn(8, *x.shape[1:], generator=gen), None)


def bench_model(name: str, args, folder: Path) -> list[Row]:
    t0 = time.perf_counter()
    if name in SAMPLE_MODELS:
        model, x = load_torch_sample(name), torch.zeros(1, 1, 28, 28)
    else:
        torch.manual_seed(0)
        model, x = build_torchvision(name).eval(), torch.zeros(1, 3, 224, 224)
    slim = slim_model(name, model, x, args, folder / f"{name}.vai")
    calib, check, labels = data_for(name, x)
    rows, files = [], []
    for tag, net in (("original", model), ("slim", slim)):
        fp32 = folder / f"{name}_{tag}.onnx"
        export_torch(net, x, "onnx", fp32)
        int8 = folder / f"{name}_{tag}.int8.onnx"
        report = quantize_onnx_file(fp32, calib, int8, check_data=check, check_labels=labels,
                                    check_limit=2000, strict=False)
        print(f"  {name} {tag}: {report.summary()}", flush=True)
        macs = count_macs(net, x) / 1e6
        a = report.agreement
        rows += [Row(name, f"fp32 {tag}", macs, report.fp32_bytes, score=a.fp32_accuracy),
                 Row(name, f"int8 {tag}", macs, report.int8_bytes, score=a.int8_accuracy)]
        files += [fp32, int8]
    sessions = [onnx_session(f, args.threads) for f in files]
    feed = np.random.default_rng(0).standard_normal(tuple(x.shape)).astype(np.float32)
    fns = [lambda s=s: s.run(None, {s.get_inputs()[0].name: feed}) for s in sessions]
    repeats = args.repeats if name in SAMPLE_MODELS else max(args.repeats // 2, 5)
    for row, seconds in zip(rows, time_interleaved(fns, repeats), strict=True):
        row.latency = seconds
    order = {v: i for i, v in enumerate(VARIANTS)}
    print(f"  {name}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    return sorted(rows, key=lambda r: order[r.variant])


def table(rows: list[Row], args, started: str, seconds: float) -> str:
    import onnxruntime

    lines = [
        f"Command: `.venv/bin/python bench/quantize.py {' '.join(sys.argv[1:])}`".rstrip(),
        f"Machine: {cpu_model()}, {len(os.sched_getaffinity(0))} cores visible, "
        f"ONNX Runtime intra-op threads {args.threads}, batch 1; started {started} UTC, "
        f"{seconds / 60:.1f} min. Versions: onnxruntime {onnxruntime.__version__}, torch "
        f"{torch.__version__}, Python {platform.python_version()}. Latency: median of "
        f"{args.repeats} interleaved runs ({max(args.repeats // 2, 5)} for 224 px models).",
        "",
        "| model | variant | MACs (M) | file (MB) | latency (ms) | speed-up | top-1 (%) |"
        " change (points) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = {r.model: r for r in rows if r.variant == "fp32 original"}
    for r in rows:
        b = base[r.model]
        score = "-" if r.score is None else f"{r.score:.2f}"
        change = "-" if r.score is None else f"{r.score - b.score:+.2f}"
        lines.append(f"| {r.model} | {r.variant} | {r.macs:.1f} | {r.size / 1e6:.2f} | "
                     f"{r.latency * 1e3:.2f} | {b.latency / r.latency:.2f}x | {score} | "
                     f"{change} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["resnet20", "mobilenetv2_small", "resnet50"])
    ap.add_argument("--ratio", type=float, default=0.5, help="fraction of MACs removed")
    ap.add_argument("--num-subnet", type=int, default=5, help="one-step candidates")
    ap.add_argument("--epochs", type=int, default=1, help="fine-tune epochs of the slim model")
    ap.add_argument("--finetune-batches", type=int, default=None,
                    help="stop each fine-tune epoch after this many batches (smoke runs)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started, t0 = time.strftime("%Y-%m-%d %H:%M", time.gmtime()), time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        for name in args.models:
            rows += bench_model(name, args, Path(tmp))
    print()
    print(table(rows, args, started, time.perf_counter() - t0))


if __name__ == "__main__":
    main()

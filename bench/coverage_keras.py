"""Coverage of the Keras backend on keras.applications: prune 30% of the MACs, slim == sparse.

Each model (``weights=None``, ``classifier_activation=None`` so the outputs compared are
logits) is read, pruned with uniform L1 ratios bisected to remove 30% of the MACs, built as a
sparse and a slim model, and checked: relative output error ||slim - sparse|| / ||sparse||,
MACs of the plan == MACs counted on the built slim model, MACs removed within 1 point. Each
model runs in its own process with a time limit (default 300 s); one over it is skipped and
reported as such.

    nice -n 19 .venv/bin/python bench/coverage_keras.py            # all, writes docs/
    .venv/bin/python bench/coverage_keras.py --models MobileNetV2 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "coverage_keras.md"
RATIO = 0.3
# name -> input size (small where the architecture allows it)
MODELS = {
    "ResNet50": 96, "MobileNetV2": 96, "VGG16": 96, "DenseNet121": 96, "EfficientNetB0": 96,
    "Xception": 96, "InceptionV3": 96, "NASNetMobile": 96, "ConvNeXtTiny": 96,
    "MobileNetV3Small": 96,
}


def run_one(name: str, size: int) -> dict:
    """Runs in a child process: everything about one model, as a JSON-able dict."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    from uif_explorer.keras import KerasPruner, count_macs, count_params

    t0 = time.perf_counter()
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3),
                                              classifier_activation=None)
    t_build = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    for layer in model.layers:  # ConvNeXt's LayerScale starts at 1e-6: make blocks count
        if type(layer).__name__ == "LayerScale":
            for v in layer.weights:
                v.assign(rng.uniform(0.5, 1.0, size=tuple(v.shape)).astype("float32"))
    spec = (1, size, size, 3)
    t1 = time.perf_counter()
    pr = KerasPruner(model, spec)
    t_capture = time.perf_counter() - t1
    groups = pr.graph.groups
    plan = pr.plan_for_removal(RATIO)
    t2 = time.perf_counter()
    sparse = pr.sparse_model(plan)
    slim = pr.slim_model(plan)
    t_build_models = time.perf_counter() - t2
    x = np.random.default_rng(0).uniform(0, 255, size=(2, size, size, 3)).astype("float32")
    a = keras.ops.convert_to_numpy(slim(x, training=False))
    b = keras.ops.convert_to_numpy(sparse(x, training=False))
    rel = float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
    macs0, macs_plan, macs_slim = pr.original_macs, pr.macs(plan), count_macs(slim, spec)
    return {
        "model": name, "input": size, "layers": len(pr.capture.structure.nodes),
        "groups": len(groups), "prunable": len(pr.graph.prunable_groups),
        "macs": macs0 / 1e6, "macs_slim": macs_slim / 1e6,
        "removed": 1 - macs_slim / macs0, "macs_match": macs_plan == macs_slim,
        "params": count_params(model) / 1e6, "params_slim": count_params(slim) / 1e6,
        "params_match": pr.params(plan) == count_params(slim), "rel_err": rel,
        "ok": rel <= 1e-5 and macs_plan == macs_slim and abs(1 - macs_slim / macs0 - RATIO)
        <= 0.01,
        "seconds": time.perf_counter() - t0, "t_build": t_build, "t_capture": t_capture,
        "t_models": t_build_models,
    }


def table(rows: list[dict]) -> str:
    head = ("| model | input | layers | groups (prunable) | MACs M | slim MACs M | removed | "
            "params M | slim params M | rel. error slim vs sparse | plan MACs = counted | "
            "status | time s |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r.get('input', '')} | | | | | | | | | | "
                         f"{r['error']} | {r.get('seconds', 0):.0f} |")
            continue
        lines.append(
            f"| {r['model']} | {r['input']} | {r['layers']} | {r['groups']} ({r['prunable']}) "
            f"| {r['macs']:.1f} | {r['macs_slim']:.1f} | {r['removed']:.1%} | "
            f"{r['params']:.2f} | {r['params_slim']:.2f} | {r['rel_err']:.1e} | "
            f"{'yes' if r['macs_match'] else 'NO'} | {'ok' if r['ok'] else 'FAIL'} | "
            f"{r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        name, size = args.child.split(":")
        print("RESULT " + json.dumps(run_one(name, int(size))), flush=True)
        return
    rows = []
    for name in args.models:
        size = MODELS[name]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", f"{name}:{size}"], capture_output=True,
                text=True, timeout=args.timeout, cwd=REPO,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)},
            )
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")),
                        None)
            if line is None:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                row = {"model": name, "input": size, "error": f"error: {tail[:150]}"}
            else:
                row = json.loads(line[len("RESULT "):])
        except subprocess.TimeoutExpired:
            row = {"model": name, "input": size,
                   "error": f"skipped: over {args.timeout:.0f} s"}
        row.setdefault("seconds", time.perf_counter() - t0)
        rows.append(row)
        print(f"{name}: {row.get('error') or ('ok' if row['ok'] else 'FAIL')} "
              f"({row['seconds']:.0f} s)", file=sys.stderr, flush=True)
    md = table(rows)
    print(md)
    if not args.no_write:
        cmd = "nice -n 19 .venv/bin/python bench/coverage_keras.py"
        DOC.write_text(
            "# Keras coverage: keras.applications pruned to remove 30% of the MACs\n\n"
            f"Measured with `{cmd}` (2 shared CPU cores, Keras "
            f"{_keras_version()}, `weights=None`, `classifier_activation=None`). Each model "
            "gets uniform L1 ratios over its prunable groups, bisected to remove 30% of the "
            "MACs; the slim model (rebuilt with `clone_model`) is compared with the sparse one "
            "on two random images (relative error ||slim - sparse|| / ||sparse||, bound "
            "1e-5), and the MACs the plan predicts are compared with the MACs counted on the "
            "built slim model. Time: seconds in the child process from building the model "
            "to the last check (the TensorFlow import not included).\n\n"
            + md + "\n"
        )


def _keras_version() -> str:
    try:
        from importlib.metadata import version

        return version("keras")
    except Exception:  # metadata missing: not worth failing the bench over
        return "?"


if __name__ == "__main__":
    main()

"""CPU latency of Keras models before and after pruning to half the MACs.

ResNet50 and MobileNetV2 (``weights=None``, 224x224): the slim model removes 50% of the MACs
(uniform L1 ratios over the prunable groups, bisected to the target; kept channels rounded to
multiples of 8 where that still lands within 1 point, else 2). Each model is wrapped in a
``tf.function`` (graph mode, as serving runs it), warmed up, then original and slim are timed
alternately (interleaved, so load changes on this shared machine hit both alike); the table
shows the median of ``--repeats`` runs per batch size.

    nice -n 19 .venv/bin/python bench/keras_latency.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["ResNet50", "MobileNetV2"])
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from uif_explorer.core.plan import PlanError
    from uif_explorer.keras import KerasPruner, count_macs

    spec = (1, args.size, args.size, 3)
    rows = []
    for name in args.models:
        model = getattr(keras.applications, name)(weights=None, input_shape=spec[1:])
        pr = KerasPruner(model, spec)
        for divisible in (8, 2):
            try:
                plan = pr.plan_for_removal(0.5, channel_divisible=divisible)
                break
            except PlanError:
                continue
        slim = pr.slim_model(plan)
        macs0, macs1 = count_macs(model, spec), count_macs(slim, spec)
        fns = {
            "original": tf.function(lambda x, m=model: m(x, training=False)),
            "slim": tf.function(lambda x, m=slim: m(x, training=False)),
        }
        for batch in args.batches:
            x = tf.constant(np.random.default_rng(0).uniform(
                0, 1, (batch, args.size, args.size, 3)).astype("float32"))
            for fn in fns.values():
                for _ in range(3):
                    fn(x).numpy()
            times: dict[str, list[float]] = {k: [] for k in fns}
            for _ in range(args.repeats):
                for key, fn in fns.items():
                    t0 = time.perf_counter()
                    fn(x).numpy()
                    times[key].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            rows.append((name, batch, macs0 / 1e9, macs1 / 1e9, divisible, med["original"],
                         med["slim"], med["original"] / med["slim"]))
    print("| model | batch | MACs G (original) | MACs G (slim) | channel_divisible | "
          "original ms | slim ms | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.3f} | {r[4]} | {r[5]:.1f} | "
              f"{r[6]:.1f} | {r[7]:.2f}x |")
    print(f"\n(median of {args.repeats} interleaved runs per cell; tf.function, CPU, "
          f"{os.cpu_count()} cores visible; MACs at batch 1)")


if __name__ == "__main__":
    main()

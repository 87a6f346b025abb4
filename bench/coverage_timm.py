"""Coverage: one timm model per architecture family (module), random weights, half its MACs.

timm is a bench-only dependency (``requirements-bench.txt``). For each family (a module timm
registers models in) the smallest-named model is picked (``tiny``/``nano``/``small``... first),
built with ``pretrained=False`` at 64-256 px as it needs, and checked like the torchvision
bench: a 50 % MACs plan within 2 points, slim == sparse, MACs = plan (one model per
subprocess, with a time limit). Rows go to ``bench/results/coverage_timm.json``; the printed
table (with the command that made it) is what ``docs/coverage.md`` records under "timm".

    .venv/bin/python bench/coverage_timm.py --limit 10            # the first 10 families
    .venv/bin/python bench/coverage_timm.py --only resnet deit    # some families
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coverage_torchvision import (  # noqa: E402
    child_row,
    over_budget,
    peer_summary,
    prune_and_check,
    table,
)
from coverage_tp import tp_check  # noqa: E402

SMALL = ("pico", "nano", "tiny", "xxs", "xs", "small", "s0", "b0", "18", "lite")
SIZES = (64, 96, 128, 160, 224, 256)  # 256: models fixed at it (botnet26t_256)


def pick(module: str) -> str | None:
    """The family's model that is likely smallest: the first name holding a small-size word."""
    names = timm.list_models(module=module)
    for word in SMALL:
        hits = [n for n in names if word in n]
        if hits:
            return sorted(hits, key=len)[0]
    return names[0] if names else None


def build(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model at the smallest size from ``SIZES`` it runs at (ValueError if none)."""
    for size in SIZES:
        try:
            torch.manual_seed(0)
            model = timm.create_model(name, pretrained=False, num_classes=10).eval()
            x = torch.randn(1, 3, size, size)
            with torch.no_grad():
                model(x)
        except Exception:  # noqa: BLE001 - too small for this model: try the next size
            continue
        return model, x
    raise ValueError(f"does not run at any of {SIZES} px")


def check(name: str, _family: str, ratio: float) -> dict:
    """Build at the smallest size the model accepts, then the shared pruning checks."""
    row: dict = {"model": name, "family": "timm"}
    try:
        model, x = build(name)
    except ValueError as exc:
        row.update(status="fail", error=str(exc), seconds=0)
        return row
    row["input"] = int(x.shape[-1])
    return prune_and_check(model, x, ratio, row)


def check_tp(name: str, _family: str, ratio: float) -> dict:
    """Torch-Pruning on the same model and input (``bench/coverage_tp.py``)."""
    try:
        model, x = build(name)
    except ValueError:
        return {"tp_status": "fail: does not run", "tp_seconds": 0}
    return tp_check(model, x, ratio)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="family (module) names")
    ap.add_argument("--limit", type=int, default=0, help="first N families only")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=300, help="seconds per model")
    ap.add_argument("--json", default="bench/results/coverage_timm.json")
    ap.add_argument("--peer", action="store_true",
                    help="also run Torch-Pruning on each model (bench/coverage_tp.py)")
    ap.add_argument("--budget", type=int, default=0,
                    help="seconds for the whole run: no model starts after it (0: none)")
    ap.add_argument("--one", nargs=2, metavar=("FAMILY", "NAME"), help=argparse.SUPPRESS)
    ap.add_argument("--one-tp", nargs=2, metavar=("FAMILY", "NAME"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.one or args.one_tp:
        fam, name = args.one or args.one_tp
        fn = check if args.one else check_tp
        print("ROW " + json.dumps(fn(name, fam, args.ratio)), flush=True)
        return
    started = time.time()
    families = [m for m in timm.list_modules() if not args.only or m in args.only]
    if args.limit:
        families = families[: args.limit]
    rows = []
    for fam in families:
        name = pick(fam)
        if name is None or over_budget(started, args):
            continue
        row = child_row(__file__, fam, name, args)
        row["family"] = fam
        rows.append(row)
        print(json.dumps(row), flush=True)
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))  # kept as it grows
    ok = sum(r["status"] == "ok" for r in rows)
    skipped = len(families) - len(rows)
    print(f"\n`.venv/bin/python bench/coverage_timm.py {' '.join(sys.argv[1:])}` "
          f"(timm {timm.__version__}): {ok} of {len(rows)} pass"
          f"{f'; {skipped} families not run (budget or no model)' if skipped else ''}. "
          f"{peer_summary(rows)}\n")
    print("\n".join(table(rows)))


if __name__ == "__main__":
    main()

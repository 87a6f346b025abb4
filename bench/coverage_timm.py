"""Coverage: one timm model per architecture family (module), random weights, half its MACs.

timm is a bench-only dependency (``requirements-bench.txt``). For each family (a module timm
registers models in) the smallest model is picked: a few candidates by their size words
(``atto``/``pico``/``tiny``/``s0``...), counted on the meta device (no memory, no weights), the
one with the fewest parameters kept (timm's ``test_*`` toys left out). It is built with
``pretrained=False`` at the smallest of 64-256 px it runs at and checked like the torchvision
bench: a 50 % MACs plan within 2 points, slim == sparse, MACs = plan (one model per
subprocess, with ``--timeout``). Rows go to ``bench/results/coverage_timm.json``; the printed
table (with the command that made it) is what ``docs/coverage.md`` records under "timm".

A full run takes hours on a small machine, so the results file is resumable: with ``--merge``
the families already recorded are kept and skipped (those named in ``--only`` are rerun and
replaced), and each row is merged into the file as soon as it is measured, so an interrupted
or ``--budget``-limited run continues where it stopped when started again; ``--shard K/N``
splits the families between concurrent invocations.

    .venv/bin/python bench/coverage_timm.py --limit 10                  # the first 10 families
    .venv/bin/python bench/coverage_timm.py --only resnet deit          # some families
    .venv/bin/python bench/coverage_timm.py --merge --peer --budget 3600  # continue the file
"""

from __future__ import annotations

import argparse
import json
import re
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
    parse_run,
    peer_summary,
    prune_and_check,
    table,
)
from coverage_tp import tp_check  # noqa: E402

from uif_explorer.io.workspace import atomic_write_json  # noqa: E402

SIZE_WORDS = ("atto", "femto", "pico", "nano", "xxs", "xs", "tiny", "t", "mini", "s", "small",
              "b0", "m0", "lite", "a", "18", "m", "b")  # a name token, smallest first
SMALL = ("pico", "nano", "tiny", "xxs", "xs", "small", "s0", "b0", "18", "lite")  # substrings
SIZES = (64, 96, 128, 160, 224, 256)  # 256: models fixed at it (botnet26t_256)


def _token_rank(name: str) -> tuple:
    """Sort key: the smallest size word among the name's ``_`` tokens (``s8`` = s, 8), then
    the first number in the name (``regnetx_002``), then the shorter name."""
    best = (len(SIZE_WORDS), 0)
    for tok in name.split("_")[1:]:
        for i, word in enumerate(SIZE_WORDS):
            hit = re.fullmatch(re.escape(word) + r"(\d*)", tok)
            if hit and i < best[0]:
                best = (i, int(hit.group(1) or 0))
    num = re.findall(r"\d+", name)
    return (*best, int(num[0]) if num else 0, len(name), name)


def _word_rank(name: str) -> tuple:
    """Sort key: the first small-size substring the name holds (``levit_128s`` has none)."""
    return next((i for i, w in enumerate(SMALL) if w in name), len(SMALL)), len(name), name


def _meta_params(name: str) -> float:
    """Parameter count built on the meta device (no memory, no weights; inf if it fails)."""
    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
        return sum(p.numel() for p in model.parameters())
    except Exception:  # noqa: BLE001 - a model that cannot build on meta is not a candidate
        return float("inf")


def pick(module: str) -> str | None:
    """The family's smallest model among five candidates the two name keys rank first."""
    names = [n for n in timm.list_models(module=module) if not n.startswith("test_")]
    if not names:
        return None
    candidates = dict.fromkeys(sorted(names, key=_token_rank)[:3]
                               + sorted(names, key=_word_rank)[:2])
    return min(candidates, key=_meta_params)


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


def _load(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def _store(path: Path, row: dict) -> list[dict]:
    """Merge one row into the results file (re-read first: a concurrent shard may have added
    rows) in timm's family order, written atomically; returns all rows."""
    order = {m: i for i, m in enumerate(timm.list_modules())}
    rows = [r for r in _load(path) if r["family"] != row["family"]] + [row]
    rows.sort(key=lambda r: order.get(r["family"], len(order)))
    atomic_write_json(path, rows)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="family (module) names")
    ap.add_argument("--limit", type=int, default=0, help="first N families only")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timeout", type=int, default=300, help="seconds per model (each side)")
    ap.add_argument("--json", default="bench/results/coverage_timm.json")
    ap.add_argument("--merge", action="store_true",
                    help="keep the file's rows and skip their families (--only ones rerun)")
    ap.add_argument("--shard", default="1/1", help="K/N: every N-th family from the K-th")
    ap.add_argument("--report", action="store_true",
                    help="print the summary and table of the results file, run nothing")
    args = parse_run(ap, check, check_tp)
    if args is None:  # a child: its row is printed
        return
    started = time.time()
    path = Path(args.json)
    if args.report:
        return _print(_load(path))
    if not args.merge and path.exists():
        path.unlink()
    done = {r["family"] for r in _load(path)} - set(args.only or ())
    families = [m for m in timm.list_modules() if not args.only or m in args.only]
    if args.limit:
        families = families[: args.limit]
    k, n = (int(v) for v in args.shard.split("/"))
    todo = [m for m in families[k - 1::n] if m not in done]
    rows = _load(path)
    for fam in todo:
        name = pick(fam)  # before the budget check: big families take minutes to pick
        if over_budget(started, args):
            break
        if name is None:
            continue
        row = child_row(__file__, fam, name, args)
        row["family"] = fam
        print(json.dumps(row), flush=True)
        rows = _store(path, row)
    _print(rows)


def _print(rows: list[dict]) -> None:
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"\n`.venv/bin/python bench/coverage_timm.py {' '.join(sys.argv[1:])}` "
          f"(timm {timm.__version__}): {ok} of {len(rows)} families pass "
          f"({len(timm.list_modules())} registered). {peer_summary(rows)}\n")
    print("\n".join(table(rows)))


if __name__ == "__main__":
    main()

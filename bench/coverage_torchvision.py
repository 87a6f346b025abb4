"""Coverage: prune every torchvision model (random weights) to half its MACs.

For each model: capture, plan a 50% MACs removal (landing within 2 points), build the sparse
and slim models, and check that the slim model runs, keeps the output shape, computes what the
sparse one computes (relative error), and that its counted MACs equal the plan's. Writes a
Markdown table (``docs/coverage.md``) and prints it.

    .venv/bin/python bench/coverage_torchvision.py                  # classification
    .venv/bin/python bench/coverage_torchvision.py --family all     # + segmentation, video
    .venv/bin/python bench/coverage_torchvision.py --only resnet18 vit_b_16
    .venv/bin/python bench/coverage_torchvision.py --only swin_v2_t --merge   # rerun some rows
    .venv/bin/python bench/coverage_torchvision.py --family detection --only ssd300_vgg16

Detection models (``weights=None, weights_backbone=None``, nothing downloaded) are pruned in
their captured part (:class:`~uif_explorer.torch.detection.DetectorCore`: backbone with the
dense or RPN head, at the batched input the detector's transform makes of one 320 px image;
R-CNN, RetinaNet and FCOS are built with ``min_size=max_size=320``); their MACs are that
part's, and the row also checks that the whole slim detector runs (list in, dicts out).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coverage_tp import tp_check  # noqa: E402

from uif_explorer.torch.detection import (  # noqa: E402
    DetectorCore,
    core_inputs,
    detector_with,
)
from uif_explorer.torch.macs import count_macs, count_params  # noqa: E402
from uif_explorer.torch.pruner import ChannelPruner  # noqa: E402

FAMILIES = {
    "classification": torchvision.models,
    "segmentation": torchvision.models.segmentation,
    "video": torchvision.models.video,
    "detection": torchvision.models.detection,
}
INPUT_SIZE = {"inception_v3": 299}
VIDEO_SIZE = {"mvit_v1_b": 224, "mvit_v2_s": 224, "s3d": 224}  # their strides need 224
DETECTION_SIZE = 320  # one 320 px image: R-CNN/RetinaNet/FCOS get min_size=max_size=320


def example_input(name: str, family: str) -> torch.Tensor:
    if family == "video":
        size = VIDEO_SIZE.get(name, 112)
        return torch.randn(1, 3, 16, size, size)
    size = INPUT_SIZE.get(name, 224)
    return torch.randn(1, 3, size, size)


def first_tensor(out: object) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return first_tensor(next(iter(out.values())))
    return first_tensor(out[0])


def build(name: str, family: str) -> tuple:
    """``(model, x, detector, images)``: the model to prune and its input (for a detector, its
    captured core and the batched images, with the detector and its list of images)."""
    torch.manual_seed(0)
    # weights_backbone=None: the segmentation builders download ImageNet backbones otherwise
    kwargs = {"aux_loss": False, "weights_backbone": None} if family == "segmentation" else {}
    if name in ("googlenet", "inception_v3"):
        kwargs = {"aux_logits": False, "init_weights": False}
    if family == "detection":
        kwargs = {"weights_backbone": None}
        if not name.startswith("ssd"):
            kwargs.update(min_size=DETECTION_SIZE, max_size=DETECTION_SIZE)
        detector = torchvision.models.get_model(name, weights=None, **kwargs).eval()
        images = [torch.rand(3, DETECTION_SIZE, DETECTION_SIZE)]
        return DetectorCore(detector), core_inputs(detector, images), detector, images
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    return model, example_input(name, family), None, None


def check(name: str, family: str, ratio: float) -> dict:
    row: dict = {"model": name, "family": family}
    start = time.time()
    try:
        model, x, detector, images = build(name, family)
    except Exception as exc:  # noqa: BLE001 - the table records every failure
        return _failed(row, exc, start)
    return prune_and_check(model, x, ratio, row, detector, images, start)


def check_tp(name: str, family: str, ratio: float) -> dict:
    """Torch-Pruning on the same model and input (``bench/coverage_tp.py``)."""
    try:
        model, x, detector, _ = build(name, family)
    except Exception as exc:  # noqa: BLE001 - the table records every failure
        return {"tp_status": f"fail: {type(exc).__name__}", "tp_seconds": 0}
    return tp_check(model, x, ratio, detector=detector is not None)


def _failed(row: dict, exc: Exception, start: float) -> dict:
    row["status"] = "fail"
    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    if "--verbose" in sys.argv:
        traceback.print_exc()
    row["seconds"] = round(time.time() - start, 1)
    return row


def prune_and_check(model: torch.nn.Module, x: torch.Tensor, ratio: float, row: dict,
                    detector: torch.nn.Module | None = None, images: list | None = None,
                    start: float | None = None) -> dict:
    """Capture, plan ``ratio`` of the MACs (within 2 points), build sparse and slim, check
    shape, slim vs sparse error and MACs = plan; with ``detector``, also that the whole slim
    detector runs on ``images``. Fills and returns ``row`` (status, error, seconds)."""
    start = time.time() if start is None else start
    try:
        pr = ChannelPruner(model, x)
        row["params_m"] = round(count_params(model) / 1e6, 2)
        row["macs_m"] = round(pr.original_macs / 1e6, 1)
        row["groups"] = f"{len(pr.graph.prunable_groups)}/{len(pr.graph.groups)}"
        plan = pr.plan_for_removal(ratio, tolerance=0.02)
        row["removed"] = round(pr.removal(plan), 3)
        sparse, slim = pr.sparse_model(plan).eval(), pr.slim_model(plan).eval()
        with torch.no_grad():
            ys, yl, yo = first_tensor(sparse(x)), first_tensor(slim(x)), first_tensor(model(x))
        row["shape_ok"] = tuple(yl.shape) == tuple(yo.shape)
        row["rel_err"] = float((ys - yl).norm() / yl.norm().clamp_min(1e-12))
        row["macs_match"] = count_macs(slim, x) == pr.macs(plan)
        ok = row["shape_ok"] and row["rel_err"] <= 1e-4 and row["macs_match"]
        if detector is not None:  # the whole slim detector: list of images in, dicts out
            with torch.no_grad():
                out = detector_with(detector, slim)(images)
            ok = ok and isinstance(out, list) and "boxes" in out[0]
        row["status"] = "ok" if ok else "mismatch"
    except Exception as exc:  # noqa: BLE001 - the table records every failure
        return _failed(row, exc, start)
    row["seconds"] = round(time.time() - start, 1)
    return row


def run_child(family: str, name: str, args: argparse.Namespace) -> dict:
    return child_row(__file__, family, name, args)


def child_row(script: str, family: str, name: str, args: argparse.Namespace) -> dict:
    """Run ``script --one family name`` in a subprocess (bounds memory) and read its row; with
    ``--peer``, Torch-Pruning on the same model in a second subprocess (its own time limit)."""
    row = _child(script, "--one", family, name, args) or {
        "model": name, "family": family, "status": "fail", "seconds": args.timeout,
        "error": f"timeout after {args.timeout} s"}
    if getattr(args, "peer", False):
        row.update(_child(script, "--one-tp", family, name, args)
                   or {"tp_status": f"fail: timeout after {args.timeout} s",
                       "tp_seconds": args.timeout})
    return row


def _child(script: str, mode: str, family: str, name: str, args: argparse.Namespace
           ) -> dict | None:
    """The ``ROW`` one child prints (None on timeout; a crash becomes a failed row)."""
    cmd = [sys.executable, script, mode, family, name, "--ratio", str(args.ratio),
           "--threads", str(args.threads)]
    start = time.time()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return None
    for line in res.stdout.splitlines():
        if line.startswith("ROW "):
            return json.loads(line[4:])
    tail = (res.stderr.strip().splitlines() or ["no output"])[-1][:200]
    error = f"crashed (exit {res.returncode}): {tail}"
    if mode == "--one-tp":
        return {"tp_status": f"fail: {error}", "tp_seconds": round(time.time() - start, 1)}
    return {"model": name, "family": family, "status": "fail", "error": error,
            "seconds": round(time.time() - start, 1)}


def markdown(rows: list[dict], ratio: float) -> str:
    ok = sum(r["status"] == "ok" for r in rows)
    cmd = ".venv/bin/python bench/coverage_torchvision.py"
    how = f"`{cmd} {' '.join(sys.argv[1:])}`"
    if "--merge" in sys.argv:
        how = f"`{cmd} --family all --threads 1`, then {how} (those rows rerun)"
    lines = [
        "# Coverage: torchvision models pruned to half their MACs",
        "",
        f"Generated by {how}"
        f" with torch {torch.__version__}, torchvision {torchvision.__version__}, random weights.",
        f"Target: remove {ratio:.0%} of MACs (within 2 points); slim must keep the output shape,"
        " match the sparse model (relative error <= 1e-4 in float32 on random weights) and have"
        " exactly the MACs the plan predicts.",
        "",
        f"**{ok} of {len(rows)} models pass.** {peer_summary(rows)}",
        "",
    ]
    return "\n".join(lines + table(rows)) + "\n"


def peer_summary(rows: list[dict]) -> str:
    """Torch-Pruning's pass count over the rows it ran on (bench/coverage_tp.py)."""
    ran = [r for r in rows if "tp_status" in r]
    if not ran:
        return ""
    ok = sum(r["tp_status"] == "ok" for r in ran)
    return f"Torch-Pruning (same models, same run): {ok} of {len(ran)} models."


def table(rows: list[dict]) -> list[str]:
    """The Markdown table of bench rows (shared with bench/coverage_timm.py)."""
    lines = [
        "| model | family | params (M) | MACs (M) | prunable groups | MACs removed | "
        "slim vs sparse rel. error | MACs = plan | status | seconds | Torch-Pruning |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        err = f"{r['rel_err']:.1e}" if "rel_err" in r else ""
        status = r["status"] if r["status"] != "fail" else f"fail: {r.get('error', '')}"
        peer = ""
        if "tp_status" in r:
            removed = f", {r['tp_removed']} removed" if "tp_removed" in r else ""
            peer = f"{r['tp_status']}{removed}, {r['tp_seconds']} s"
        lines.append(
            f"| {r['model']} | {r['family']} | {r.get('params_m', '')} | {r.get('macs_m', '')} "
            f"| {r.get('groups', '')} | {r.get('removed', '')} | {err} | "
            f"{r.get('macs_match', '')} | {status} | {r['seconds']} | {peer} |"
        )
    return lines


END_MARK = "<!-- end of the generated torchvision table -->"


def write_doc(path: Path, text: str) -> None:
    """Replace the generated torchvision part of ``path``, keeping what follows its end mark
    (notes and the other benches' sections)."""
    rest = ""
    if path.exists() and END_MARK in path.read_text():
        rest = path.read_text().split(END_MARK, 1)[1]
    path.write_text(text + "\n" + END_MARK + rest)


def add_run_options(ap: argparse.ArgumentParser) -> None:
    """The options both coverage scripts share: the Torch-Pruning peer, the run's time budget
    and the hidden child modes that ``run_child`` starts (``--one``, ``--one-tp``)."""
    ap.add_argument("--peer", action="store_true",
                    help="also run Torch-Pruning on each model (bench/coverage_tp.py)")
    ap.add_argument("--budget", type=int, default=0,
                    help="seconds for the whole run: no model starts after it (0: none)")
    ap.add_argument("--one", nargs=2, metavar=("FAMILY", "NAME"), help=argparse.SUPPRESS)
    ap.add_argument("--one-tp", nargs=2, metavar=("FAMILY", "NAME"), help=argparse.SUPPRESS)


def parse_run(ap: argparse.ArgumentParser, check: Callable[[str, str, float], dict],
              check_tp: Callable[[str, str, float], dict]) -> argparse.Namespace | None:
    """The parsed arguments (with the shared options added and ``--threads`` applied) of
    the parent run; None in a child process (one model per process bounds memory: huge
    ViTs, RegNets), which has printed the model's row for the parent, ours (``--one``) or
    Torch-Pruning's (``--one-tp``)."""
    add_run_options(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.one or args.one_tp):
        return args
    family, name = args.one or args.one_tp
    row = (check if args.one else check_tp)(name, family, args.ratio)
    print("ROW " + json.dumps(row), flush=True)
    return None


def over_budget(start: float, args: argparse.Namespace) -> bool:
    """Whether the run's ``--budget`` (seconds; 0 = none) is spent: no new model starts."""
    return bool(args.budget) and time.time() - start > args.budget


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="classification", choices=[*FAMILIES, "all"])
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="docs/coverage.md")
    ap.add_argument("--json", default="bench/results/coverage_torchvision.json")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per model")
    ap.add_argument("--merge", action="store_true",
                    help="with --only: replace those rows in --json and rewrite --out")
    args = parse_run(ap, check, check_tp)
    if args is None:  # a child: its row is printed
        return
    started = time.time()
    families = list(FAMILIES) if args.family == "all" else [args.family]
    rows = []
    for fam in families:
        names = torchvision.models.list_models(module=FAMILIES[fam])
        for name in names:
            if args.only and name not in args.only or over_budget(started, args):
                continue
            row = run_child(fam, name, args)
            rows.append(row)
            print(json.dumps(row), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    if args.merge and Path(args.json).exists():
        fresh = {(r["family"], r["model"]): r for r in rows}
        old = json.loads(Path(args.json).read_text())
        rows = [fresh.pop((r["family"], r["model"]), r) for r in old] + list(fresh.values())
    Path(args.json).write_text(json.dumps(rows, indent=1))
    if not args.only or args.merge:
        write_doc(Path(args.out), markdown(rows, args.ratio))
    print(markdown(rows, args.ratio))


if __name__ == "__main__":
    main()

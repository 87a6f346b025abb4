"""Do the workbench's scores predict the final model? (issue 13's benchmark)

For each sample model and MACs ratio, five ways of choosing what to prune are each followed by
the SAME final fine-tune and scored on the full 10k Fashion-MNIST test set (Debian's
``dataset-fashion-mnist``): uniform L1, iterative (sensitivity without and with BatchNorm
re-estimation), one-step (adaptive BN) and one-step + refinement (successive halving). Then,
over the one-step candidates at ``--kendall-ratio``, Kendall tau (bootstrap 95 % interval) of
each score the app shows against the candidates' final accuracy, and the instant estimate's
error on ratios the analysis did not measure.

Images: search/analysis scores use ``--score-images`` held out of the *training* split, so
nothing is chosen on the test images; fine-tuning uses the rest of the training split.

    nice -n 10 .venv/bin/python bench/quality.py            # the full specification
    nice -n 10 .venv/bin/python bench/quality.py --quick    # a few minutes, smoke test
    .venv/bin/python bench/quality.py --report LOG.jsonl    # tables from a (partial) run

Every result is appended to a JSON-lines log as soon as it is measured, so a run stopped
early still yields tables for what finished (``--report``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runners import bootstrap_ci, kendall_tau  # noqa: E402  (bench/runners.py)

from uif_explorer import get_pruning_runner  # noqa: E402
from uif_explorer.core.estimate import estimate, sens_points  # noqa: E402
from uif_explorer.core.refinement import Refinement  # noqa: E402
from uif_explorer.core.sensitivity import predicted_score  # noqa: E402
from uif_explorer.data import DataUnavailableError, load_arrays, preprocess  # noqa: E402
from uif_explorer.torch.evaluation import adaptive_bn_calibration, top1_accuracy  # noqa: E402
from uif_explorer.torch.finetune import fine_tune  # noqa: E402
from uif_explorer.zoo import example_input, load_torch_sample  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("uniform L1", "iterative (no BN re-estimation)", "iterative (BN re-estimation)",
           "one-step (adaptive BN)", "one-step + refinement")
HELD_OUT = (0.3, 0.5, 0.7, 0.75)  # the analysis itself measures 0.2, 0.4, 0.6
QUIET = {"progress": lambda *a: None}


@dataclass
class Data:
    """Training, scoring (held out of training), calibration and test images."""

    train: TensorDataset
    score: DataLoader
    calib: DataLoader
    test: DataLoader
    note: str

    @classmethod
    def load(cls, score_images: int, test_images: int | None) -> Data:
        try:
            xs, ys = load_arrays("train", "full")
            xt, yt = load_arrays("test", "full")
            note = "full Fashion-MNIST (Debian dataset-fashion-mnist)"
        except DataUnavailableError as exc:
            print(f"WARNING: {exc}\nFalling back to the bundled 10k/2k subset: the numbers are "
                  "NOT comparable with docs/benchmarks.md.", flush=True)
            xs, ys = load_arrays("train", "bundled")
            xt, yt = load_arrays("test", "bundled")
            note = "bundled subset (full set not installed)"

        def ds(x: np.ndarray, y: np.ndarray) -> TensorDataset:
            return TensorDataset(torch.from_numpy(preprocess(x)[:, None]), torch.from_numpy(y))

        cut = len(xs) - score_images
        xt, yt = (xt, yt) if test_images is None else (xt[:test_images], yt[:test_images])
        train = ds(xs[:cut], ys[:cut])
        return cls(train=train, score=DataLoader(ds(xs[cut:], ys[cut:]), batch_size=250),
                   calib=DataLoader(train, batch_size=100, shuffle=True,
                                    generator=torch.Generator().manual_seed(0)),
                   test=DataLoader(ds(xt, yt), batch_size=500),
                   note=f"{note}: {len(train)} train, {score_images} scoring (held out of "
                        f"train), {len(yt)} test images")

    def train_loader(self, seed: int) -> DataLoader:
        return DataLoader(self.train, batch_size=128, shuffle=True,
                          generator=torch.Generator().manual_seed(seed))


class Log:
    """Append-only JSON lines: every measured number the moment it exists."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict] = []
        self.start = time.time()

    def add(self, **row) -> None:
        row["elapsed_s"] = round(time.time() - self.start)
        self.rows.append(row)
        with self.path.open("a") as fh:
            fh.write(json.dumps(row, default=str) + "\n")
        print(json.dumps(row, default=str), flush=True)


def final_accuracy(model: torch.nn.Module, data: Data, steps: int, seed: int) -> float:
    """The one final fine-tune every method gets, then top-1 on the test images."""
    torch.manual_seed(seed)
    fine_tune(model, data.train_loader(seed), epochs=1, lr=0.02, max_batches=steps, **QUIET)
    return top1_accuracy(model, data.test)


def removal(model: torch.nn.Module, pr) -> float:
    return float(pr.removal(model.uif_plan))


def held_out_estimates(it, score_job: dict, log: Log, model: str) -> None:
    """The instant estimate at ratios the analysis did not measure vs the measured preview.
    All estimates are taken first: a measured preview would otherwise correct the next."""
    previews = [it.plan(r, strict=False) for r in HELD_OUT]
    for r, p in zip(HELD_OUT, previews):
        m = p.measure(top1_accuracy, **score_job)
        log.add(kind="estimate", model=model, ratio=r, achieved=p.achieved_removal,
                additive=p.predicted_score, estimate=p.estimate, measured=m.score,
                images=m.images, typical_error=p.estimate_error)


def compare(name: str, base, data: Data, runners: dict, ratio: float, seed: int,
            args, log: Log, work: Path) -> dict:
    """One (model, ratio, seed): the five methods, each with the same final fine-tune."""
    score = dict(eval_fn=top1_accuracy, eval_args=(data.score,),
                 calibration_fn=adaptive_bn_calibration,
                 calib_args=(data.calib, args.calib_batches))
    os_ = get_pruning_runner(base, example_input(name), "one_step",
                             workdir=work / f"search_seed{seed}")
    pr = os_.pruner
    t = time.time()
    search = os_.search(num_subnet=args.candidates, removal_ratio=ratio, seed=seed, **score)
    search_s = time.time() - t
    built = {  # built only when wanted: the iterative ones need their analyses
        METHODS[0]: lambda: (pr.slim_model(pr.plan_for_removal(ratio, strict=False)), 0.0),
        METHODS[1]: lambda: (runners["plain"].prune(removal_ratio=ratio, mode="slim"),
                             runners["plain_s"]),
        METHODS[2]: lambda: (runners["bn"].prune(removal_ratio=ratio, mode="slim"),
                             runners["bn_s"]),
        # the adaptive-BN top *sample* (a refined file's winner, or its uniform candidate, is not)
        METHODS[3]: lambda: (os_.prune(removal_ratio=ratio, index=next(
            c for c in search["ranking"] if not uniform_id(search, c))), search_s),
    }
    built = {m: make() for m, make in built.items() if wanted(m, args)}
    t = time.time()
    refine = Refinement(finetune_args=(data.train_loader(1000 + seed),),
                        steps=args.refine_steps, keep=args.refine_keep)
    refined = os_.search(num_subnet=args.candidates, removal_ratio=ratio, seed=seed,
                         refine=refine, **score)
    if wanted(METHODS[4], args):
        built[METHODS[4]] = (os_.prune(removal_ratio=ratio), search_s + time.time() - t)
    winner = refined["refinement"]["winner"]
    picked = {METHODS[3]: "top sample",
              METHODS[4]: "uniform" if uniform_id(refined, winner) else f"sample {winner}"}
    for method, (model, secs) in built.items():
        acc = final_accuracy(model, data, args.finetune_steps, seed)
        log.add(kind="method", model=name, ratio=ratio, seed=seed, method=method,
                achieved=removal(model, pr), accuracy=acc, choose_s=round(secs, 1),
                picked=picked.get(method))
    return search


def wanted(method: str, args) -> bool:
    """Whether ``--methods`` selects ``method`` (all by default)."""
    return not args.methods or any(method.startswith(m) for m in args.methods)


def uniform_id(search: dict, cid: int) -> bool:
    """Whether candidate ``cid`` is the uniform plan refinement adds (attempt 2)."""
    return any(c["id"] == cid and c.get("origin") == "uniform" for c in search["candidates"])


def kendall_search(name: str, base, data: Data, args, ratio_dir: Path, score_job: dict) -> dict:
    """The one-step search (seed 0) whose candidates ``--kendall-range`` ranks: seed 0's
    candidates (seeded, so the same plans as the methods' seed-0 search) up to the range's end,
    in a folder of its own, so processes ranking different ranges never write one file and no
    uniform candidate added by refinement takes a sample's id."""
    lo, hi = args.kendall_range
    runner = get_pruning_runner(base, example_input(name), "one_step",
                                workdir=ratio_dir / f"kendall_{lo}_{hi}")
    return runner.search(num_subnet=hi, removal_ratio=args.kendall_ratio,
                         seed=0, eval_fn=top1_accuracy, eval_args=(data.score,),
                         calibration_fn=score_job["calibration_fn"],
                         calib_args=score_job["calib_args"])


def kendall_candidates(name: str, search: dict, runners: dict, data: Data, args,
                       log: Log, score_job: dict) -> None:
    """Every candidate of one search: each score the app shows, then its final accuracy."""
    it = runners.get("bn")  # absent with --no-estimate: no analysis, no instant estimate
    sens = it.sensitivity(quiet=True) if it is not None else None
    pr = get_pruning_runner(load_torch_sample(name), example_input(name), "one_step",
                            workdir=tempfile.mkdtemp(prefix="uif_q_")).pruner
    loader = data.train_loader(2000)
    for cand in search["candidates"][slice(*args.kendall_range)]:
        kept = {int(g): n for g, n in cand["kept_channels"].items()}
        plan = pr.plan_from_counts(kept, search["criterion"])
        ratios = {g: 1 - n / pr.graph.groups[g].num_channels for g, n in kept.items()}
        achieved = pr.removal(plan)
        scores = {}
        if sens is not None:
            scores["additive"] = predicted_score(sens, ratios)
            scores["estimate"] = estimate(scores["additive"], achieved, sens_points(sens)).value
        refined = {}  # the refinement's first and last stage: built-in fine_tune, fresh each
        for key, steps in (("refined", args.refine_steps), ("refined_last", args.refine_last)):
            if steps:
                model = pr.slim_model(plan)
                fine_tune(model, loader, max_batches=steps, **QUIET)
                adaptive_bn_calibration(model, *score_job["calib_args"])
                refined[key] = top1_accuracy(model, data.score)
        acc = final_accuracy(pr.slim_model(plan), data, args.finetune_steps, 0)
        log.add(kind="candidate", model=name, ratio=search["removal_ratio"], id=cand["id"],
                achieved=achieved, **scores, adaptive_bn=cand["score"], **refined, accuracy=acc)


def run(args, log: Log) -> None:
    data = Data.load(args.score_images, args.test_images)
    log.add(kind="setup", data=data.note, args=vars(args), threads=torch.get_num_threads(),
            torch=torch.__version__, started=datetime.now(UTC).isoformat())
    work = args.workdir or Path(tempfile.mkdtemp(prefix="uif_quality_"))
    plain_job = dict(args=(data.score,))
    bn_job = dict(args=(data.score,), calibration_fn=adaptive_bn_calibration,
                  calib_args=(data.calib, args.calib_batches))
    for name in args.models:
        base = load_torch_sample(name)
        if args.seed_start == 0 and not args.no_baseline:  # later seeds leave it to the first
            log.add(kind="baseline", model=name, accuracy=top1_accuracy(base, data.test))
        runners = {}
        methods = "methods" in args.parts
        need = {"plain": methods and wanted(METHODS[1], args),
                "bn": "estimates" in args.parts
                or ("kendall" in args.parts and not args.no_estimate)
                or (methods and wanted(METHODS[2], args))}
        for key, job in ((k, j) for k, j in (("plain", plain_job), ("bn", bn_job)) if need[k]):
            it = get_pruning_runner(base, example_input(name), "iterative",
                                    workdir=work / name / key)
            t = time.time()
            it.ana(top1_accuracy, ratios=args.ana_ratios, **job)
            runners[key], runners[key + "_s"] = it, time.time() - t
            log.add(kind="analysis", model=name, protocol=key, seconds=round(time.time() - t))
        if "estimates" in args.parts:
            held_out_estimates(runners["bn"], bn_job, log, name)
        seeds = args.seeds if name == "resnet20" else args.other_seeds
        for ratio in args.ratios:
            ratio_dir = work / name / f"r{ratio}"
            for seed in range(args.seed_start, seeds) if "methods" in args.parts else ():
                compare(name, base, data, runners, ratio, seed, args, log, ratio_dir)
            if ("kendall" in args.parts and ratio == args.kendall_ratio
                    and name in args.kendall_models):
                search = kendall_search(name, base, data, args, ratio_dir, bn_job)
                kendall_candidates(name, search, runners, data, args, log, bn_job)
    log.add(kind="done", finished=datetime.now(UTC).isoformat())


# -- tables -----------------------------------------------------------------------------------
def mean_se(xs: list[float]) -> tuple[float, float]:
    a = np.asarray(xs, dtype=float)
    return float(a.mean()), float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("nan")


def report(rows: list[dict]) -> list[str]:
    setup = next((r for r in rows if r["kind"] == "setup"), {})
    a = setup.get("args", {})
    out = [f"Data: {setup.get('data')}; torch {setup.get('torch')}, {setup.get('threads')} "
           f"thread(s). Final fine-tune: {a.get('finetune_steps')} SGD steps of 128 images "
           f"(lr 0.02, cosine, no distillation), the same for every method; refinement: keep "
           f"{a.get('refine_keep')}, first stage {a.get('refine_steps')} steps; one-step: "
           f"{a.get('candidates')} candidates; scores on {a.get('score_images')} held-out train "
           f"images, BN re-estimation on {a.get('calib_batches')} batches of 100.", ""]
    base = {r["model"]: r["accuracy"] for r in rows if r["kind"] == "baseline"}
    meth = [r for r in rows if r["kind"] == "method"]
    out += ["| model | MACs removed | method | seeds | final accuracy (%) mean ± s.e. | spread "
            "(min-max) | vs uniform (points) | choosing time, first seed (s) |",
            "|---|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in meth):
        for ratio in sorted({r["ratio"] for r in meth if r["model"] == model}):
            sel = [r for r in meth if r["model"] == model and r["ratio"] == ratio]
            uni = {r["seed"]: r["accuracy"] for r in sel if r["method"] == METHODS[0]}
            for method in METHODS:
                ms = [r for r in sel if r["method"] == method]
                if not ms:
                    continue
                accs = [r["accuracy"] for r in ms]
                first = min(ms, key=lambda r: r["seed"])["choose_s"]
                mu, se = mean_se(accs)
                diffs = [r["accuracy"] - uni[r["seed"]] for r in ms if r["seed"] in uni]
                dmu, dse = mean_se(diffs) if diffs else (float("nan"), float("nan"))
                out.append(f"| {model} (unpruned {base.get(model, float('nan')):.2f}) | "
                           f"{np.mean([r['achieved'] for r in ms]):.3f} | {method} | {len(ms)} | "
                           f"{mu:.2f} ± {se:.2f} | {min(accs):.2f}-{max(accs):.2f} | "
                           f"{dmu:+.2f} ± {dse:.2f} | {first:.0f} |")
    picks = [f"{r['model']} {r['ratio']:.0%} seed {r['seed']}: {r['picked']}" for r in meth
             if r["method"] == METHODS[4] and r.get("picked")]
    if picks:
        out += ["", "Refinement's final pick (attempt 2 carries the uniform plan into its first "
                "stage): " + "; ".join(picks) + "."]
    cands = [r for r in rows if r["kind"] == "candidate"]
    if cands:
        acc = np.asarray([r["accuracy"] for r in cands])
        out += ["", f"Kendall tau vs final accuracy, {len(cands)} one-step candidates of "
                f"{cands[0]['model']} at {cands[0]['ratio']:.0%} MACs removed (final accuracy "
                f"{acc.min():.2f}-{acc.max():.2f} %), bootstrap 95 % interval:", "",
                "| score the app shows | range over candidates | Kendall tau | 95 % interval |",
                "|---|---|---|---|"]
        for key, label in (("estimate", "instant estimate (corrected additive, BN .sens)"),
                           ("adaptive_bn", "adaptive-BN score = measured preview (same plan, "
                                           "same protocol)"),
                           ("refined", f"refined score ({a.get('refine_steps')} steps)"),
                           ("refined_last", f"refined score ({a.get('refine_last')} steps, "
                                            "the last stage's budget)")):
            if not all(key in r for r in cands):
                continue
            s = np.asarray([r[key] for r in cands])
            lo, hi = bootstrap_ci(s, acc)
            out.append(f"| {label} | {s.min():.1f}-{s.max():.1f} | {kendall_tau(s, acc):.2f} | "
                       f"[{lo:.2f}, {hi:.2f}] |")
        err = np.abs([r["estimate"] - r["adaptive_bn"] for r in cands if "estimate" in r])
        if len(err):
            out += ["", f"Instant estimate vs the measured score of the same candidate plans: "
                    f"mean abs error {err.mean():.1f} points (max {err.max():.1f})."]
    # the first log's: a later process sees the first one's measured previews (not held out)
    est = list({(r["model"], r["ratio"]): r for r in reversed(rows)
                if r["kind"] == "estimate"}.values())[::-1]
    if est:
        out += ["", "| model | held-out ratio | achieved | additive | instant estimate | "
                "measured preview | abs error |", "|---|---|---|---|---|---|---|"]
        for r in est:
            out.append(f"| {r['model']} | {r['ratio']:.2f} | {r['achieved']:.3f} | "
                       f"{r['additive']:.1f} | {r['estimate']:.1f} | {r['measured']:.1f} | "
                       f"{abs(r['estimate'] - r['measured']):.1f} |")
        for model in dict.fromkeys(r["model"] for r in est):
            e = [abs(r["estimate"] - r["measured"]) for r in est if r["model"] == model]
            out.append(f"\n{model}: instant estimate mean abs error on held-out ratios "
                       f"{np.mean(e):.1f} points")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet20", "mobilenetv2_small"])
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.5, 0.75])
    ap.add_argument("--seeds", type=int, default=3, help="seeds for ResNet-20")
    ap.add_argument("--other-seeds", type=int, default=1, help="seeds for the other models")
    ap.add_argument("--candidates", type=int, default=24, help="one-step candidates")
    ap.add_argument("--kendall-range", type=int, nargs=2, default=[0, 24], metavar=("FROM", "TO"),
                    help="which seed-0 candidates to rank (split across processes)")
    ap.add_argument("--parts", nargs="+", default=["estimates", "methods", "kendall"],
                    choices=["estimates", "methods", "kendall"])
    ap.add_argument("--kendall-ratio", type=float, default=0.75)
    ap.add_argument("--kendall-models", nargs="*", default=["resnet20"])
    ap.add_argument("--finetune-steps", type=int, default=200)
    ap.add_argument("--refine-steps", type=int, default=25)
    ap.add_argument("--refine-keep", type=int, default=4)
    ap.add_argument("--refine-last", type=int, default=0,
                    help="also rank the candidates by a refined score after this many steps "
                         "(the last stage's budget; 0: not measured)")
    ap.add_argument("--score-images", type=int, default=1000)
    ap.add_argument("--test-images", type=int, default=None, help="default: all")
    ap.add_argument("--calib-batches", type=int, default=10)
    ap.add_argument("--ana-ratios", nargs="+", type=float,
                    default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (minutes)")
    ap.add_argument("--methods", nargs="*", default=None,
                    help="only the methods starting with these words (default: all)")
    ap.add_argument("--seed-start", type=int, default=0,
                    help="first seed (a second process can run later seeds)")
    ap.add_argument("--no-estimate", action="store_true",
                    help="rank candidates without the instant estimate (no analysis needed)")
    ap.add_argument("--no-baseline", action="store_true",
                    help="do not score the unpruned model on the test images (another log has it)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="reuse the analyses and searches of an earlier run (resumable files)")
    ap.add_argument("--log", type=Path, default=None)
    ap.add_argument("--report", type=Path, nargs="+", default=None,
                    help="only print the tables of one or more logs")
    args = ap.parse_args()
    if args.report:
        rows = [json.loads(line) for path in args.report
                for line in path.read_text().splitlines() if line]
        print("\n".join(report(rows)))
        return
    if args.quick:
        args.models, args.ratios, args.seeds, args.candidates = ["resnet20"], [0.75], 1, 4
        args.kendall_range, args.finetune_steps = [0, 6], 5
        args.refine_steps, args.refine_keep = 2, 2
        args.score_images, args.test_images, args.calib_batches = 250, 1000, 2
        args.ana_ratios = [0.3, 0.6, 0.9]
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d_%H%M")
    log = Log(args.log or RESULTS / f"quality_{stamp}{'_quick' if args.quick else ''}.jsonl")
    print(f"Command: {' '.join(sys.argv)}; log {log.path}", flush=True)
    run(args, log)
    print("\n".join(report(log.rows)), flush=True)


if __name__ == "__main__":
    main()

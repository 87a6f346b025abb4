"""Refinement of a one-step search: successive halving with short fine-tunes.

The adaptive-BN score ranks candidates almost at chance against their accuracy after
fine-tuning (docs/benchmarks.md), so ``search(..., refine=Refinement(...))`` gives the best
``keep`` candidates a short fine-tune (``steps`` batches), scores them again with the search's
own protocol, keeps the better half, fine-tunes those afresh with twice the budget, and so on
until two are left; the better of those is the winner ``prune(index=None)`` builds. With
``uniform=True`` (the default) the uniform L1 plan at the search's target is scored as one more
candidate and always takes the last place of the first stage (when it is not in the top
``keep`` already), so the winner is the uniform plan whenever the samples fine-tune worse: at
high ratios EagleEye's wide per-group sampling rarely holds a plan as good as uniform
(docs/benchmarks.md); and it wins the last stage when the best sample beats it only within
noise. Every
stage is written to the ``.search`` file after each candidate (``refinement``), so a killed
run resumes where it was.
Each stage fine-tunes from the pruned model, not from the previous stage's weights: the file
then holds everything needed to resume (scores, not weights).
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uif_explorer.core.scores import AnalysisError, ScoreJob, as_args, check_function, function_name
from uif_explorer.core.uncertainty import Measured, take_images, within_noise
from uif_explorer.io.workspace import atomic_write_json

if TYPE_CHECKING:
    from uif_explorer.core.pruner import BasePruner
    from uif_explorer.core.runner import RunnerBase


@dataclass(frozen=True)
class Refinement:
    """How to refine a search: ``keep`` candidates, ``steps`` batches in the first stage.

    ``finetune_fn(model, *finetune_args)`` trains the slim candidate in place; it gets the
    stage's budget as ``max_batches=`` when it accepts that keyword (the built-in
    ``fine_tune`` of each backend does; it is used when ``finetune_fn`` is None, with
    ``finetune_args=(train_loader,)`` for PyTorch or ``(x, y)`` for Keras).
    """

    finetune_args: tuple = ()
    finetune_fn: Callable | None = None
    steps: int = 20
    keep: int = 4
    uniform: bool = True

    def __post_init__(self) -> None:
        if self.finetune_fn is not None:
            check_function(self.finetune_fn, "finetune_fn")
        object.__setattr__(self, "finetune_args", as_args(self.finetune_args, "finetune_args"))
        for name in ("steps", "keep"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected Refinement {name} to be an integer >= 1. "
                                 f"Received: {name}={value!r}")

    def stages(self, candidates: int) -> list[tuple[int, int]]:
        """(candidates fine-tuned, batch budget) per stage: halving, the budget doubling,
        until two are left; the better of the last stage wins (no stage of one)."""
        n = max(1, min(self.keep, candidates))
        out = [(n, self.steps)]
        while n > 2:
            n = math.ceil(n / 2)
            out.append((n, out[-1][1] * 2))
        return out

    def settings(self, candidates: int, framework: str) -> dict[str, Any]:
        """What the ``.search`` file records; a rerun with other settings restarts it."""
        out = {"keep": self.keep, "steps": self.steps,
               "finetune": function_name(self.finetune_fn) or f"{framework} fine_tune",
               "budgets": [b for _, b in self.stages(candidates)]}
        return {**out, "uniform": True} if self.uniform else out  # old files: no key


def first_stage(ranking: list[int], size: int, anchor: int | None) -> list[int]:
    """The first stage's candidates: the best ``size``, the ``anchor`` (the uniform plan)
    taking the last place when it is not among them (added, with ``size`` 1)."""
    ids = ranking[:size]
    if anchor is None or anchor in ids:
        return ids
    return [c for c in ranking if c != anchor][:max(1, size - 1)] + [anchor]


def uniform_anchor(runner: RunnerBase, pr: BasePruner, data: dict[str, Any], path: Path,
                   job: ScoreJob) -> int:
    """The id of the search's uniform candidate, added and scored with the search's protocol
    when missing (written once scored, so a killed run leaves no unscored candidate)."""
    found = [c["id"] for c in data["candidates"] if c.get("origin") == "uniform"]
    if found:
        return found[0]
    cand = runner._uniform_candidate(pr, data)
    plan = pr.plan_from_counts({int(g): n for g, n in cand["kept_channels"].items()},
                               runner.criterion)
    take_images()
    cand["score"] = job.score(runner._build(pr, plan, "slim"), "the uniform candidate")
    cand["images"] = take_images() or data["baseline"].get("images")
    data["candidates"].append(cand)
    runner._finish(data)
    atomic_write_json(path, data)
    return cand["id"]


def _finetune_call(refine: Refinement, framework: str) -> Callable[[Any, int], None]:
    """``train(model, budget)``: the user's function or the backend's built-in one."""
    fn = refine.finetune_fn
    if fn is None:
        if not framework:
            raise AnalysisError("Expected a finetune_fn: this runner has no built-in fine_tune.")
        fn = importlib.import_module(f"uif_explorer.{framework}.finetune").fine_tune
    try:
        takes_budget = "max_batches" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_budget = False

    def train(model: Any, budget: int) -> None:
        try:
            if takes_budget:
                fn(model, *refine.finetune_args, max_batches=budget)
            else:
                fn(model, *refine.finetune_args)
        except Exception as exc:
            raise AnalysisError(f"finetune_fn raised {type(exc).__name__}: {exc}. Stages saved "
                                "so far are kept; fix it and run search again to resume.") from exc

    return train


def _survivors(data: Mapping[str, Any], stage: Mapping[str, Any], size: int) -> list[int]:
    """The ``size`` best candidates of a finished stage (ties broken by id)."""
    sign = -1.0 if data.get("higher_is_better", True) else 1.0
    scores = {int(k): v for k, v in stage["scores"].items()}
    return sorted(scores, key=lambda c: (sign * scores[c], c))[:size]


def _prefer_anchor(data: Mapping[str, Any], stage: Mapping[str, Any], best: int,
                   anchor: int | None) -> int:
    """The uniform candidate when it reached the last stage and the best sample beats it only
    within noise (overlapping 95 % intervals on the stage's images): in the benchmark a sample
    that won the last stage by 0.2 points on 500 images ended 1.4 points below uniform after
    the final fine-tune (docs/benchmarks.md). Scores without an interval: the best."""
    scores = stage["scores"]
    if anchor is None or best == anchor or str(anchor) not in scores or not stage["images"]:
        return best
    a, b = (Measured.of(scores[str(c)], stage["images"]) for c in (best, anchor))
    return anchor if within_noise(a, b) else best


def refine_search(runner: RunnerBase, pr: BasePruner, data: dict[str, Any], path: Path,
                  job: ScoreJob, refine: Refinement,
                  progress: Callable[[int, int, dict], None] | None = None) -> None:
    """Run (or resume) the refinement stages of a finished search, writing after each score."""
    anchor = uniform_anchor(runner, pr, data, path, job) if refine.uniform else None
    ranking = runner._ranking(data)
    settings = refine.settings(len(ranking), pr.framework)
    state = data.get("refinement")
    if state is None or state.get("settings") != settings or state.get("protocol") != job.protocol:
        state = data["refinement"] = {"settings": settings, "protocol": job.protocol,
                                      "stages": [], "winner": None, "complete": False}
    if state["complete"]:
        return
    train = _finetune_call(refine, pr.framework)
    by_id = {c["id"]: c for c in data["candidates"]}
    plan_stages = refine.stages(len(ranking))
    # the first stage may hold one more than planned: the uniform plan beside a single best
    total = (len(first_stage(ranking, plan_stages[0][0], anchor))
             + sum(n for n, _ in plan_stages[1:]))
    done = sum(len(s["scores"]) for s in state["stages"])
    for k, (size, budget) in enumerate(plan_stages):
        if k < len(state["stages"]):
            stage = state["stages"][k]
        else:
            ids = (first_stage(ranking, size, anchor) if k == 0
                   else _survivors(data, state["stages"][k - 1], size))
            stage = {"stage": k + 1, "budget": budget, "candidates": ids, "scores": {},
                     "images": None}
            state["stages"].append(stage)
        for cid in stage["candidates"]:
            if str(cid) in stage["scores"]:
                continue
            cand = by_id[cid]
            plan = pr.plan_from_counts({int(g): n for g, n in cand["kept_channels"].items()},
                                       runner.criterion)
            model = runner._build(pr, plan, "slim")  # a fresh copy: the user's model untouched
            train(model, budget)
            take_images()
            stage["scores"][str(cid)] = job.score(
                model, f"candidate {cid} after {budget} fine-tuning batches")
            stage["images"] = take_images() or stage["images"]
            atomic_write_json(path, data)
            done += 1
            if progress is not None:
                progress(done, total, {"stage": k + 1, "candidate": cid, "budget": budget,
                                       "score": stage["scores"][str(cid)]})
    last = state["stages"][-1]
    state["winner"] = _prefer_anchor(data, last, _survivors(data, last, 1)[0], anchor)
    state["complete"] = True
    atomic_write_json(path, data)


def refined_winner(data: Mapping[str, Any]) -> int | None:
    """The candidate id refinement chose, or None when the search was not (fully) refined."""
    state = data.get("refinement") or {}
    return state.get("winner") if state.get("complete") else None


def refine_after_search(runner: RunnerBase, data: dict[str, Any], job: ScoreJob,
                        refine: Refinement | None, excludes: Any = None,
                        progress: Callable[[int, int, dict], None] | None = None
                        ) -> dict[str, Any]:
    """What ``search(..., refine=...)`` runs once the candidates are scored (or resumes)."""
    from uif_explorer.core.runner_files import say  # runner_files imports this module

    if refine is None:
        return data
    if not isinstance(refine, Refinement):
        raise TypeError("Expected refine=Refinement(finetune_args=(train_loader,), steps=..., "
                        f"keep=...) or None. Received: refine={refine!r}")
    pr = runner._pruner_for(excludes)
    if not data.get("complete") or data.get("weights_digest") != pr.weights_digest():
        say(f"not refining the search of {data.get('model')}: it is unfinished or was made on "
            "other weights; run search(..., forced=True) first")
        return data
    path = runner.workspace.search(runner.name, data["removal_ratio"],
                                   data.get("target", "macs"))
    say(f"refining the search of {runner.name}: stages of (candidates, fine-tuning batches) "
        f"{refine.stages(len(data['candidates']))}; saved in {path}")
    refine_search(runner, pr, data, path, job, refine, progress)
    return data

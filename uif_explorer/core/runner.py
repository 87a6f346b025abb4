"""The runner loop, written once for the PyTorch and Keras runners.

``ana``, ``search``, ``prune`` and the candidate prune live here: argument checks, the
workspace files (created, resumed, written after every evaluation), the baseline, ranking and
specs. A backend subclasses :class:`RunnerBase` and supplies only two hooks: how to make a
pruner for a set of excludes, and how to score a batch of plans (PyTorch through executors
with sparse or slim models, Keras in-process on one masked copy). Allocation, previews and the
file checks are in :mod:`uif_explorer.core.runner_files`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from uif_explorer.core.allocation import check_removal_ratio
from uif_explorer.core.estimate import WHOLE_MODEL_RATIOS, new_whole_model, pending_whole_model
from uif_explorer.core.eta import TimeLeft
from uif_explorer.core.measure import measure_whole_model
from uif_explorer.core.plan import PlanError, PruningPlan
from uif_explorer.core.pruner import BasePruner
from uif_explorer.core.rules import nothing_prunable
from uif_explorer.core.runner_files import (
    MAX_SUBNETS,
    SEARCH_KIND,
    PlanPreview,
    Progress,
    RunnerFiles,
    check_divisible,
    check_num_subnet,
    check_target,
    check_threshold,
    kept_lists,
    say,
)
from uif_explorer.core.scores import AnalysisError, ScoreJob, check_function
from uif_explorer.core.sensitivity import (
    DEFAULT_RATIOS,
    check_ratios,
    new_sensitivity,
    pending_steps,
    record_step,
)
from uif_explorer.core.uncertainty import take_images
from uif_explorer.io.workspace import WorkspaceError, atomic_write_json, read_json

__all__ = ["MAX_SUBNETS", "SEARCH_KIND", "AnalysisError", "PlanPreview", "Progress",
           "RunnerBase", "ScoreItem", "ScoreJob", "check_callable", "kept_lists", "say"]

check_callable = check_function  # the name the OFA search imports

# (plan or None for the unpruned model, what it is in words for error messages)
ScoreItem = tuple[PruningPlan | None, str]


class RunnerBase(RunnerFiles):
    """ana / search / prune over one model; subclasses add the backend hooks below."""

    # MACs removed by the whole-model plans the analysis measures at its end (core/estimate.py)
    whole_model_ratios: tuple[float, ...] = WHOLE_MODEL_RATIOS

    # -- backend hooks ----------------------------------------------------------------------
    def _make_pruner(self, excludes: list) -> BasePruner:
        raise NotImplementedError

    def _score_plans(self, pr: BasePruner, items: Sequence[ScoreItem], job: ScoreJob,
                     executor: object = None) -> Iterator[tuple[int, float, int | None]]:
        """Yield ``(index, score, worker pid or None)`` for every item, as each finishes.

        ``None`` stands for the unpruned model (the baseline); it must not modify the
        user's model. ``job.mode`` says whether a plan is scored as a sparse or slim model.
        """
        raise NotImplementedError

    # -- the shared loop ----------------------------------------------------------------------
    def _run(self, pr: BasePruner, items: list[ScoreItem], job: ScoreJob, executor: object,
             progress: Progress | None, record: Any) -> None:
        """Score ``items``; ``record(index, score, pid)`` saves one result, returns its info."""
        step, bar = self._progress(len(items), progress)
        start = time.monotonic()
        scores = self._score_plans(pr, items, job, executor)
        # ETA weighted by each step's cost where the scorer knows it (core/eta.py)
        left = TimeLeft(len(items), getattr(scores, "costs", None), start)
        try:
            for done, (index, score, pid) in enumerate(scores, start=1):
                now = time.monotonic()
                step(done, {**record(index, score, pid), "elapsed_s": now - start,
                            "eta_s": left.step(index, now)})
        finally:
            if bar is not None:
                bar.close()

    # -- sensitivity analysis ---------------------------------------------------------------
    def _analyse(self, eval_fn: Any, args: Any, excludes: Iterable[object] | None,
                 forced: bool, ratios: Sequence[float] = DEFAULT_RATIOS,
                 calibration_fn: Any = None, calib_args: Any = (), *,
                 progress: Progress | None = None, executor: object = None,
                 gpus: Sequence[str | int] | None = None) -> dict[str, Any]:
        """Score the model with each group pruned alone at each ratio; resumable ``.sens``."""
        job = ScoreJob.of(eval_fn, args, calibration_fn, calib_args, mode="sparse", gpus=gpus)
        ratios = check_ratios(ratios)
        pr = self._pruner_for(excludes)
        if not pr.graph.prunable_groups:  # nothing to analyse: say why before any scoring
            raise PlanError(nothing_prunable(pr.graph))
        weights = pr.weights_digest()
        path = self.workspace.sens(self.name)
        sens = self._load_file(pr, path, "analysis", forced, weights, job.protocol)
        if sens is not None and sens.get("complete") and (
                not pending_whole_model(sens) or self._stale(sens, weights, job.protocol)):
            return sens
        if sens is None:
            groups = [{"id": g.id, "name": g.name, "modules": g.modules,
                       "num_channels": g.num_channels, "prunable": g.prunable,
                       "excluded_reason": g.excluded_reason} for g in pr.graph.groups]
            sens = new_sensitivity(
                model=self.name, graph_digest=pr.graph.graph_digest(), weights_digest=weights,
                groups=groups, ratios=ratios, criterion=self.criterion,
                higher_is_better=self.higher_is_better, protocol=job.protocol,
            )
            sens["whole_model"] = new_whole_model(self.whole_model_ratios)
        steps = pending_steps(sens)
        items: list[ScoreItem] = [(None, "the unpruned model")] if sens["baseline"] is None else []
        first = len(items)
        items += [(pr.plan({gid: r}, self.criterion, channel_divisible=1),
                   f"group {gid} pruned at ratio {r:g}") for gid, r in steps]
        n_groups = sum(1 for g in sens["groups"] if g.get("prunable", True))
        say(f"sensitivity analysis of {self.name}: {len(items)} evaluations to run "
            f"({n_groups} groups x {len(sens['ratios'])} ratios + baseline; "
            f"{sum(len(g['curve']) for g in sens['groups'])} already saved in {path})")

        def record(index: int, score: float, _pid: int | None) -> dict[str, Any]:
            if index < first:
                sens["baseline"] = score
                sens["images"] = take_images()  # how many images every score was made on
                sens["complete"] = not steps
                info: dict[str, Any] = {"step": "baseline", "score": score}
            else:
                gid, ratio = steps[index - first]
                record_step(sens, gid, ratio, score)
                info = {"group": gid, "ratio": ratio, "score": score}
            atomic_write_json(path, sens)
            return info

        self._run(pr, items, job, executor, progress, record)
        measure_whole_model(self, pr, sens, path, job, executor, progress)
        return sens

    # -- iterative prune ----------------------------------------------------------------------
    def _plan_preview(self, ratio: float, argument: str, channel_divisible: int,
                      excludes: Iterable[object] | None, strict: bool,
                      target: str = "macs") -> PlanPreview:
        ratio = check_removal_ratio(ratio, argument)
        check_divisible(channel_divisible)
        pr = self._pruner_for(excludes)
        sens = self.sensitivity(quiet=True)
        plan = self._allocate(pr, sens, ratio, channel_divisible, strict, argument, target)
        return self._preview(pr, sens, plan, ratio, target)

    def _prune(self, ratio: float | None, threshold: float | None,
               spec_path: str | os.PathLike | None, excludes: Iterable[object] | None,
               mode: str, channel_divisible: int, strict: bool, argument: str,
               target: str = "macs") -> Any:
        """The sparse (or slim) model at a MACs ratio, a drop threshold or a spec file."""
        given = {argument: ratio, "threshold": threshold, "spec_path": spec_path}
        if sum(v is not None for v in given.values()) != 1:
            raise ValueError(f"Expected exactly one of {argument}, threshold or spec_path. "
                             "Received: " + ", ".join(f"{k}={v!r}" for k, v in given.items()))
        if mode not in ("sparse", "slim"):
            raise ValueError(f"Expected mode 'sparse' or 'slim'. Received: mode={mode!r}")
        check_divisible(channel_divisible)
        check_target(target)
        if threshold is not None:
            check_threshold(threshold)
        elif ratio is not None:
            ratio = check_removal_ratio(ratio, argument)
        pr = self._pruner_for(excludes)
        if spec_path is not None:
            return self._build(pr, self._spec_plan(pr, spec_path), mode)
        sens = self.sensitivity()
        if threshold is not None:
            plan = self._threshold_plan(pr, sens, threshold, channel_divisible)
            path = self.workspace.spec(self.name, threshold=threshold)
            meta: dict[str, Any] = {"threshold": threshold}
        else:
            plan = self._allocate(pr, sens, ratio, channel_divisible, strict, argument, target)
            path = self.workspace.spec(self.name, ratio=ratio, target=target)
            meta = {"removal_ratio": ratio}
        preview = self._preview(pr, sens, plan, ratio or 0.0,
                                target if threshold is None else "macs")
        if preview.latency_ms is not None:
            meta.update(target=target, latency_ms={"original": preview.original_latency_ms,
                                                   "predicted": preview.latency_ms})
        self._write_spec(pr, plan, path, channel_divisible=channel_divisible,
                         predicted_score=preview.predicted_score, **meta)
        lat = ("" if preview.latency_ms is None else
               f"; predicted latency {preview.original_latency_ms:.2f} -> "
               f"{preview.latency_ms:.2f} ms")
        say(f"{self.name}: MACs {preview.original_macs:.3f}M -> {preview.macs:.3f}M "
            f"({preview.achieved_removal:.1%} removed){lat}; spec {path}")
        return self._build(pr, plan, mode)

    # -- one-step search ----------------------------------------------------------------------
    def _search(self, ratio: float, argument: str, job: ScoreJob, num_subnet: int,
                excludes: Iterable[object] | None, forced: bool, seed: int,
                channel_divisible: int, progress: Progress | None,
                executor: object = None, target: str = "macs") -> dict[str, Any]:
        """Sample ``num_subnet`` EagleEye candidates at ``ratio``, score each; resumable."""
        check_num_subnet(num_subnet)
        ratio = check_removal_ratio(ratio, argument)
        check_divisible(channel_divisible)
        pr = self._pruner_for(excludes)
        weights = pr.weights_digest()
        path = self.workspace.search(self.name, ratio, check_target(target))
        data = self._load_file(pr, path, "search", forced, weights, job.protocol)
        if data is None:
            data = self._new_search(pr, ratio, weights, seed, channel_divisible, num_subnet,
                                    job.protocol, target)
        elif data.get("complete") and self._stale(data, weights, job.protocol):
            return data
        seed, channel_divisible = data["seed"], data["channel_divisible"]
        data["num_subnet"] = max(int(num_subnet), len(data["candidates"]))
        for cid in range(len(data["candidates"]), num_subnet):
            data["candidates"].append(self._candidate(pr, ratio, seed, cid, channel_divisible,
                                                      data.get("target", "macs")))
        pending = [c for c in data["candidates"][:num_subnet] if c["score"] is None]
        items: list[ScoreItem] = ([(None, "the unpruned model")]
                                  if data["baseline"]["score"] is None else [])
        first = len(items)
        items += [(pr.plan_from_counts({int(g): n for g, n in c["kept_channels"].items()},
                                       self.criterion), f"candidate {c['id']}") for c in pending]
        say(f"one-step search of {self.name} at {ratio:.0%} {target} removal: {len(items)} "
            f"evaluations to run ({num_subnet} candidates + baseline; saved in {path})")
        data["complete"] = False
        atomic_write_json(path, data)

        def record(index: int, score: float, pid: int | None) -> dict[str, Any]:
            images = take_images()  # known when scored here by a scorer that says so
            if index < first:
                data["baseline"]["score"] = score
                data["baseline"]["images"] = images
                info: dict[str, Any] = {"step": "baseline", "score": score}
            else:
                cand = pending[index - first]
                cand["score"] = score
                cand["images"] = images or data["baseline"].get("images")  # the same images
                if pid is not None:
                    cand["worker_pid"] = pid
                info = {"candidate": cand["id"], "score": score}
            self._finish(data)
            atomic_write_json(path, data)
            return info

        self._run(pr, items, job, executor, progress, record)
        self._finish(data)
        atomic_write_json(path, data)
        return data

    def _search_result(self, ratio: float, argument: str,
                       target: str = "macs") -> dict[str, Any]:
        path = self.workspace.search(self.name, check_removal_ratio(ratio, argument),
                                     check_target(target))
        if not path.exists():
            how = ", target='latency'" if target == "latency" else ""
            raise WorkspaceError(f"No search at {path}: run runner.search(..., "
                                 f"{argument}={ratio}{how}) first.")
        return read_json(path, kind=SEARCH_KIND)

    def _prune_candidate(self, ratio: float, argument: str, index: int | None,
                         excludes: Iterable[object] | None, mode: str,
                         target: str = "macs") -> Any:
        """The best searched candidate (``index=None``) or candidate id ``index``."""
        if mode not in ("sparse", "slim"):
            raise ValueError(f"Expected mode 'sparse' or 'slim'. Received: mode={mode!r}")
        pr = self._pruner_for(excludes)
        data = self._search_result(ratio, argument, target)
        chosen, tag, plan = self._choose_candidate(pr, data, index)
        path = self.workspace.spec(self.name, ratio=ratio, candidate=tag, target=target)
        self._write_spec(pr, plan, path, removal_ratio=ratio, candidate=chosen["id"],
                         score=chosen["score"], channel_divisible=data["channel_divisible"])
        return self._build(pr, plan, mode)

"""The guide's TensorFlow/Keras pruning API (``tf_nndct``'s ``IterativePruningRunner``) over the
framework-neutral core, plus a one-step (EagleEye) search the reference lacks for Keras.

Same files as the PyTorch runners (``.sens``, ``.spec``, ``.search``, ``latest_spec``), the same
groups, allocation and rounding; ``ratio`` is the fraction of the original dense
architecture's MACs removed, landing within 1 point.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from uif_explorer.core.allocation import (
    check_removal_ratio,
)
from uif_explorer.core.plan import PruningPlan
from uif_explorer.core.pruner import BasePruner
from uif_explorer.core.runner import (
    MAX_SUBNETS,
    SEARCH_KIND,
    AnalysisError,
    PlanPreview,
    Progress,
    RunnerBase,
    check_callable,
    say,
)
from uif_explorer.core.sensitivity import (
    DEFAULT_RATIOS,
    new_sensitivity,
    pending_steps,
    record_step,
)
from uif_explorer.io.workspace import WorkspaceError, atomic_write_json, read_json
from uif_explorer.keras.apply import MaskedCopy, make_slim, make_sparse
from uif_explorer.keras.evaluation import check_score
from uif_explorer.keras.graph import (
    KerasCapture,
    capture,
    digest_weights,
    resolve_layer,
    weight_items,
)


def slice_stats(model: keras.Model, cap: KerasCapture) -> list[dict[str, np.ndarray] | None]:
    """Per slice of the graph: L1 and L2 magnitude of each position along its channel axis."""
    values: dict[str, np.ndarray] = {}
    for key, (path, wname) in cap.weight_keys.items():
        for name, v in weight_items(resolve_layer(model, path)):
            if name == wname:
                values[key] = np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float64)
    out: list[dict[str, np.ndarray] | None] = []
    for sl in cap.graph.slices:
        t = values.get(sl.param)
        if t is None:
            out.append(None)
            continue
        axes = tuple(d for d in range(t.ndim) if d != sl.dim)
        out.append({"l1": np.abs(t).sum(axis=axes), "l2": np.sqrt((t * t).sum(axis=axes))})
    return out


class KerasPruner(BasePruner):
    """Capture a Keras model once; offer plans, costs, sparse and slim models."""

    framework = "keras"

    def __init__(self, model: keras.Model, input_spec: Any,
                 excludes: Iterable[object] | None = None) -> None:
        self.model = model
        self.input_spec = input_spec
        self.capture = capture(model, input_spec, excludes)
        super().__init__(self.capture.graph)

    def slice_stats(self) -> list[dict[str, np.ndarray] | None]:
        return slice_stats(self.model, self.capture)

    def weights_digest(self) -> str:
        return digest_weights(self.model)

    def plan_for_removal(self, ratio: float, criterion: str = "l1",  # type: ignore[override]
                         channel_divisible: int = 2) -> PruningPlan:
        """Uniform group ratios bisected so that MACs drop by ``ratio`` (no analysis)."""
        return super().plan_for_removal(ratio, criterion, channel_divisible, argument="ratio")

    def sparse_model(self, plan: PruningPlan) -> keras.Model:
        return make_sparse(self.model, self.capture, plan)

    def slim_model(self, plan: PruningPlan) -> keras.Model:
        return make_slim(self.model, self.capture, plan)


class IterativePruningRunner(RunnerBase):
    """The guide's Keras runner: ``ana`` once, ``prune(ratio)`` to a sparse model, repeat after
    fine-tuning, then ``get_slim_model()``; plus ``search`` / ``prune_candidate`` (one-step).

    Args:
        model: a Functional or Sequential ``keras.Model`` (never mutated).
        input_spec: ``tf.TensorSpec((1, 28, 28, 1), tf.float32)`` or a shape tuple; MACs are
            counted at this shape (batch included).
        workdir: the workspace folder for ``.sens`` / ``.spec`` / ``.search`` files.
        name: file-name stem; default ``<ModelClass>-<6 hex of the graph digest>``.
        higher_is_better: whether a larger ``eval_fn`` result is better.
        criterion: channel importance, ``"l1"`` (default) or ``"l2"``, over the whole group.
        excludes: layer names or layers whose channels are never pruned.
    """

    def __init__(self, model: keras.Model, input_spec: Any, workdir: str | os.PathLike = ".vai",
                 name: str | None = None, higher_is_better: bool = True,
                 criterion: str = "l1", excludes: Iterable[object] | None = None) -> None:
        self.model = model
        self.input_spec = input_spec
        excludes = list(excludes) if excludes else []
        self._init_common(KerasPruner(model, input_spec, excludes), model, workdir, name,
                          excludes, higher_is_better, criterion)

    def _make_pruner(self, excludes: list) -> KerasPruner:
        return KerasPruner(self.model, self.input_spec, excludes)

    # -- facts ---------------------------------------------------------------------------

    @property
    def original_macs(self) -> float:
        """MACs of the model at ``input_spec``, in millions."""
        return self.pruner.original_macs / 1e6

    @staticmethod
    def _score(fn: Callable, model: keras.Model, args: tuple, what: str) -> float:
        try:
            value = fn(model, *args)
        except Exception as exc:
            raise AnalysisError(
                f"{what} raised {type(exc).__name__}: {exc}. Results saved so far are kept; "
                "fix it and run again to resume."
            ) from exc
        return check_score(value, what)

    # -- analysis ------------------------------------------------------------------------
    def ana(self, eval_fn: Callable, excludes: Iterable[object] | None = None,
            forced: bool = False, *, args: Sequence[Any] = (),
            ratios: Sequence[float] = DEFAULT_RATIOS,
            progress: Progress | None = None) -> dict[str, Any]:
        """Score the model with each group pruned alone at each ratio; resumable ``.sens``.

        ``eval_fn(model, *args)`` gets a masked *copy* (never the user's model) and returns a
        number. The file is written atomically after every evaluation, so an interrupted
        analysis resumes where it stopped; a finished one is reused (``forced=True`` redoes).
        """
        check_callable(eval_fn, "eval_fn")
        ratios = [float(r) for r in ratios]
        if not ratios or any(not 0 < r < 1 for r in ratios):
            raise ValueError(f"Expected sensitivity ratios in (0, 1). Received: ratios={ratios}")
        pr = self._pruner_for(excludes)
        weights = pr.weights_digest()
        path = self.workspace.sens(self.name)
        sens = self._load_sens(pr, forced, weights)
        if sens is not None and sens.get("complete"):
            if sens.get("weights_digest") != weights:
                say(f"reusing the finished analysis {path} (made on earlier weights of this "
                     "architecture, as the guide's iterative loop does); forced=True redoes it")
            return sens
        if sens is None:
            groups = [{"id": g.id, "name": g.name, "modules": g.modules,
                       "num_channels": g.num_channels, "prunable": g.prunable,
                       "excluded_reason": g.excluded_reason} for g in pr.graph.groups]
            sens = new_sensitivity(
                model=self.name, graph_digest=pr.graph.graph_digest(), weights_digest=weights,
                groups=groups, ratios=ratios, criterion=self.criterion,
                higher_is_better=self.higher_is_better,
            )
        steps = pending_steps(sens)
        total = len(steps) + (sens["baseline"] is None)
        n_groups = sum(1 for g in sens["groups"] if g.get("prunable", True))
        say(f"sensitivity analysis of {self.name}: {total} evaluations to run "
             f"({n_groups} groups x {len(sens['ratios'])} ratios + baseline; "
             f"{sum(len(g['curve']) for g in sens['groups'])} already saved in {path})")
        work = MaskedCopy(self.model, pr.capture)
        step, bar = self._progress(total, progress)
        done = 0
        try:
            if sens["baseline"] is None:
                sens["baseline"] = self._score(eval_fn, work.apply(None), tuple(args),
                                               "eval_fn")
                sens["complete"] = not steps
                atomic_write_json(path, sens)
                done += 1
                step(done, {"step": "baseline", "score": sens["baseline"]})
            for gid, ratio in steps:
                plan = pr.plan({gid: ratio}, self.criterion, channel_divisible=1)
                score = self._score(eval_fn, work.apply(plan), tuple(args), "eval_fn")
                record_step(sens, gid, ratio, score)
                atomic_write_json(path, sens)
                done += 1
                step(done, {"group": gid, "ratio": ratio, "score": score})
        finally:
            if bar is not None:
                bar.close()
        return sens

    # -- allocation ----------------------------------------------------------------------
    def plan(self, ratio: float, channel_divisible: int = 2,
             excludes: Iterable[object] | None = None) -> PlanPreview:
        """Preview ``prune(ratio)``: MACs, params and predicted score, building nothing."""
        ratio = check_removal_ratio(ratio, "ratio")
        pr = self._pruner_for(excludes)
        sens = self.sensitivity(quiet=True)
        plan = self._allocate(pr, sens, ratio, channel_divisible)
        return self._preview(pr, sens, plan, ratio)

    def prune(self, ratio: float | None = None, threshold: float | None = None,
              spec_path: str | os.PathLike | None = None,
              excludes: Iterable[object] | None = None, mode: str = "sparse",
              channel_divisible: int = 2, *, removal_ratio: float | None = None
              ) -> keras.Model:
        """A copy with ``ratio`` of the original MACs removed (sparse: same shapes, pruned
        channels zero and kept at zero through ``fit()``; ``mode='slim'``: smaller layers).

        Exactly one of ``ratio`` (alias ``removal_ratio``), ``threshold`` (relative score drop
        per group) or ``spec_path``. Writes ``<model>_ratio_<r>.spec`` (or
        ``_threshold_<t>``) and ``latest_spec``.
        """
        if removal_ratio is not None:
            if ratio is not None:
                raise ValueError("Pass ratio or removal_ratio, not both.")
            ratio = removal_ratio
        given = [v is not None for v in (ratio, threshold, spec_path)]
        if sum(given) != 1:
            raise ValueError("Expected exactly one of ratio, threshold or spec_path. Received: "
                             f"ratio={ratio!r}, threshold={threshold!r}, "
                             f"spec_path={spec_path!r}")
        if mode not in ("sparse", "slim"):
            raise ValueError(f"Expected mode 'sparse' or 'slim'. Received: mode={mode!r}")
        pr = self._pruner_for(excludes)
        if spec_path is not None:
            return self._build(pr, self._spec_plan(pr, spec_path), mode)
        sens = self.sensitivity()
        if threshold is not None:
            plan = self._threshold_plan(pr, sens, threshold, channel_divisible)
            path = self.workspace.spec(self.name, threshold=threshold)
            meta: dict[str, Any] = {"threshold": threshold}
        else:
            ratio = check_removal_ratio(ratio, "ratio")
            plan = self._allocate(pr, sens, ratio, channel_divisible)
            path = self.workspace.spec(self.name, ratio=ratio)
            meta = {"removal_ratio": ratio}
        preview = self._preview(pr, sens, plan, ratio or 0.0)
        self._write_spec(pr, plan, path, channel_divisible=channel_divisible,
                         predicted_score=preview.predicted_score, **meta)
        say(f"{self.name}: MACs {preview.original_macs:.3f}M -> {preview.macs:.3f}M "
             f"({preview.achieved_removal:.1%} removed); spec {path}")
        return self._build(pr, plan, mode)

    def get_slim_model(self, spec_path: str | os.PathLike | None = None) -> keras.Model:
        """The runner's model rebuilt with fewer filters per the spec (``latest_spec`` by
        default), kept weights copied. Load the fine-tuned sparse weights into the model
        first (the guide's ``model.load_weights(...)``)."""
        path = Path(spec_path) if spec_path is not None else self.workspace.latest_spec()
        return self.pruner.slim_model(self._spec_plan(self.pruner, path))

    # -- one-step search -----------------------------------------------------------------
    def search(self, calibration_fn: Callable | None = None, calib_args: Sequence[Any] = (),
               eval_fn: Callable | None = None, eval_args: Sequence[Any] = (),
               num_subnet: int = 10, ratio: float = 0.5,
               excludes: Iterable[object] | None = None, forced: bool = False, *,
               seed: int = 0, channel_divisible: int = 2,
               progress: Progress | None = None) -> dict[str, Any]:
        """One-step pruning: sample ``num_subnet`` EagleEye candidates that each remove
        ``ratio`` of the MACs (within 1 point), score each after ``calibration_fn`` (e.g.
        :func:`adaptive_bn_calibration`), save ``<model>_ratio_<r>.search`` after every one.
        """
        check_callable(eval_fn, "eval_fn")
        if calibration_fn is not None:
            check_callable(calibration_fn, "calibration_fn")
        if isinstance(num_subnet, bool) or not isinstance(num_subnet, (int, np.integer)) \
                or not 1 <= num_subnet <= MAX_SUBNETS:
            raise ValueError(f"Expected num_subnet, the number of candidates, between 1 and "
                             f"{MAX_SUBNETS:,}. Received: num_subnet={num_subnet!r}")
        ratio = check_removal_ratio(ratio, "ratio")
        pr = self._pruner_for(excludes)
        weights = pr.weights_digest()
        path = self.workspace.search(self.name, ratio)
        data = self._load_search(pr, path, forced, weights)
        if data is None:
            data = {
                "format_version": 1, "kind": SEARCH_KIND, "model": self.name,
                "framework": "keras", "graph_digest": pr.graph.graph_digest(),
                "weights_digest": weights, "removal_ratio": ratio, "seed": seed,
                "criterion": self.criterion, "channel_divisible": channel_divisible,
                "higher_is_better": self.higher_is_better,
                "baseline": {"score": None, "macs": pr.original_macs / 1e6,
                             "params": pr.original_params / 1e6},
                "groups": [{"id": g.id, "name": g.name, "num_channels": g.num_channels,
                            "prunable": g.prunable} for g in pr.graph.groups],
                "num_subnet": num_subnet, "candidates": [], "complete": False,
            }
        elif data.get("weights_digest") != weights and data.get("complete"):
            return data
        seed, channel_divisible = data["seed"], data["channel_divisible"]
        data["num_subnet"] = max(int(num_subnet), len(data["candidates"]))
        for cid in range(len(data["candidates"]), num_subnet):
            counts, achieved = self._sample_counts(pr, ratio, seed, cid, channel_divisible)
            plan = pr.plan_from_counts(counts, self.criterion)
            data["candidates"].append({
                "id": cid, "kept_channels": {str(g): n for g, n in counts.items()},
                "ratios": {str(g): round(1 - n / pr.graph.groups[g].num_channels, 4)
                           for g, n in counts.items()},
                "macs": pr.macs(plan) / 1e6, "params": pr.params(plan) / 1e6,
                "removal": round(achieved, 6), "score": None,
            })
        pending = [c for c in data["candidates"][:num_subnet] if c["score"] is None]
        total = len(pending) + (data["baseline"]["score"] is None)
        say(f"one-step search of {self.name} at {ratio:.0%} MACs removal: {total} "
             f"evaluations to run ({num_subnet} candidates + baseline; saved in {path})")
        data["complete"] = False
        atomic_write_json(path, data)
        work = MaskedCopy(self.model, pr.capture)
        step, bar = self._progress(total, progress)
        done = 0
        try:
            if data["baseline"]["score"] is None:
                data["baseline"]["score"] = self._score(eval_fn, work.apply(None),
                                                        tuple(eval_args), "eval_fn")
                atomic_write_json(path, data)
                done += 1
                step(done, {"step": "baseline", "score": data["baseline"]["score"]})
            for cand in pending:
                plan = pr.plan_from_counts({int(g): n for g, n in cand["kept_channels"].items()},
                                           self.criterion)
                model = work.apply(plan)  # masked copy: the same outputs as the slim model
                if calibration_fn is not None:
                    try:
                        calibration_fn(model, *calib_args)
                    except Exception as exc:
                        raise AnalysisError(
                            f"calibration_fn raised {type(exc).__name__}: {exc}. Results saved "
                            "so far are kept; fix it and run again to resume."
                        ) from exc
                cand["score"] = self._score(eval_fn, model, tuple(eval_args), "eval_fn")
                data["ranking"] = self._ranking(data)
                data["complete"] = all(c["score"] is not None for c in data["candidates"])
                atomic_write_json(path, data)
                done += 1
                step(done, {"candidate": cand["id"], "score": cand["score"]})
        finally:
            if bar is not None:
                bar.close()
        data["ranking"] = self._ranking(data)
        data["complete"] = all(c["score"] is not None for c in data["candidates"])
        atomic_write_json(path, data)
        return data

    def search_result(self, ratio: float) -> dict[str, Any]:
        path = self.workspace.search(self.name, check_removal_ratio(ratio, "ratio"))
        if not path.exists():
            raise WorkspaceError(f"No search at {path}: run runner.search(..., ratio={ratio}) "
                                 "first.")
        return read_json(path, kind=SEARCH_KIND)

    def prune_candidate(self, ratio: float, index: int | None = None,
                        excludes: Iterable[object] | None = None,
                        mode: str = "slim") -> keras.Model:
        """The best searched candidate (``index=None``) or candidate id ``index`` as a slim
        (default) or sparse model; writes ``<model>_ratio_<r>_<best|id>.spec``."""
        pr = self._pruner_for(excludes)
        data = self.search_result(ratio)
        chosen, tag, plan = self._choose_candidate(pr, data, index)
        path = self.workspace.spec(self.name, ratio=ratio, candidate=tag)
        self._write_spec(pr, plan, path, removal_ratio=ratio, candidate=chosen["id"],
                         score=chosen["score"], channel_divisible=data["channel_divisible"])
        return self._build(pr, plan, mode)

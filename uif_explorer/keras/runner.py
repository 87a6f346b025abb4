"""The guide's TensorFlow/Keras pruning API (``tf_nndct``'s ``IterativePruningRunner``) over the
framework-neutral core, plus a one-step (EagleEye) search the reference lacks for Keras.

Same files as the PyTorch runners (``.sens``, ``.spec``, ``.search``, ``latest_spec``), the same
groups, allocation and rounding; ``ratio`` is the fraction of the original dense
architecture's MACs removed, landing within 1 point.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from uif_explorer.core.latency import DEFAULT_POINTS, LatencyModel
from uif_explorer.core.plan import PruningPlan
from uif_explorer.core.pruner import BasePruner
from uif_explorer.core.refinement import Refinement, refine_after_search
from uif_explorer.core.runner import (
    AnalysisError,
    PlanPreview,
    Progress,
    RunnerBase,
    ScoreItem,
)
from uif_explorer.core.scores import ScoreJob
from uif_explorer.core.sensitivity import DEFAULT_RATIOS
from uif_explorer.keras.apply import MaskedCopy, make_slim, make_sparse
from uif_explorer.keras.graph import (
    KerasCapture,
    capture,
    digest_weights,
    resolve_layer,
    weight_items,
)

__all__ = ["AnalysisError", "IterativePruningRunner", "KerasPruner", "PlanPreview",
           "user_model_name"]


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
        return self.uniform_plan(ratio, criterion, channel_divisible, argument="ratio")

    def sparse_model(self, plan: PruningPlan) -> keras.Model:
        return make_sparse(self.model, self.capture, plan)

    def slim_model(self, plan: PruningPlan) -> keras.Model:
        return make_slim(self.model, self.capture, plan)


def user_model_name(model: keras.Model) -> str | None:
    """``model.name`` when the user set it (``keras.Sequential(..., name="mnist")``), None for
    Keras' automatic names ("sequential", "functional_3", ...), which change from one model
    object to the next and so cannot name workspace files."""
    name = getattr(model, "name", None)
    if not isinstance(name, str) or not name:
        return None
    auto = {"sequential", "functional", "model", _snake(type(model).__name__)}
    base = re.sub(r"_\d+$", "", name)
    return None if base in auto else name


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class IterativePruningRunner(RunnerBase):
    """The guide's Keras runner: ``ana`` once, ``prune(ratio)`` to a sparse model, repeat after
    fine-tuning, then ``get_slim_model()``; plus ``search`` / ``prune_candidate`` (one-step).

    Args:
        model: a Functional or Sequential ``keras.Model`` (never mutated).
        input_spec: ``tf.TensorSpec((1, 28, 28, 1), tf.float32)`` or a shape tuple; MACs are
            counted at this shape (batch included).
        workdir: the workspace folder for ``.sens`` / ``.spec`` / ``.search`` files.
        name: file-name stem; default: a ``model.name`` the user set (the guide's
            ``mnist``), else ``<ModelClass>-<6 hex of the graph digest>``.
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
        self._init_common(KerasPruner(model, input_spec, excludes), model, workdir,
                          name or user_model_name(model), excludes, higher_is_better,
                          criterion)

    def _make_pruner(self, excludes: list) -> KerasPruner:
        return KerasPruner(self.model, self.input_spec, excludes)

    latency_runtime = "keras"  # the runtime target='latency' is timed in (eager calls)
    latency_points = DEFAULT_POINTS  # channel counts timed per layer and side

    def _measure_latency(self, pr: KerasPruner, path: Path) -> LatencyModel:
        from uif_explorer.keras.latency import keras_latency_model

        return keras_latency_model(pr, self.model, self.input_spec, path, self.latency_runtime,
                                   max_points=self.latency_points)

    def _score_plans(self, pr: KerasPruner, items: Sequence[ScoreItem], job: ScoreJob,
                     executor: object = None) -> Iterator[tuple[int, float, int | None]]:
        """In this process, on one masked copy (the same outputs as sparse and slim models)."""
        work = MaskedCopy(self.model, pr.capture)
        for index, (plan, what) in enumerate(items):
            yield index, job.score(work.apply(plan), what), None

    @property
    def original_macs(self) -> float:
        """MACs of the model at ``input_spec``, in millions."""
        return self.pruner.original_macs / 1e6

    # -- the guide's iterative loop -------------------------------------------------------
    def ana(self, eval_fn: Callable, excludes: Iterable[object] | None = None,
            forced: bool = False, *, args: Sequence[Any] = (),
            ratios: Sequence[float] = DEFAULT_RATIOS, calibration_fn: Callable | None = None,
            calib_args: Sequence[Any] = (), progress: Progress | None = None) -> dict[str, Any]:
        """Score the model with each group pruned alone at each ratio; resumable ``.sens``.

        ``eval_fn(model, *args)`` gets a masked *copy* (never the user's model) and returns a
        number; ``calibration_fn(model, *calib_args)``, when given, re-estimates BatchNorm
        statistics of every scored model first (e.g. :func:`adaptive_bn_calibration`). The
        file is written atomically after every evaluation, so an interrupted analysis resumes
        where it stopped; a finished one is reused (``forced=True`` redoes).
        """
        return self._analyse(eval_fn, args, excludes, forced, ratios, calibration_fn,
                             calib_args, progress=progress)

    def plan(self, ratio: float, channel_divisible: int = 2,
             excludes: Iterable[object] | None = None, *, strict: bool = True,
             target: str = "macs") -> PlanPreview:
        """Preview ``prune(ratio)``: MACs, params and predicted score, building nothing;
        ``target='latency'`` adds the predicted latency."""
        return self._plan_preview(ratio, "ratio", channel_divisible, excludes, strict, target)

    def prune(self, ratio: float | None = None, threshold: float | None = None,
              spec_path: str | os.PathLike | None = None,
              excludes: Iterable[object] | None = None, mode: str = "sparse",
              channel_divisible: int = 2, *, removal_ratio: float | None = None,
              strict: bool = False, target: str = "macs") -> keras.Model:
        """A copy with ``ratio`` of the original MACs removed (sparse: same shapes, pruned
        channels zero and kept at zero through ``fit()``; ``mode='slim'``: smaller layers).

        Exactly one of ``ratio`` (alias ``removal_ratio``), ``threshold`` (relative score drop
        per group) or ``spec_path``. Writes ``<model>_ratio_<r>.spec`` (or
        ``_threshold_<t>``) and ``latest_spec``. The ratio is an approximate target: when
        channel rounding cannot land within 1 point, the closest plan is returned with a
        warning (``strict=True``: an error). ``target='latency'``: the ratio is a fraction of
        this machine's predicted latency (``latency_runtime``, Keras eager calls; the table
        is measured once per machine and model and saved in the workspace), kept counts
        rounded up to the widths the table says are fast.
        """
        if removal_ratio is not None:
            if ratio is not None:
                raise ValueError("Pass ratio or removal_ratio, not both. Received: "
                                 f"ratio={ratio!r}, removal_ratio={removal_ratio!r}")
            ratio = removal_ratio
        return self._prune(ratio, threshold, spec_path, excludes, mode, channel_divisible,
                           strict, "ratio", target)

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
               progress: Progress | None = None, target: str = "macs",
               refine: Refinement | None = None) -> dict[str, Any]:
        """One-step pruning: sample ``num_subnet`` EagleEye candidates that each remove
        ``ratio`` of the MACs (within 1 point), score each after ``calibration_fn`` (e.g.
        :func:`adaptive_bn_calibration`), save ``<model>_ratio_<r>.search`` after every one.
        ``refine=Refinement(finetune_args=(x, y), ...)``: successive halving with short
        fine-tunes (:mod:`uif_explorer.core.refinement`); ``prune_candidate`` builds its pick.
        """
        job = ScoreJob.of(eval_fn, eval_args, calibration_fn, calib_args,
                          args_name="eval_args")
        data = self._search(ratio, "ratio", job, num_subnet, excludes, forced, seed,
                            channel_divisible, progress, None, target)
        return refine_after_search(self, data, job, refine, excludes, progress)

    def search_result(self, ratio: float, target: str = "macs") -> dict[str, Any]:
        return self._search_result(ratio, "ratio", target)

    def prune_candidate(self, ratio: float, index: int | None = None,
                        excludes: Iterable[object] | None = None,
                        mode: str = "slim", *, target: str = "macs") -> keras.Model:
        """The best searched candidate (``index=None``) or candidate id ``index`` as a slim
        (default) or sparse model; writes ``<model>_ratio_<r>_<best|id>.spec``."""
        return self._prune_candidate(ratio, "ratio", index, excludes, mode, target)

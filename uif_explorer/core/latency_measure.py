"""How a latency table is measured and how a latency plan is checked against the real model.

The backend-neutral half of measuring (:mod:`uif_explorer.core.latency` holds the table and the
model that predicts from it): the per-op sweeps every backend runs, the half-width probe that
splits the overhead, the timer both backends use, and the loop that corrects a latency plan on
whole-model timings of its slim model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uif_explorer.core.latency import (
    DEFAULT_POINTS,
    PROBE_RATIO,
    LatencyTable,
    OpCurve,
    count_grid,
)
from uif_explorer.core.plan import CostModel, PlanError, PruningPlan


@dataclass
class OpShape:
    """How a backend times one counted op: its full channels, conv groups, output size and
    ``timed(c_in, c_out, groups) -> seconds`` of the op rebuilt alone at those channels.
    ``multiplier``: outputs per input channel of a depthwise op."""

    c_in: int
    c_out: int
    groups: int
    out_elems: int
    timed: Callable[[int, int, int], float]
    multiplier: int = 1


Progress = Callable[[int, int, str], None]  # (done, total, op name)


def measure_curves(graph: Any, cost: CostModel, shape_of: Callable[[Any], OpShape | None],
                   max_points: int = DEFAULT_POINTS, progress: Progress | None = None
                   ) -> list[OpCurve | None]:
    """Every counted op of ``graph`` timed at full width and in its two sweeps (one for a
    depthwise op: inputs = outputs / multiplier = groups); ``shape_of(op)`` is the backend's
    view of the op, None for an op it cannot time alone (left to the overhead)."""
    full_in, full_out = cost.op_counts_of_vector(cost.full_counts)
    ops = graph.mac_ops
    curves: list[OpCurve | None] = []
    for done, (op, fi, fo) in enumerate(zip(ops, full_in, full_out, strict=True)):
        sh = shape_of(op)
        if sh is None:
            curves.append(None)
            continue
        fi, fo, g, m = int(fi), int(fo), sh.groups, sh.multiplier
        curve = OpCurve(op.name, fi, fo, sh.timed(sh.c_in, sh.c_out, g),
                        out_elems=sh.out_elems)
        if op.depthwise:
            curve.out_counts = count_grid(fo, max_points, multiple=m)
            curve.out_times = [sh.timed(c // m, c, c // m) for c in curve.out_counts]
        else:
            if fi > 1 and fi * g == sh.c_in:
                curve.in_counts = count_grid(fi, max_points)
                curve.in_times = [sh.timed(c * g, sh.c_out, g) for c in curve.in_counts]
            curve.out_counts = count_grid(fo, max_points, multiple=g)
            curve.out_times = [sh.timed(sh.c_in, c, g) for c in curve.out_counts]
        curves.append(curve)
        if progress is not None:
            progress(done + 1, len(ops), op.name)
    return curves


def add_probe(table: LatencyTable, pruner: Any, time_model: Callable[[Any], float]) -> None:
    """Time the whole model once more as a uniformly narrowed slim model (``PROBE_RATIO`` of
    each group removed): the second point that splits the overhead (see :class:`LatencyModel`)."""
    if not pruner.graph.prunable_groups:
        return
    probe = pruner.plan(PROBE_RATIO)
    table.probe_total = time_model(pruner.slim_model(probe))
    table.probe_counts = {str(gid): len(k) for gid, k in probe.kept.items()}


def best_seconds(fn: Callable[[], object], min_time: float = 0.01, min_calls: int = 10,
                 warmup: int = 2) -> float:
    """Seconds of the fastest of at least ``min_calls`` calls of ``fn`` lasting ``min_time``
    in all, after ``warmup`` calls. The minimum because on a shared machine other work only
    ever adds time, and single calls because a preempted call then spoils one sample, not a
    block (both backends time with this)."""
    import time

    for _ in range(warmup):
        fn()
    best, n, spent = float("inf"), 0, 0.0
    while n < min_calls or spent < min_time:
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        best, n, spent = min(best, took), n + 1, spent + took
    return best


@dataclass
class CalibrationStep:
    """One round of :func:`calibrate_to_measured`: the predicted-latency target asked for,
    what the table predicted for its plan and what the slim model measured."""

    asked: float
    predicted: float
    measured: float


def calibrate_to_measured(plan_at: Callable[[float], PruningPlan],
                          predicted: Callable[[PruningPlan], float],
                          measure: Callable[[PruningPlan], float], target: float, *,
                          rounds: int = 4, tolerance: float = 0.05, ceiling: float = 0.95
                          ) -> tuple[PruningPlan, list[CalibrationStep]]:
    """The plan whose *measured* latency removal is closest to ``target``: plan at a
    predicted-latency target, build and time the slim model, correct the target, repeat.

    Why: the table predicts each layer alone plus a two-point overhead model; what it cannot
    see (cache reuse between consecutive layers, allocator and dispatch costs that do not
    scale with channels) makes the whole slim model faster or slower than predicted by a
    roughly constant factor over nearby plans. The first round asks for ``target``; later
    rounds use the secant through the last two (asked, measured) points (the first
    correction scales the ask by target / measured). Stops when the measured speed-up is
    within ``tolerance`` of ``1 / (1 - target)``; an ask the allocation cannot reach
    (:class:`PlanError`) lowers the ceiling and backs off halfway. ``measure(plan)`` returns
    the measured removal ``1 - t_slim / t_original`` (timed against the original in the same
    run). Raises :class:`PlanError` when not even ``target`` itself can be planned.
    """
    goal = 1.0 / (1.0 - target)
    asked, steps, best, misses = target, [], None, 0
    while len(steps) < max(1, rounds):
        try:
            plan = plan_at(asked)
        except PlanError:  # beyond what the allocation can remove: back off halfway
            misses += 1
            if misses > 6:
                break
            ceiling = asked - 1e-3
            asked = (asked + (steps[-1].asked if steps else 0.0)) / 2
            continue
        step = CalibrationStep(asked, predicted(plan), measure(plan))
        steps.append(step)
        off = abs((1.0 / max(1e-9, 1.0 - step.measured)) / goal - 1.0)
        if best is None or off < best[0]:
            best = (off, plan)
        if off <= tolerance:
            break
        if len(steps) == 1 or steps[-1].measured == steps[-2].measured:
            nxt = asked * target / max(step.measured, 1e-3)
        else:
            a, b = steps[-2], steps[-1]
            nxt = b.asked + (target - b.measured) * (b.asked - a.asked) / (b.measured - a.measured)
        asked = float(min(ceiling, max(0.01, nxt)))
        if any(abs(s.asked - asked) < 1e-4 for s in steps):
            break
    if best is None:
        raise PlanError(f"Cannot plan {target:.1%} of the predicted latency removed; choose a "
                        f"smaller ratio. Received: ratio={target}")
    return best[1], steps

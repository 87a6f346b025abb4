"""Turning a MACs target into per-group ratios: bisection that lands, EagleEye sampling.

Framework-neutral: works on a :class:`~uif_explorer.core.plan.CostModel` and a function that
builds a plan from per-group ratios, so the PyTorch and Keras backends share it.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from uif_explorer.core.plan import CostModel, PlanError, PruningPlan

TARGET_TOLERANCE = 0.01
MAX_GROUP_RATIO = 0.95
SAMPLE_MIN_RATIO, SAMPLE_MAX_RATIO = 0.05, 0.9


def check_removal_ratio(removal_ratio: float, name: str = "removal_ratio") -> float:
    ok = (isinstance(removal_ratio, (int, float, np.floating)) and not isinstance(
        removal_ratio, bool) and not math.isnan(removal_ratio))
    if not ok or not 0.0 < float(removal_ratio) < 1.0:
        raise PlanError(
            f"Expected {name}, the fraction of MACs to remove, in (0, 1). "
            f"Received: {name}={removal_ratio!r}"
        )
    return float(removal_ratio)


def bisect_plan(
    cost: CostModel,
    ratios_at: Callable[[float], dict[int, float]],
    plan_of: Callable[[dict[int, float]], PruningPlan],
    target: float,
    hi: float,
    tolerance: float = TARGET_TOLERANCE,
    steps: int = 50,
    quantum: Mapping[int, float] | None = None,
    counts_of: Callable[[dict[int, float]], dict[int, int]] | None = None,
    strict: bool = True,
    removal_of_counts: Callable[[dict[int, int]], float] | None = None,
    what: str = "MACs",
) -> PruningPlan:
    """A plan whose MACs removal is within ``tolerance`` of ``target``.

    ``ratios_at(x)`` gives per-group ratios that grow with x. Bisection halves the bracket
    every step, so it cannot stall (the reference's can). Channel rounding makes removal a
    step function of x: when the bracket closes on a step, the groups that differ between its
    two ends are switched one at a time, which lands between the steps; if that is still too
    coarse, single groups are moved by one rounding ``quantum`` while that gets closer.

    With ``counts_of`` (ratios -> kept channels per group) and a graph whose MACs depend only
    on counts, candidates are costed without building plans; one plan is built at the end.
    ``strict=False`` returns the closest plan when rounding cannot land (see
    :func:`check_landing`); an unreachable target is an error either way.
    ``removal_of_counts`` (with ``counts_of``) replaces the MACs cost by another one, such as
    predicted latency (``what`` names it in errors).
    """
    ids = sorted(ratios_at(hi))
    removal = (_removal_of_vectors(cost, ids, plan_of, counts_of) if removal_of_counts is None
               else lambda r: removal_of_counts(counts_of(_as_dict(ids, r))))

    def at(x: float) -> np.ndarray:
        ratios = ratios_at(x)
        return np.array([ratios.get(gid, 0.0) for gid in ids], dtype=float)

    r = search_ratios(removal, at, target, hi, tolerance, steps, _quantum_vector(quantum, ids),
                      strict, what)
    return plan_of(_as_dict(ids, r))


def _as_dict(ids: Sequence[int], r: np.ndarray) -> dict[int, float]:
    return {gid: float(v) for gid, v in zip(ids, r, strict=True)}


def _quantum_vector(quantum: Mapping[int, float] | None, ids: Sequence[int]
                    ) -> np.ndarray | None:
    return None if not quantum else np.array([quantum.get(gid, np.nan) for gid in ids])


def _removal_of_vectors(
    cost: CostModel, ids: Sequence[int], plan_of: Callable[[dict[int, float]], PruningPlan],
    counts_of: Callable[[dict[int, float]], dict[int, int]] | None,
) -> Callable[[np.ndarray], float]:
    """MACs removal of a ratio vector (one entry per id), costed by counts when the graph's
    MACs depend on counts alone, else by building the plan."""
    fast = counts_of is not None and cost.count_model_exact

    def removal(r: np.ndarray) -> float:
        ratios = _as_dict(ids, r)
        macs = cost.macs_of_counts(counts_of(ratios)) if fast else cost.macs(plan_of(ratios))
        return 1.0 - macs / max(1, cost.original_macs)

    return removal


def search_ratios(
    removal: Callable[[np.ndarray], float],
    ratios_at: Callable[[float], np.ndarray],
    target: float,
    hi: float,
    tolerance: float = TARGET_TOLERANCE,
    steps: int = 40,
    quantum: np.ndarray | None = None,
    strict: bool = True,
    what: str = "MACs",
) -> np.ndarray:
    """Ratios (one per group, an array) whose ``removal`` is within ``tolerance`` of target.

    Arrays rather than dicts because the one-step sampler calls this thousands of times
    (see :func:`bisect_plan` for the method); a NaN quantum leaves that group alone.
    ``strict=False`` returns the closest ratios found when rounding cannot land.
    """
    reach = removal(ratios_at(hi))
    if reach < target - tolerance:
        raise PlanError(
            f"Cannot remove {target:.1%} of the {what}: pruning every prunable group as far as "
            f"allowed removes {reach:.1%}. Choose a smaller ratio or exclude fewer layers."
        )
    lo = 0.0
    best_err, best = float("inf"), None
    for _ in range(steps):
        mid = (lo + hi) / 2
        ratios = ratios_at(mid)
        r = removal(ratios)
        if abs(r - target) < best_err:
            best_err, best = abs(r - target), ratios
        if best_err <= tolerance / 4:
            return best
        if r < target:
            lo = mid
        else:
            hi = mid
    low_r, high_r = ratios_at(lo), ratios_at(hi)
    mixed = low_r.copy()
    for i in np.flatnonzero(high_r != low_r):
        mixed[i] = high_r[i]
        r = removal(mixed)
        if abs(r - target) < best_err:
            best_err, best = abs(r - target), mixed.copy()
        if r >= target:
            break
    while quantum is not None and best is not None and best_err > tolerance / 4:
        trial = None
        for i, q in enumerate(quantum):
            if np.isnan(q):
                continue
            for sign in (1.0, -1.0):
                ratios = best.copy()
                ratios[i] = min(MAX_GROUP_RATIO, max(0.0, ratios[i] + sign * q))
                err = abs(removal(ratios) - target)
                if err < best_err and (trial is None or err < trial[0]):
                    trial = (err, ratios)
        if trial is None:
            break
        best_err, best = trial
    if best is None or (strict and best_err > tolerance):
        closest = removal(best) if best is not None else 0.0
        raise PlanError(
            f"Could not land within {tolerance:.0%} of removing {target:.1%} of the {what} "
            f"(closest: {closest:.1%}): channel rounding is too coarse for this model at this "
            "ratio. Try a nearby ratio."
        )
    return best


def check_landing(achieved: float, target: float, *, channel_divisible: int, strict: bool,
                  argument: str = "removal_ratio",
                  tolerance: float = TARGET_TOLERANCE, what: str = "MACs") -> None:
    """The guide calls the ratio "only an approximate target": off by more than ``tolerance``
    is a warning naming the achieved ratio, or with ``strict=True`` an error."""
    if abs(achieved - target) <= tolerance:
        return
    tries = "a nearby ratio" + (f" or channel_divisible=1 (it is {channel_divisible})"
                                if channel_divisible > 1 else "")
    if strict:
        raise PlanError(
            f"Could not land within {tolerance:.0%} of removing {target:.1%} of the {what} "
            f"(closest: {achieved:.1%}): channel rounding is too coarse for this model. "
            f"Try {tries}, or strict=False to accept the closest plan."
        )
    warnings.warn(
        f"{argument}={target:g} is an approximate target: channel rounding removes "
        f"{achieved:.1%} of the {what}, the closest plan the allocation found (for a closer "
        f"result try {tries}; strict=True makes this an error).", UserWarning,
        stacklevel=_caller_level())


def _caller_level() -> int:
    """The stack level of the first frame outside this package (the user's call)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def eagleeye_shape(rng: np.random.Generator, n_groups: int, target: float) -> np.ndarray:
    """Per-group ratios ~ N(mu, sigma) clipped to [0.05, 0.9] (EagleEye's distribution).

    mu ~ U(r/2, r) for r >= 0.5, else U(0, r); sigma ~ U(0, 0.3). The sample is a *shape*: the
    caller rescales it so the MACs target is met exactly (the reference rejects most samples).
    """
    r = target
    mu = rng.uniform(r / 2, r, n_groups) if r >= 0.5 else rng.uniform(0, r, n_groups)
    sigma = rng.uniform(0, 0.3, n_groups)
    return np.clip(rng.normal(mu, sigma), SAMPLE_MIN_RATIO, SAMPLE_MAX_RATIO)


def sample_ratio_vector(
    removal: Callable[[np.ndarray], float],
    n_groups: int,
    target: float,
    seed: int,
    candidate: int,
    quantum: np.ndarray | None = None,
    attempts: int = 50,
) -> np.ndarray:
    """Ratios of candidate ``candidate`` of a seeded search (the same every time it is drawn):
    EagleEye's shape, rescaled by bisection so the MACs land on the target."""
    if n_groups == 0:
        raise PlanError("No channel group of this model can be pruned; the groups table "
                        "gives the reason each one is frozen.")
    last: Exception | None = None
    for attempt in range(attempts):
        rng = np.random.default_rng([seed, candidate, attempt])
        shape = eagleeye_shape(rng, n_groups, target)

        def ratios_at(s: float, shape: np.ndarray = shape) -> np.ndarray:
            return np.minimum(MAX_GROUP_RATIO, s * shape)

        try:
            return search_ratios(removal, ratios_at, target, MAX_GROUP_RATIO / shape.min(),
                                 quantum=quantum)
        except PlanError as exc:
            last = exc
    raise PlanError(f"Could not sample a candidate removing {target:.1%} of the MACs within 1 "
                    f"point: {last}")


def sample_plan(
    cost: CostModel,
    group_ids: Sequence[int],
    plan_of: Callable[[dict[int, float]], PruningPlan],
    target: float,
    seed: int,
    candidate: int,
    quantum: Mapping[int, float] | None = None,
    attempts: int = 50,
    counts_of: Callable[[dict[int, float]], dict[int, int]] | None = None,
) -> PruningPlan:
    """Candidate ``candidate`` of a seeded search as a plan: :func:`sample_ratio_vector` keyed
    by group id, costed by plans or counts."""
    ids = list(group_ids)
    removal = _removal_of_vectors(cost, ids, plan_of, counts_of)
    r = sample_ratio_vector(removal, len(ids), target, seed, candidate,
                            _quantum_vector(quantum, ids), attempts)
    return plan_of(_as_dict(ids, r))

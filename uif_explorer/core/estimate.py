"""The instant estimate of a plan's score, corrected by whole-model plans actually measured.

The additive prediction (:func:`~uif_explorer.core.sensitivity.predicted_score`, the sum of
single-group drops) ignores that pruning many groups at once hurts far more than the sum of
each alone: on ResNet-20 it was 63 points off at 40 % of MACs removed. The analysis therefore
also measures a few whole-model plans (``.sens`` ``whole_model``; measured previews add more),
and the estimate becomes the additive prediction plus the *residual* (measured minus additive)
interpolated in MACs removed, zero at 0 % removed. How good that is on this model is said
in numbers: the leave-one-out error over the measured plans ("typically within k points").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from uif_explorer.core.sensitivity import ratio_key

WHOLE_MODEL_RATIOS = (0.2, 0.4, 0.6)  # MACs removed by the plans the analysis measures

# (MACs removed, additive prediction, measured score) of one whole-model plan
Point = tuple[float, float, float]


# -- the .sens record -----------------------------------------------------------------------
def new_whole_model(ratios: Sequence[float] = WHOLE_MODEL_RATIOS) -> dict[str, Any]:
    """The ``whole_model`` entry of a new ``.sens``: ratios to measure, none measured yet."""
    return {"ratios": [float(r) for r in ratios], "points": []}


def pending_whole_model(sens: Mapping[str, Any]) -> list[float]:
    """Whole-model ratios not measured yet (none for files made before this existed)."""
    whole = sens.get("whole_model") or {}
    done = {ratio_key(p["ratio"]) for p in whole.get("points", [])}
    return [r for r in whole.get("ratios", []) if ratio_key(r) not in done]


def record_whole_model(sens: dict[str, Any], ratio: float, achieved: float,
                       additive: float | None, score: float | None, images: int | None,
                       error: str | None = None) -> None:
    """Save one measured whole-model plan (or why it could not be made: ``error``)."""
    points = [p for p in sens["whole_model"]["points"] if ratio_key(p["ratio"]) != ratio_key(ratio)]
    point: dict[str, Any] = {"ratio": float(ratio), "achieved_removal": float(achieved),
                             "additive": additive, "score": score, "images": images}
    if error:
        point["error"] = error
    sens["whole_model"]["points"] = sorted(points + [point], key=lambda p: p["ratio"])


def sens_points(sens: Mapping[str, Any]) -> list[Point]:
    whole = sens.get("whole_model") or {}
    return [(float(p["achieved_removal"]), float(p["additive"]), float(p["score"]))
            for p in whole.get("points", [])
            if p.get("score") is not None and p.get("additive") is not None]


def measured_points(points: Iterable[Mapping[str, Any]]) -> list[Point]:
    """Points of ``<model>.measured.json`` (see :mod:`uif_explorer.core.measure`)."""
    return [(float(p["achieved_removal"]), float(p["additive"]), float(p["score"]))
            for p in points if p.get("additive") is not None and p.get("score") is not None]


# -- the correction ---------------------------------------------------------------------------
def _dedupe(points: Iterable[Point]) -> list[Point]:
    """One point per MACs removed (to 0.1 %), the latest wins; sorted by MACs removed."""
    by_removal = {round(a, 3): (a, add, s) for a, add, s in points}
    return sorted(by_removal.values())


def corrected(points: Sequence[Point], achieved: float, additive: float) -> float:
    """``additive`` plus the residual interpolated at ``achieved`` (linear between measured
    plans from (0, 0); past the last one the residual is held, not extrapolated: an unseen
    cliff is not invented). When every measured score is >= 0 (accuracy, agreement, a loss)
    the estimate is not allowed below 0: far past the measured plans the sum of single-group
    drops can run to -70 %, a score nobody can get (bench/quality.py)."""
    pts = _dedupe(points)
    knots = [(0.0, 0.0)] + [(a, s - add) for a, add, s in pts]
    value = additive + knots[-1][1]
    for (a0, r0), (a1, r1) in zip(knots, knots[1:], strict=False):
        if achieved <= a1:
            w = (achieved - a0) / (a1 - a0) if a1 > a0 else 1.0
            value = additive + r0 + w * (r1 - r0)
            break
    if pts and all(s >= 0 for _, _, s in pts):
        value = max(value, 0.0)
    return value


def leave_one_out_error(points: Sequence[Point]) -> float | None:
    """Mean absolute error predicting each measured plan from the others (None below 2)."""
    pts = _dedupe(points)
    if len(pts) < 2:
        return None
    errors = [abs(corrected(pts[:i] + pts[i + 1:], a, add) - s)
              for i, (a, add, s) in enumerate(pts)]
    return sum(errors) / len(errors)


@dataclass(frozen=True)
class Estimate:
    """An instant estimate, what it rests on and how far off it typically is here."""

    value: float | None
    error: float | None  # leave-one-out mean absolute error, score units
    points: int  # measured whole-model plans it was corrected with
    additive: float | None

    @property
    def label(self) -> str:
        if self.value is None:
            return "estimate unavailable (no analysis)"
        if self.points == 0:
            return "estimate (sum of single-group drops; no whole-model plan measured)"
        if self.error is None:
            return f"estimate (corrected by {self.points} measured plan)"
        return (f"estimate, typically within {self.error:.1f} points here "
                f"(leave-one-out over {self.points} measured plans)")


def estimate(additive: float | None, achieved: float, points: Sequence[Point]) -> Estimate:
    """The corrected estimate at ``achieved`` MACs removed from ``points``."""
    pts = _dedupe(points)
    if additive is None:
        return Estimate(None, None, len(pts), None)
    if not pts:
        return Estimate(additive, None, 0, additive)
    return Estimate(corrected(pts, achieved, additive), leave_one_out_error(pts), len(pts),
                    additive)

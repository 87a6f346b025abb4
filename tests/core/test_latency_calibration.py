"""The measured-latency correction of a latency plan (core, no framework).

A stand-in for the slim model's timing: the whole model measures a fixed fraction of what the
per-layer table predicts (the non-additive effects the table cannot see), and the allocation
cannot go past a ceiling. The loop must find the ask whose *measured* removal hits the target.
"""

from __future__ import annotations

import pytest

from uif_explorer.core.latency_measure import calibrate_to_measured
from uif_explorer.core.plan import PlanError, PruningPlan


def _plan_at(limit: float):
    def plan_at(r: float) -> PruningPlan:
        if r > limit:
            raise PlanError(f"Cannot remove {r:.1%}")
        return PruningPlan(ratios={0: r})
    return plan_at


def _predicted(plan: PruningPlan) -> float:
    return plan.ratios[0]


def test_correction_reaches_the_measured_target_within_5_percent() -> None:
    measured = []

    def measure(plan: PruningPlan) -> float:  # the slim model gains 75 % of the prediction
        m = 0.75 * plan.ratios[0]
        measured.append(m)
        return m

    plan, steps = calibrate_to_measured(_plan_at(0.9), _predicted, measure, 0.5)
    assert steps[0].asked == 0.5 and steps[0].measured == pytest.approx(0.375)
    assert len(steps) <= 4
    assert (1 / (1 - measure(plan))) / 2.0 == pytest.approx(1.0, abs=0.05)
    assert plan.ratios[0] > 0.6  # asked for more predicted removal than the target


def test_an_unreachable_ask_backs_off_and_returns_the_closest_plan() -> None:
    plan, steps = calibrate_to_measured(_plan_at(0.55), _predicted,
                                        lambda p: 0.5 * p.ratios[0], 0.5, rounds=4)
    assert all(s.asked <= 0.55 for s in steps)
    assert plan.ratios[0] == max(s.asked for s in steps)  # the closest it could get
    with pytest.raises(PlanError, match="Cannot plan"):
        calibrate_to_measured(_plan_at(-1.0), _predicted, lambda p: 0.0, 0.5)

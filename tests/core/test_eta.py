"""The time estimate (core/eta.py) on step timings recorded from a real analysis with reused
activations (tests/core/data/eta_resnet20.json: the sample ResNet-20, 25 steps), where the
first step carries the one-off check and recording and steps differ in cost."""

from __future__ import annotations

import json
from pathlib import Path

from uif_explorer.core.eta import TimeLeft

RECORDED = json.loads((Path(__file__).parent / "data" / "eta_resnet20.json").read_text())


def _estimates(costs: dict[int, float] | None) -> list[tuple[float, float, float]]:
    """(fraction done, time, estimated end) after every recorded step."""
    steps = RECORDED["steps"]
    left = TimeLeft(len(steps), costs)
    return [(k / len(steps), t, t + left.step(i, t)) for k, (i, t) in enumerate(steps, 1)]


def test_estimate_within_20_percent_after_the_first_tenth():
    costs = {int(i): c for i, c in RECORDED["costs"].items()}
    end = RECORDED["steps"][-1][1]
    after = [(f, est) for f, _, est in _estimates(costs) if f >= 0.1]
    errors = [abs(est - end) / end for _, est in after]
    # the first of them rests on two timed steps of a shared machine whose speed varied by
    # up to 40 % from step to step: within 30 %; all later ones within the goal of 20 %
    assert errors[0] <= 0.3 and max(errors[1:]) <= 0.2, errors
    assert after[-1][1] == end  # nothing left at the end


def test_the_old_estimate_was_far_off_on_the_same_timings():
    """Mean time per step x steps left (the estimate before) is off by far more than 20 %."""
    steps, end = RECORDED["steps"], RECORDED["steps"][-1][1]
    k = next(k for k in range(1, len(steps) + 1) if k / len(steps) >= 0.1)
    t = steps[k - 1][1]
    assert abs(t + t / k * (len(steps) - k) - end) / end > 0.5


def test_unknown_costs_count_steps_alike_and_skip_the_first():
    left = TimeLeft(4, start=0.0)
    assert left.step(0, 10.0) == 30.0  # one step seen: 10 s each for the 3 left
    assert left.step(1, 11.0) == 2.0  # from then on: 1 s per step, the first left out
    assert left.step(2, 12.0) == 1.0
    assert left.step(3, 13.0) == 0.0


def test_costs_weight_the_work_left():
    left = TimeLeft(3, {0: 1.0, 1: 1.0, 2: 4.0})
    left.step(0, 5.0)  # one-off work in the first step
    assert left.step(1, 6.0) == 4.0  # 1 s per unit of cost, 4 units left

"""Time left in a run of scoring steps (the ``eta_s`` the runners report with each step).

WHY not "mean time per finished step x steps left": the first step carries one-off work (the
model copied and checked, activations recorded, caches warmed), which that estimate multiplies
by every step still to come; with reused activations it read 218-269 % too high after 10 % of
the work. And steps differ in cost (a group deep in the network runs only the layers after it),
so counting steps misjudges the work left when cheap and dear steps are not evenly mixed.

Here the rate is measured in seconds per unit of *cost* (a backend's estimate of each step's
work, 1 each when it has none), from the end of the first finished step on, so the one-off
work is left out; the seconds left are that rate times the cost still to run.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["TimeLeft"]


class TimeLeft:
    """Seconds left, from finished steps weighted by their cost; first step left out."""

    def __init__(self, n_steps: int, costs: Mapping[int, float] | None = None,
                 start: float = 0.0) -> None:
        self.costs = {i: 1.0 for i in range(n_steps)}
        if costs:
            self.costs.update({i: max(float(c), 1e-9) for i, c in costs.items()
                               if i in self.costs})
        self.left = sum(self.costs.values())
        self.start = start
        self.first: tuple[float, float] | None = None  # (time, cost left) after step one
        self.done = 0

    def step(self, index: int, now: float) -> float:
        """Record step ``index`` finished at ``now`` (same clock as ``start``); seconds left."""
        self.left = max(0.0, self.left - self.costs.get(index, 1.0))
        self.done += 1
        if self.done == len(self.costs) or self.left <= 0:
            return 0.0
        if self.first is None:  # nothing but the first step: the best guess there is
            self.first = (now, self.left)
            ran = sum(self.costs.values()) - self.left
            return (now - self.start) / ran * self.left
        since, left_then = self.first
        ran = left_then - self.left
        return (now - since) / ran * self.left if ran > 0 else 0.0

"""The one-step search file of a runner: seeded EagleEye candidates, ranking, the chosen one.

:class:`SearchFiles` is a part of :class:`~uif_explorer.core.runner_files.RunnerFiles`; the
loop that scores the candidates is ``RunnerBase._search`` in :mod:`uif_explorer.core.runner`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from uif_explorer.core.allocation import sample_plan, sample_ratio_vector
from uif_explorer.core.plan import PruningPlan
from uif_explorer.core.pruner import BasePruner
from uif_explorer.core.refinement import refined_winner
from uif_explorer.io.workspace import WorkspaceError

SEARCH_KIND = "uif-explorer-search"


class SearchFiles:
    """Candidates of ``<model>_ratio_<r>.search``: drawn, recorded, ranked and chosen."""

    name: str
    criterion: str
    higher_is_better: bool
    _latency_model: Callable[[BasePruner], Any]

    def _sample_counts(self, pr: BasePruner, removal_ratio: float, seed: int, cid: int,
                       channel_divisible: int, target: str = "macs"
                       ) -> tuple[dict[int, int], float]:
        """EagleEye's per-group ratio distribution, rescaled so MACs (or the predicted
        latency, at fast widths) hit the target."""
        if target == "latency":
            lat = self._latency_model(pr)
            ids = [g.id for g in pr.graph.prunable_groups]

            def counts_of(r: np.ndarray) -> dict[int, int]:
                return lat.snap(pr.counts(dict(zip(ids, r.tolist(), strict=True)),
                                          channel_divisible))

            r = sample_ratio_vector(lambda r: lat.removal_of_counts(counts_of(r)), len(ids),
                                    removal_ratio, seed, cid)
            counts = counts_of(r)
            return counts, lat.removal_of_counts(counts)
        if pr.cost.count_model_exact:  # cost count vectors; no plan needed (bench/sampling.py)
            counts = pr.sample_counts(removal_ratio, seed, cid, channel_divisible)
            return counts, 1.0 - pr.cost.macs_of_counts(counts) / max(1, pr.original_macs)
        groups = pr.graph.prunable_groups
        plan = sample_plan(
            pr.cost, [g.id for g in groups],
            lambda rr: pr.plan(rr, self.criterion, channel_divisible),
            removal_ratio, seed, cid, pr.quantum(channel_divisible),
            counts_of=lambda r: pr.counts(r, channel_divisible),
        )
        return {gid: len(k) for gid, k in plan.kept.items()}, pr.removal(plan)

    def _new_search(self, pr: BasePruner, ratio: float, weights: str, seed: int,
                    channel_divisible: int, num_subnet: int,
                    protocol: Mapping[str, Any], target: str = "macs") -> dict[str, Any]:
        extra = {"framework": pr.framework} if pr.framework else {}
        return {
            "format_version": 1, "kind": SEARCH_KIND, "model": self.name, **extra,
            "graph_digest": pr.graph.graph_digest(), "weights_digest": weights,
            "removal_ratio": ratio, "target": target, "seed": seed, "criterion": self.criterion,
            "channel_divisible": channel_divisible, "higher_is_better": self.higher_is_better,
            "protocol": dict(protocol),
            "baseline": {"score": None, "macs": pr.original_macs / 1e6,
                         "params": pr.original_params / 1e6},
            "groups": [{"id": g.id, "name": g.name, "num_channels": g.num_channels,
                        "prunable": g.prunable} for g in pr.graph.groups],
            "num_subnet": num_subnet, "candidates": [], "complete": False,
        }

    def _candidate(self, pr: BasePruner, ratio: float, seed: int, cid: int,
                   channel_divisible: int, target: str = "macs") -> dict[str, Any]:
        """Candidate ``cid`` of a seeded search, unscored (the same every time it is drawn)."""
        counts, achieved = self._sample_counts(pr, ratio, seed, cid, channel_divisible, target)
        return self._candidate_entry(pr, cid, counts, achieved, target)

    def _uniform_candidate(self, pr: BasePruner, data: Mapping[str, Any]) -> dict[str, Any]:
        """The uniform L1 plan at the search's target as the next candidate, unscored
        (``origin: "uniform"``). At 75 % of ResNet-20's MACs every EagleEye sample of the
        benchmark ended below uniform after fine-tuning (docs/benchmarks.md), so refinement
        carries this plan along and picks it when the samples are worse."""
        target = data.get("target", "macs")
        latency = self._latency_model(pr) if target == "latency" else None
        plan = pr.uniform_plan(data["removal_ratio"], self.criterion, data["channel_divisible"],
                               strict=False, latency=latency)
        counts = {gid: len(k) for gid, k in plan.kept.items()}
        achieved = (latency.removal_of_counts(counts) if latency is not None
                    else pr.removal(plan))
        return {**self._candidate_entry(pr, len(data["candidates"]), counts, achieved, target),
                "origin": "uniform"}

    def _candidate_entry(self, pr: BasePruner, cid: int, counts: Mapping[int, int],
                         achieved: float, target: str) -> dict[str, Any]:
        """One candidate's record in the ``.search`` file (kept channels, costs, no score)."""
        plan = pr.plan_from_counts(counts, self.criterion)
        return {
            "id": cid, "kept_channels": {str(g): n for g, n in counts.items()},
            "ratios": {str(g): round(1 - n / pr.graph.groups[g].num_channels, 4)
                       for g, n in counts.items()},
            "macs": pr.macs(plan) / 1e6, "params": pr.params(plan) / 1e6,
            "removal": round(achieved, 6), "score": None,
            **({"latency_ms": self._latency_model(pr).latency_of_counts(counts) * 1e3}
               if target == "latency" else {}),
        }

    def _finish(self, data: dict[str, Any]) -> None:
        data["ranking"] = self._ranking(data)
        data["complete"] = all(c["score"] is not None for c in data["candidates"])

    @staticmethod
    def _ranking(data: dict) -> list[int]:
        """Candidate ids, best first (ties broken by id): the best is computed, not implied."""
        scored = [c for c in data["candidates"] if c["score"] is not None]
        sign = -1.0 if data.get("higher_is_better", True) else 1.0
        return [c["id"] for c in sorted(scored, key=lambda c: (sign * c["score"], c["id"]))]

    def _choose_candidate(self, pr: BasePruner, data: dict,
                          index: int | None) -> tuple[dict, str, PruningPlan]:
        """(candidate, spec tag, plan) for ``index`` (a candidate id) or the best."""
        if data.get("graph_digest") != pr.graph.graph_digest():
            raise WorkspaceError("The search was made for another architecture.")
        by_id = {c["id"]: c for c in data["candidates"]}
        if index is None:
            winner = refined_winner(data)  # refinement's pick, once it finished
            ranking = [winner] if winner is not None else self._ranking(data)
            if not ranking:
                raise WorkspaceError("No candidate has a score yet: run search(...) to finish.")
            chosen, tag = by_id[ranking[0]], "best"
        else:
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
                    or index not in by_id:
                raise ValueError(f"Expected index to be a candidate id in 0..{len(by_id) - 1}. "
                                 f"Received: index={index!r}")
            chosen, tag = by_id[int(index)], str(int(index))
        plan = pr.plan_from_counts({int(g): n for g, n in chosen["kept_channels"].items()},
                                   self.criterion)
        return chosen, tag, plan

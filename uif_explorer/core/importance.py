"""Channel importance criteria: a registry where a new criterion is one function.

A criterion gets, for one weight tensor tied to a group, the per-position magnitudes along the
channel axis the backend computed (``l1``: sum of |w|, ``l2``: sqrt of sum of w^2) plus the
slice's role, and returns per-position scores or ``None`` to skip that tensor. The core then
reduces the scores over *every* tensor of the group (producers' output rows, consumers' input
columns, depthwise kernels), each normalised by its mean so that no single layer dominates.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from uif_explorer.core.channels import ChannelGraph

# (stats of one slice, role of the slice) -> scores or None
Criterion = Callable[[dict[str, np.ndarray], str], np.ndarray | None]
CRITERIA: dict[str, Criterion] = {}
WEIGHT_ROLES = ("out", "in", "dw")


def register_criterion(name: str) -> Callable[[Criterion], Criterion]:
    def deco(fn: Criterion) -> Criterion:
        CRITERIA[name] = fn
        return fn

    return deco


@register_criterion("l1")
def l1(stats: dict[str, np.ndarray], role: str) -> np.ndarray | None:
    return stats["l1"] if role in WEIGHT_ROLES else None


@register_criterion("l2")
def l2(stats: dict[str, np.ndarray], role: str) -> np.ndarray | None:
    return stats["l2"] if role in WEIGHT_ROLES else None


@register_criterion("bn_scale")
def bn_scale(stats: dict[str, np.ndarray], role: str) -> np.ndarray | None:
    return stats["l1"] if role == "norm" else None


def group_scores(
    graph: ChannelGraph,
    slice_stats: list[dict[str, np.ndarray] | None],
    criterion: str = "l1",
    seed: int = 0,
) -> dict[int, np.ndarray]:
    """Per group, one score per canonical channel (higher = more important)."""
    if criterion == "random":
        rng = np.random.default_rng(seed)
        return {g.id: rng.random(g.num_channels) for g in graph.groups}
    if criterion not in CRITERIA:
        raise ValueError(
            f"Expected a criterion in {sorted([*CRITERIA, 'random'])}. Received: {criterion!r}"
        )
    fn = CRITERIA[criterion]
    root_score = np.zeros(len(graph.uf.parent))
    for sl, stats in zip(graph.slices, slice_stats, strict=True):
        if stats is None:
            continue
        score = fn(stats, sl.role)
        if score is None:
            continue
        score = np.asarray(score, dtype=np.float64)
        mean = score.mean()
        if mean > 0:
            score = score / mean
        np.add.at(root_score, graph.uf.roots(sl.classes), score)
    root_score = graph.spread_scores(root_score)
    return {g.id: root_score[g.roots] for g in graph.groups}

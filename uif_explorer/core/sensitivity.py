"""Sensitivity analysis results (``.sens``) and how they turn into per-group ratios.

Each prunable group gets a curve of scores at channel ratios 0.1 ... 0.9 (the group pruned
alone), the baseline score first. A *threshold* t on the relative score drop gives each group
the largest ratio whose drop stays within t, interpolated linearly between the analysed ratios
(so ratios between the steps are allowed); a MACs target is met by bisecting t. The reference
walks the curve with ``abs(drop)`` and so stops at a large *improvement*; we do not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SENS_KIND = "uif-explorer-sensitivity"
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def ratio_key(r: float) -> str:
    return f"{float(r):.3f}".rstrip("0").rstrip(".")


def new_sensitivity(
    *,
    model: str,
    graph_digest: str,
    weights_digest: str,
    groups: Sequence[dict[str, Any]],
    ratios: Sequence[float],
    criterion: str,
    higher_is_better: bool,
    metric: str = "score",
    protocol: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An empty analysis: every (prunable group, ratio) step pending. ``protocol`` says how
    every score in it was made (see :attr:`uif_explorer.core.scores.ScoreJob.protocol`)."""
    return {
        "format_version": 1,
        "kind": SENS_KIND,
        "model": model,
        "graph_digest": graph_digest,
        "weights_digest": weights_digest,
        "criterion": criterion,
        "higher_is_better": bool(higher_is_better),
        "metric": metric,
        "protocol": dict(protocol) if protocol is not None else None,
        "ratios": [float(r) for r in ratios],
        "baseline": None,
        "num_groups": len(groups),
        "groups": [{**g, "curve": []} for g in groups],
        "complete": False,
    }


def check_ratios(ratios: Sequence[float]) -> list[float]:
    """The analysed ratios as floats, each in (0, 1)."""
    try:
        out = [float(r) for r in ratios]
    except (TypeError, ValueError):
        out = []
    if not out or any(not 0 < r < 1 for r in out):
        raise ValueError("Expected sensitivity ratios in (0, 1), a list of numbers. "
                         f"Received: ratios={ratios!r}")
    return out


def pending_steps(sens: Mapping[str, Any]) -> list[tuple[int, float]]:
    """Steps not yet evaluated, in a fixed order (group id, then ratio)."""
    steps = []
    for g in sens["groups"]:
        if not g.get("prunable", True):
            continue
        done = {ratio_key(r) for r, _ in g["curve"]}
        steps.extend((g["id"], r) for r in sens["ratios"] if ratio_key(r) not in done)
    return steps


def record_step(sens: dict[str, Any], gid: int, ratio: float, score: float) -> None:
    group = next(g for g in sens["groups"] if g["id"] == gid)
    group["curve"] = sorted(
        [p for p in group["curve"] if ratio_key(p[0]) != ratio_key(ratio)]
        + [[float(ratio), float(score)]]
    )
    sens["complete"] = sens["baseline"] is not None and not pending_steps(sens)


def drops(sens: Mapping[str, Any], group: Mapping[str, Any]) -> list[tuple[float, float]]:
    """(ratio, relative score drop) points of one group, the baseline as (0, 0)."""
    base = float(sens["baseline"])
    scale = abs(base) if base != 0 else 1.0
    sign = 1.0 if sens.get("higher_is_better", True) else -1.0
    return [(0.0, 0.0)] + [(float(r), sign * (base - float(s)) / scale) for r, s in group["curve"]]


def ratio_at_threshold(points: Sequence[tuple[float, float]], threshold: float) -> float:
    """Largest ratio before the drop first exceeds ``threshold`` (linear in between)."""
    for (r0, d0), (r1, d1) in zip(points, points[1:], strict=False):
        if d1 > threshold:
            if d1 <= d0:
                return r0
            return r0 + (r1 - r0) * max(0.0, (threshold - d0)) / (d1 - d0)
    return points[-1][0]


def ratios_for_threshold(sens: Mapping[str, Any], threshold: float,
                         excluded: set[int] | None = None) -> dict[int, float]:
    out = {}
    for g in sens["groups"]:
        if not g.get("prunable", True) or not g["curve"] or (excluded and g["id"] in excluded):
            continue
        out[g["id"]] = ratio_at_threshold(drops(sens, g), threshold)
    return out


def max_drop(sens: Mapping[str, Any]) -> float:
    worst = 0.0
    for g in sens["groups"]:
        if g["curve"]:
            worst = max(worst, max(d for _, d in drops(sens, g)))
    return worst


def predicted_score(sens: Mapping[str, Any], ratios: Mapping[int, float]) -> float:
    """Baseline minus the sum of each group's interpolated drop (drops assumed additive)."""
    base = float(sens["baseline"])
    scale = abs(base) if base != 0 else 1.0
    sign = 1.0 if sens.get("higher_is_better", True) else -1.0
    total = 0.0
    by_id = {g["id"]: g for g in sens["groups"]}
    for gid, r in ratios.items():
        g = by_id.get(gid)
        if g is None or not g["curve"]:
            continue
        total += _interp(drops(sens, g), r)
    return base - sign * total * scale


def _interp(points: Sequence[tuple[float, float]], r: float) -> float:
    for (r0, d0), (r1, d1) in zip(points, points[1:], strict=False):
        if r <= r1:
            return d0 + (d1 - d0) * (r - r0) / (r1 - r0) if r1 > r0 else d1
    return points[-1][1]

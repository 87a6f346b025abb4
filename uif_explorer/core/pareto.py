"""MACs bins, the Pareto set and front, hypervolume: how searched candidates are summarised.

Nothing here imports torch. A *record* is one evaluated candidate: a mapping with ``net_id``,
``macs`` and ``params`` (millions) and the score under the metric's name. Words
(``conventions.md``): the **Pareto set** is the binned table (best candidate per MACs bin, the
guide's JSON shape); the **Pareto front** is the non-dominated candidates among everything
evaluated (plots, hypervolume).

The guide's entries say ``"flops"`` for what this project counts as MACs (multiply-accumulates,
in millions): every Pareto-set entry carries both keys with the same value, so code written for
the guide (``pareto["240"]["flops"]``) and for this project (``["macs"]``) both read it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

# readable bin widths: 1, 2, 2.5 and 5 times a power of ten
_STEP_MANTISSAS = (1.0, 2.0, 2.5, 5.0)
DEFAULT_BINS = 20


def step_decimals(step: float) -> int:
    """Decimals of ``step`` as written: 10 -> 0, 0.5 -> 1, 0.25 -> 2."""
    exp = Decimal(repr(float(step))).normalize().as_tuple().exponent
    return max(0, -int(exp))


def check_step(step: float) -> float:
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(
            step) or step <= 0:
        raise ValueError(f"Expected macs_step to be a number > 0. Received: macs_step={step!r}")
    return float(step)


def bin_value(macs: float, step: float) -> float:
    """round(macs / step) * step, rounded to the step's decimals (no 7.1000000000000005)."""
    return round(round(macs / step) * step, step_decimals(step))


def bin_key(macs: float, step: float) -> str:
    """The bin's MACs printed with as many decimals as ``step`` has ("230", "7.1", "7.25")."""
    return f"{bin_value(macs, step):.{step_decimals(step)}f}"


def utility(score: float, mode: str) -> float:
    """The score as "higher is better" (negated when ``mode`` is 'min')."""
    return score if mode == "max" else -score


def check_mode(mode: object) -> str:
    if mode not in ("max", "min"):
        raise ValueError(f"Expected mode 'max' (higher metric is better) or 'min'. "
                         f"Received: mode={mode!r}")
    return str(mode)


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(macs, utility): ``a`` has no more MACs and no lower utility, and differs."""
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def front_ranks(points: Sequence[tuple[float, float]]) -> list[int]:
    """Non-dominated sorting of (macs, utility) points: 0 = the Pareto front."""
    n = len(points)
    ranks = [-1] * n
    remaining = set(range(n))
    level = 0
    while remaining:
        front = [i for i in remaining
                 if not any(dominates(points[j], points[i]) for j in remaining if j != i)]
        for i in front:
            ranks[i] = level
        remaining -= set(front)
        level += 1
    return ranks


def pareto_front(records: Sequence[Mapping[str, Any]], metric: str, mode: str = "max"
                 ) -> list[Mapping[str, Any]]:
    """The non-dominated records (fewer MACs, better metric), sorted by MACs."""
    mode = check_mode(mode)
    pts = [(float(r["macs"]), utility(float(r[metric]), mode)) for r in records]
    ranks = front_ranks(pts)
    front = [r for r, k in zip(records, ranks, strict=True) if k == 0]
    return sorted(front, key=lambda r: (float(r["macs"]), -utility(float(r[metric]), mode)))


def hypervolume(points: Iterable[tuple[float, float]], ref_macs: float, ref_score: float,
                mode: str = "max") -> float:
    """Area dominated by (macs, score) points within the box bounded by the reference point.

    MACs are minimised, the score maximised (``mode='max'``) or minimised (``'min'``); points
    worse than the reference in either objective add nothing.
    """
    mode = check_mode(mode)
    ref_u = utility(ref_score, mode)
    pts = [(float(m), utility(float(s), mode)) for m, s in points]
    pts = [(m, u) for m, u in pts if m <= ref_macs and u >= ref_u]
    if not pts:
        return 0.0
    ranks = front_ranks(pts)
    front = sorted({p for p, k in zip(pts, ranks, strict=True) if k == 0})  # macs ascending
    area = 0.0
    prev_u = ref_u
    # Ascending MACs along a front means ascending utility: sweep utility bands.
    for m, u in front:
        if u > prev_u:
            area += (ref_macs - m) * (u - prev_u)
            prev_u = u
    return area


def pareto_set(records: Sequence[Mapping[str, Any]], metric: str, mode: str, step: float,
               fields: Sequence[str] = ("subnet_setting",)) -> dict[str, dict[str, Any]]:
    """Best record of each MACs bin, keyed by :func:`bin_key`, bins ascending.

    Entries have the guide's shape: ``net_id``, ``mode`` ("evaluate"), the metric, ``macs``
    and the guide's ``flops`` (the same M MACs), ``params`` and the listed ``fields`` of the
    record. Ties go to fewer MACs, then the
    earlier record.
    """
    mode = check_mode(mode)
    step = check_step(step)
    best: dict[str, Mapping[str, Any]] = {}
    for r in records:
        key = bin_key(float(r["macs"]), step)
        cur = best.get(key)
        if cur is None:
            best[key] = r
            continue
        u, cu = utility(float(r[metric]), mode), utility(float(cur[metric]), mode)
        if u > cu or (u == cu and float(r["macs"]) < float(cur["macs"])):
            best[key] = r
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(best, key=float):
        r = best[key]
        entry = {"net_id": r["net_id"], "mode": "evaluate", metric: r[metric],
                 "macs": r["macs"], "flops": r["macs"], "params": r["params"]}
        for f in fields:
            if f in r:
                entry[f] = r[f]
        out[key] = entry
    return out


def default_macs_step(lo: float, hi: float, bins: int = DEFAULT_BINS) -> float:
    """A readable bin width (1, 2, 2.5 or 5 x 10^k) giving about ``bins`` bins over [lo, hi].

    The reference's fixed step of 10 M MACs folds a small model's whole front into one or two
    bins; deriving the step from the span keeps the Pareto set informative at any scale
    (MobileNetV2 at 224 px: ~10; the 2-6 M MACs sample: 0.25).
    """
    span = float(hi) - float(lo)
    if span <= 0:  # a single subnet: one bin at any step
        span = abs(float(hi)) or 1.0
    target = span / bins
    exponent = math.floor(math.log10(target))
    steps = (float(Decimal(repr(m)).scaleb(p))
             for p in (exponent, exponent + 1) for m in _STEP_MANTISSAS)
    return next(s for s in steps if s >= target * (1 - 1e-9))  # 10^(exponent+1) always is


def with_flops(entry: Mapping[str, Any]) -> dict[str, Any]:
    """``entry`` with both ``"macs"`` and the guide's ``"flops"`` (same value, M MACs).

    A reference file's entry has only ``"flops"``, one of this project's older files only
    ``"macs"``; either way both keys come back. Other keys and their order are kept.
    """
    out = dict(entry)
    if "macs" in out and "flops" not in out:
        out["flops"] = out["macs"]
    elif "flops" in out and "macs" not in out:
        out["macs"] = out["flops"]
    return out


def pareto_with_flops(pareto: Mapping[str, Any]) -> dict[str, Any]:
    """A Pareto set (or one entry) read from a file, every entry with ``macs`` and ``flops``."""
    if any(k in pareto for k in ("macs", "flops", "subnet_setting")):
        return with_flops(pareto)
    return {k: with_flops(v) if isinstance(v, Mapping) else v for k, v in pareto.items()}


__all__ = [
    "DEFAULT_BINS", "bin_key", "bin_value", "check_mode", "check_step", "default_macs_step",
    "dominates", "front_ranks", "hypervolume", "pareto_front", "pareto_set", "pareto_with_flops",
    "step_decimals", "utility", "with_flops",
]

"""Evolutionary search over a discrete candidate space, MACs bins, Pareto set/front, hypervolume.

Nothing here imports torch. A candidate is a *genome*: one option index per gene (an OFA
supernet's genes are its elastic group widths and kernel sizes, options ascending in cost). The
search needs two functions from the backend: ``cost(genome) -> (macs, params)`` in millions
(analytic, cheap, called often) and ``evaluate(genomes)`` yielding ``(index, score)`` as each
candidate is scored (possibly on other workers).

Differences from the reference search, on purpose:

* every genome is evaluated at most once (a ``seen`` set over everything evaluated or pending,
  plus a memo of earlier results so a resumed search replays without evaluating again);
* the children of the last generation are evaluated too;
* a MACs range the smallest and largest subnets cannot reach raises at once, and every sampling
  loop has a fixed number of attempts (a range too narrow to hit just yields fewer children);
* parents are chosen for the whole MACs range (the best of each MACs bin first, then by Pareto
  rank), not only by score, so the front is explored from both ends.

Words (``conventions.md``): the **Pareto set** is the binned table (best candidate per MACs bin,
the guide's JSON shape); the **Pareto front** is the non-dominated candidates among everything
evaluated (plots, hypervolume).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

Genome = tuple[int, ...]
CostFn = Callable[[Genome], tuple[float, float]]
# evaluate(list of (net_id, genome)) -> yields (index in that list, score)
EvaluateFn = Callable[[list[tuple[str, Genome]]], Iterable[tuple[int, float]]]
RESERVED_KEYS = frozenset({"net_id", "mode", "macs", "params", "subnet_setting", "generation",
                           "origin", "genome", "flops"})


class SearchRangeError(ValueError):
    """The MACs range cannot be reached by any subnet (or is malformed)."""


# -- the candidate space -------------------------------------------------------------------
@dataclass(frozen=True)
class ChoiceSpace:
    """Genes with ordered options; a genome picks one option index per gene.

    Options of each gene are sorted by cost (smallest first), so the all-zeros genome is the
    smallest subnet and the all-last genome the largest.
    """

    sizes: tuple[int, ...]  # number of options per gene

    def __post_init__(self) -> None:
        if any(n < 1 for n in self.sizes):
            raise ValueError(f"Expected at least one option per gene. Received: {self.sizes}")

    @property
    def num_genes(self) -> int:
        return len(self.sizes)

    @property
    def size(self) -> int:
        """How many distinct genomes exist."""
        return math.prod(self.sizes)

    def smallest(self) -> Genome:
        return tuple(0 for _ in self.sizes)

    def largest(self) -> Genome:
        return tuple(n - 1 for n in self.sizes)

    def random(self, rng: np.random.Generator) -> Genome:
        return tuple(int(rng.integers(n)) for n in self.sizes)

    def mutate(self, genome: Genome, prob: float, rng: np.random.Generator) -> Genome:
        """Re-draw each gene with probability ``prob``; at least one gene changes."""
        child = list(genome)
        for i, n in enumerate(self.sizes):
            if n > 1 and rng.random() < prob:
                child[i] = int(rng.integers(n))
        if tuple(child) == tuple(genome):
            free = [i for i, n in enumerate(self.sizes) if n > 1]
            if free:
                i = free[int(rng.integers(len(free)))]
                child[i] = int((child[i] + 1 + rng.integers(self.sizes[i] - 1)) % self.sizes[i])
        return tuple(child)

    def crossover(self, a: Genome, b: Genome, rng: np.random.Generator) -> Genome:
        """Each gene from ``a`` or ``b`` with equal probability."""
        pick = rng.random(len(a)) < 0.5
        return tuple(int(x if p else y) for x, y, p in zip(a, b, pick, strict=True))

    def repair(self, genome: Genome, cost: CostFn, lo: float, hi: float,
               rng: np.random.Generator) -> Genome:
        """Step single genes down (too many MACs) or up (too few) towards ``[lo, hi]``.

        At most ``sum(sizes)`` steps, so it always ends; the result may still be outside
        the range when the range is narrower than one step.
        """
        g = list(genome)
        for _ in range(sum(self.sizes)):
            macs = cost(tuple(g))[0]
            if macs > hi:
                movable = [i for i, v in enumerate(g) if v > 0]
                step = -1
            elif macs < lo:
                movable = [i for i, v in enumerate(g) if v < self.sizes[i] - 1]
                step = 1
            else:
                break
            if not movable:
                break
            i = movable[int(rng.integers(len(movable)))]
            g[i] += step
        return tuple(g)


# -- bins, fronts, hypervolume -------------------------------------------------------------
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


def _utility(score: float, mode: str) -> float:
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
    pts = [(float(r["macs"]), _utility(float(r[metric]), mode)) for r in records]
    ranks = front_ranks(pts)
    front = [r for r, k in zip(records, ranks, strict=True) if k == 0]
    return sorted(front, key=lambda r: (float(r["macs"]), -_utility(float(r[metric]), mode)))


def hypervolume(points: Iterable[tuple[float, float]], ref_macs: float, ref_score: float,
                mode: str = "max") -> float:
    """Area dominated by (macs, score) points within the box bounded by the reference point.

    MACs are minimised, the score maximised (``mode='max'``) or minimised (``'min'``); points
    worse than the reference in either objective add nothing.
    """
    mode = check_mode(mode)
    ref_u = _utility(ref_score, mode)
    pts = [(float(m), _utility(float(s), mode)) for m, s in points]
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

    Entries have the guide's shape: ``net_id``, ``mode`` ("evaluate"), the metric, ``macs``,
    ``params`` and the listed ``fields`` of the record. Ties go to fewer MACs, then the
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
        u, cu = _utility(float(r[metric]), mode), _utility(float(cur[metric]), mode)
        if u > cu or (u == cu and float(r["macs"]) < float(cur["macs"])):
            best[key] = r
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(best, key=float):
        r = best[key]
        entry = {"net_id": r["net_id"], "mode": "evaluate", metric: r[metric],
                 "macs": r["macs"], "params": r["params"]}
        for f in fields:
            if f in r:
                entry[f] = r[f]
        out[key] = entry
    return out


# -- the search ----------------------------------------------------------------------------
@dataclass
class SearchConfig:
    metric: str
    mode: str
    min_macs: float
    max_macs: float
    macs_step: float = 10.0
    parent_popu_size: int = 16
    iteration: int = 10
    mutate_size: int = 8
    mutate_prob: float = 0.2
    crossover_size: int = 4
    seed: int = 0
    max_attempts: int = 200  # per child / per sampled candidate

    def check(self) -> SearchConfig:
        self.mode = check_mode(self.mode)
        self.macs_step = check_step(self.macs_step)
        if not isinstance(self.metric, str) or not self.metric or self.metric in RESERVED_KEYS:
            raise ValueError(f"Expected metric to be a name for the score (e.g. 'acc1'), not "
                             f"one of {sorted(RESERVED_KEYS)}. Received: metric={self.metric!r}")
        for name in ("min_macs", "max_macs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SearchRangeError(f"Expected {name} to be a finite number of MACs in "
                                       f"millions. Received: {name}={v!r}")
        if self.min_macs > self.max_macs:
            raise SearchRangeError(f"Expected min_macs <= max_macs. Received: min_macs="
                                   f"{self.min_macs}, max_macs={self.max_macs}")
        for name in ("parent_popu_size", "max_attempts"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"Expected {name} >= 1. Received: {name}={v!r}")
        for name in ("iteration", "mutate_size", "crossover_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"Expected {name} >= 0. Received: {name}={v!r}")
        if not 0.0 <= float(self.mutate_prob) <= 1.0:
            raise ValueError(f"Expected mutate_prob in [0, 1]. Received: {self.mutate_prob!r}")
        return self

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class _Cost:
    """Memoised cost function."""

    def __init__(self, fn: CostFn) -> None:
        self.fn = fn
        self.cache: dict[Genome, tuple[float, float]] = {}

    def __call__(self, g: Genome) -> tuple[float, float]:
        if g not in self.cache:
            m, p = self.fn(g)
            self.cache[g] = (float(m), float(p))
        return self.cache[g]


def check_reachable(space: ChoiceSpace, cost: CostFn, lo: float, hi: float) -> tuple[float, float]:
    """MACs of the smallest and largest subnets; raise when ``[lo, hi]`` misses them all."""
    small, large = cost(space.smallest())[0], cost(space.largest())[0]
    if hi < small or lo > large:
        raise SearchRangeError(
            f"No subnet has between {lo:g} and {hi:g} M MACs: subnets of this supernet span "
            f"{small:.4g} to {large:.4g} M MACs (min and max subnets). Choose a range inside it."
        )
    return small, large


class EvolutionarySearch:
    """One search run; ``history`` holds every evaluated candidate in evaluation order."""

    def __init__(self, space: ChoiceSpace, cost: CostFn, config: SearchConfig,
                 memo: Mapping[Genome, Mapping[str, Any]] | None = None) -> None:
        self.space = space
        self.cost = _Cost(cost)
        self.cfg = config.check()
        self.rng = np.random.default_rng(self.cfg.seed)
        self.memo = dict(memo or {})
        self.history: list[dict[str, Any]] = []
        self.seen: set[Genome] = set()
        self.evaluations = 0  # calls of the evaluate function's items (not memo hits)

    # -- helpers ---------------------------------------------------------------------------
    def in_range(self, g: Genome) -> bool:
        m = self.cost(g)[0]
        return self.cfg.min_macs <= m <= self.cfg.max_macs

    def _fresh(self, g: Genome, batch: set[Genome]) -> bool:
        return g not in self.seen and g not in batch and self.in_range(g)

    def sample_in_range(self, batch: set[Genome]) -> Genome | None:
        lo, hi = self.cfg.min_macs, self.cfg.max_macs
        for _ in range(self.cfg.max_attempts):
            g = self.space.repair(self.space.random(self.rng), self.cost, lo, hi, self.rng)
            if self._fresh(g, batch):
                return g
        return None

    def _record(self, net_id: str, g: Genome, generation: int, origin: str,
                score: float) -> dict[str, Any]:
        macs, params = self.cost(g)
        return {"net_id": net_id, "generation": generation, "origin": origin,
                "genome": list(g), "macs": macs, "params": params, self.cfg.metric: score}

    def _run_batch(self, batch: list[tuple[str, Genome, str]], generation: int,
                   evaluate: EvaluateFn, on_result: Callable[[dict], None] | None) -> None:
        start = len(self.history)
        todo = []
        for net_id, g, origin in batch:
            self.seen.add(g)
            hit = self.memo.get(g)
            if hit is not None and self.cfg.metric in hit:
                rec = self._record(net_id, g, generation, origin, float(hit[self.cfg.metric]))
                self.history.append(rec)
                if on_result is not None:
                    on_result(rec)
            else:
                todo.append((net_id, g, origin))
        if todo:
            for index, score in evaluate([(n, g) for n, g, _ in todo]):
                net_id, g, origin = todo[index]
                self.evaluations += 1
                rec = self._record(net_id, g, generation, origin, float(score))
                self.history.append(rec)
                if on_result is not None:
                    on_result(rec)
        # keep the history in batch order, whatever order the workers finished in
        order = {n: i for i, (n, _, _) in enumerate(batch)}
        self.history[start:] = sorted(self.history[start:], key=lambda r: order[r["net_id"]])

    def parents(self) -> list[Genome]:
        """Best of each MACs bin first, then by Pareto rank and score."""
        cfg = self.cfg
        recs = self.history
        if not recs:
            return []
        best_of_bin = {r["net_id"] for r in
                       pareto_set(recs, cfg.metric, cfg.mode, cfg.macs_step).values()}
        pts = [(float(r["macs"]), _utility(float(r[cfg.metric]), cfg.mode)) for r in recs]
        ranks = front_ranks(pts)
        order = sorted(range(len(recs)), key=lambda i: (
            recs[i]["net_id"] not in best_of_bin, ranks[i], -pts[i][1], pts[i][0]))
        return [tuple(recs[i]["genome"]) for i in order[: cfg.parent_popu_size]]

    # -- the loop --------------------------------------------------------------------------
    def initial_population(self) -> list[tuple[str, Genome, str]]:
        cfg = self.cfg
        batch: list[tuple[str, Genome, str]] = []
        taken: set[Genome] = set()
        for tag, g in (("max", self.space.largest()), ("min", self.space.smallest())):
            if len(batch) < cfg.parent_popu_size and self._fresh(g, taken):
                batch.append((f"net_{tag}", g, tag))
                taken.add(g)
        i = 0
        while len(batch) < cfg.parent_popu_size:
            g = self.sample_in_range(taken)
            if g is None:
                break
            batch.append((f"net_init_{i}", g, "init"))
            taken.add(g)
            i += 1
        if not batch:
            raise SearchRangeError(
                f"No subnet with {cfg.min_macs:g} to {cfg.max_macs:g} M MACs was found in "
                f"{cfg.max_attempts} attempts: the range is narrower than one width step. "
                "Widen it (or lower macs granularity with more expand ratios)."
            )
        return batch

    def children(self, generation: int) -> list[tuple[str, Genome, str]]:
        cfg = self.cfg
        parents = self.parents()
        batch: list[tuple[str, Genome, str]] = []
        taken: set[Genome] = set()
        lo, hi = cfg.min_macs, cfg.max_macs
        for i in range(cfg.mutate_size):
            for _ in range(cfg.max_attempts):
                p = parents[int(self.rng.integers(len(parents)))]
                c = self.space.mutate(p, cfg.mutate_prob, self.rng)
                if not self.in_range(c):
                    c = self.space.repair(c, self.cost, lo, hi, self.rng)
                if self._fresh(c, taken):
                    batch.append((f"net_evo_{generation}_mutate_{i}", c, "mutate"))
                    taken.add(c)
                    break
        for i in range(cfg.crossover_size):
            if len(parents) < 2:
                break
            for _ in range(cfg.max_attempts):
                a, b = self.rng.choice(len(parents), size=2, replace=False)
                c = self.space.crossover(parents[int(a)], parents[int(b)], self.rng)
                if not self.in_range(c):
                    c = self.space.repair(c, self.cost, lo, hi, self.rng)
                if self._fresh(c, taken):
                    batch.append((f"net_evo_{generation}_crossover_{i}", c, "crossover"))
                    taken.add(c)
                    break
        return batch

    def run(self, evaluate: EvaluateFn, on_result: Callable[[dict], None] | None = None,
            on_generation: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        """Initial population, then ``iteration`` generations; every generation is evaluated."""
        cfg = self.cfg
        check_reachable(self.space, self.cost, cfg.min_macs, cfg.max_macs)
        self._run_batch(self.initial_population(), -1, evaluate, on_result)
        if on_generation is not None:
            on_generation(-1)
        for gen in range(cfg.iteration):
            batch = self.children(gen)
            self._run_batch(batch, gen, evaluate, on_result)
            if on_generation is not None:
                on_generation(gen)
        return self.history

    def run_random(self, num: int, evaluate: EvaluateFn,
                   on_result: Callable[[dict], None] | None = None) -> list[dict[str, Any]]:
        """``num`` distinct random in-range subnets instead of the evolution (a baseline)."""
        check_reachable(self.space, self.cost, self.cfg.min_macs, self.cfg.max_macs)
        batch: list[tuple[str, Genome, str]] = []
        taken: set[Genome] = set()
        for i in range(num):
            g = self.sample_in_range(taken)
            if g is None:
                break
            batch.append((f"net_random_{i}", g, "random"))
            taken.add(g)
        self._run_batch(batch, 0, evaluate, on_result)
        return self.history

    def planned_evaluations(self) -> int:
        """Upper bound on the number of candidates this configuration evaluates."""
        c = self.cfg
        return min(self.space.size, c.parent_popu_size + c.iteration * (c.mutate_size
                                                                        + c.crossover_size))


def random_search(space: ChoiceSpace, cost: CostFn, config: SearchConfig, num: int,
                  evaluate: EvaluateFn, on_result: Callable[[dict], None] | None = None
                  ) -> list[dict[str, Any]]:
    """``num`` distinct random subnets in the MACs range (the baseline for the bench)."""
    return EvolutionarySearch(space, cost, config).run_random(num, evaluate, on_result)


__all__ = [
    "ChoiceSpace", "EvolutionarySearch", "Genome", "SearchConfig", "SearchRangeError",
    "bin_key", "bin_value", "check_reachable", "dominates", "front_ranks", "hypervolume",
    "pareto_front", "pareto_set", "random_search", "step_decimals",
]

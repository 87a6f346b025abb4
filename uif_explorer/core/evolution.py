"""Evolutionary (and random) search over a discrete candidate space, and its one config object.

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

The genome space and its moves live in :mod:`uif_explorer.core.choices`, MACs bins, the Pareto
set and front and hypervolume in :mod:`uif_explorer.core.pareto` (both re-exported here).
:class:`SearchConfig` holds every setting of a search, evolutionary or random, and binds the
guide's positional call and its spellings (``min_flops``...) to it once.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from uif_explorer.core.choices import ChoiceSpace, CostFn, Genome
from uif_explorer.core.pareto import (
    bin_key,
    bin_value,
    check_mode,
    check_step,
    default_macs_step,
    dominates,
    front_ranks,
    hypervolume,
    pareto_front,
    pareto_set,
    step_decimals,
    utility,
)

# evaluate(list of (net_id, genome)) -> yields (index in that list, score)
EvaluateFn = Callable[[list[tuple[str, Genome]]], Iterable[tuple[int, float]]]
RESERVED_KEYS = frozenset({"net_id", "mode", "macs", "params", "subnet_setting", "generation",
                           "origin", "genome", "flops", "latency_ms"})
LatencyFn = Callable[[Genome], float]  # predicted milliseconds of a subnet (target='latency')
TARGET_AXIS = {"macs": "macs", "latency": "latency_ms"}  # the record key each target ranks on


class SearchRangeError(ValueError):
    """The MACs range cannot be reached by any subnet (or is malformed)."""


# -- the search ----------------------------------------------------------------------------
# the guide's (and pytorch_nndct's) names for this project's settings
GUIDE_NAMES = {"evaluation_metric": "metric", "min_or_max_metric": "mode",
               "min_flops": "min_macs", "max_flops": "max_macs", "flops_step": "macs_step"}
EVOLUTION_SETTINGS = ("parent_popu_size", "iteration", "mutate_size", "mutate_prob",
                      "crossover_size")


@dataclass
class SearchConfig:
    """Every setting of one search, evolutionary or random (``num_subnets`` set).

    ``min_macs`` / ``max_macs`` / ``macs_step`` are M MACs; None means "from the candidate
    space" and is filled by :meth:`with_span` (the whole span, a step giving ~20 bins).
    """

    metric: str = "acc1"
    mode: str = "max"
    min_macs: float | None = None
    max_macs: float | None = None
    macs_step: float | None = None
    parent_popu_size: int = 16
    iteration: int = 10
    mutate_size: int = 8
    mutate_prob: float = 0.2
    crossover_size: int = 4
    seed: int = 0
    max_attempts: int = 200  # per child / per sampled candidate
    num_subnets: int | None = None  # a random search of this many subnets instead
    # 'latency': range, bins and Pareto front on predicted latency; min_macs / max_macs /
    # macs_step are then milliseconds of this machine's latency table, not M MACs
    target: str = "macs"

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @staticmethod
    def bind(func: str, order: Sequence[str], args: Sequence[Any], options: Mapping[str, Any],
             allowed: Collection[str]) -> dict[str, Any]:
        """Positional ``args`` (in ``order``) and keyword ``options`` as one dict by our names.

        The guide's spellings (:data:`GUIDE_NAMES`) are accepted; one setting given under both
        spellings must have one value. Raises ``TypeError`` like Python does for a call that
        does not fit (too many positionals, an unknown keyword, a value given twice).
        """
        if len(args) > len(order):
            raise TypeError(f"{func}() takes at most {len(order)} settings after eval_args "
                            f"({', '.join(order)}). Received {len(args)}: {list(args)!r}")
        bound = dict(zip(order, args, strict=False))
        spelled = {name: name for name in bound}
        for key, value in options.items():
            name = GUIDE_NAMES.get(key, key)
            if name not in allowed:
                close = difflib.get_close_matches(key, [*allowed, *GUIDE_NAMES], n=2)
                raise TypeError(f"{func}() got an unexpected keyword argument {key!r}"
                                + (f"; did you mean {' or '.join(close)}?" if close else ""))
            if name in bound:
                if spelled[name] == key:
                    raise TypeError(f"{func}() got multiple values for argument {key!r}")
                if bound[name] != value:
                    raise ValueError(
                        f"Expected either {name} or {key} (the guide's name for the same "
                        f"setting), not two values. Received: {bound[name]!r} and {value!r}")
            bound[name], spelled[name] = value, key
        return bound

    def with_span(self, smallest: float, largest: float) -> SearchConfig:
        """A copy with the range and step filled from the space's smallest/largest MACs."""
        return replace(
            self, min_macs=smallest if self.min_macs is None else self.min_macs,
            max_macs=largest if self.max_macs is None else self.max_macs,
            macs_step=(default_macs_step(smallest, largest) if self.macs_step is None
                       else self.macs_step))

    def check(self) -> SearchConfig:
        self.mode = check_mode(self.mode)
        if self.target not in TARGET_AXIS:
            raise ValueError(f"Expected target in {tuple(TARGET_AXIS)}. Received: "
                             f"target={self.target!r}")
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
        at_least = {"parent_popu_size": 1, "max_attempts": 1, "iteration": 0, "mutate_size": 0,
                    "crossover_size": 0}
        if self.num_subnets is not None:
            at_least["num_subnets"] = 1
        for name, low in at_least.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ValueError(f"Expected {name} >= {low}. Received: {name}={v!r}")
        if not 0.0 <= float(self.mutate_prob) <= 1.0:
            raise ValueError(f"Expected mutate_prob in [0, 1]. Received: {self.mutate_prob!r}")
        return self

    def as_dict(self) -> dict[str, Any]:
        """The settings a saved search is compared on (``num_subnets`` is saved apart)."""
        out = {k: getattr(self, k) for k in self.names() if k != "num_subnets"}
        if out["target"] == "macs":  # files saved before latency targets stay comparable
            del out["target"]
        return out


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


def check_reachable(space: ChoiceSpace, cost: CostFn, lo: float, hi: float,
                    key: str = "macs") -> tuple[float, float]:
    """Cost (MACs, or latency for ``key='latency_ms'``) of the smallest and largest subnets;
    raise when ``[lo, hi]`` misses them all."""
    small, large = cost(space.smallest())[0], cost(space.largest())[0]
    unit = "M MACs" if key == "macs" else "ms of predicted latency"
    if hi < small or lo > large:
        raise SearchRangeError(
            f"No subnet has between {lo:g} and {hi:g} {unit}: subnets of this supernet span "
            f"{small:.4g} to {large:.4g} {unit} (min and max subnets). Choose a range inside it."
        )
    return small, large


def on_axis(records: Sequence[Mapping[str, Any]], key: str) -> list[Mapping[str, Any]]:
    """``records`` as the Pareto helpers see them: with ``key`` (``latency_ms`` for a latency
    search) in the ``macs`` slot they bin and rank on."""
    if key == "macs":
        return list(records)
    return [{**r, "macs": r[key]} for r in records]


def pareto_set_on(records: Sequence[Mapping[str, Any]], metric: str, mode: str, step: float,
                  key: str = "macs") -> dict[str, dict[str, Any]]:
    """:func:`pareto_set` binned on ``key``; a latency search's entries carry ``latency_ms``
    and the subnet's real ``macs`` / ``flops``."""
    out = pareto_set(on_axis(records, key), metric, mode, step)
    if key != "macs":
        by_id = {r["net_id"]: r for r in records}
        for entry in out.values():
            entry[key] = entry["macs"]
            entry["macs"] = entry["flops"] = by_id[entry["net_id"]]["macs"]
    return out


def pareto_front_on(records: Sequence[Mapping[str, Any]], metric: str, mode: str = "max",
                    key: str = "macs") -> list[Mapping[str, Any]]:
    """The non-dominated records on (``key``, score): the original records."""
    by_id = {r["net_id"]: r for r in records}
    return [by_id[r["net_id"]] for r in pareto_front(on_axis(records, key), metric, mode)]


class EvolutionarySearch:
    """One search run; ``history`` holds every evaluated candidate in evaluation order."""

    def __init__(self, space: ChoiceSpace, cost: CostFn, config: SearchConfig,
                 memo: Mapping[Genome, Mapping[str, Any]] | None = None,
                 latency: LatencyFn | None = None) -> None:
        self.space = space
        self.cost = _Cost(cost)
        self.cfg = config.check()
        self.key = TARGET_AXIS[self.cfg.target]
        if self.key != "macs" and latency is None:
            raise ValueError("Expected a latency function (genome -> ms) for target='latency'. "
                             "Received: latency=None")
        # the axis the range, bins and parents use: MACs, or predicted latency in ms
        self.axis = self.cost if self.key == "macs" else _Cost(
            lambda g: (latency(g), self.cost(g)[1]))
        self.rng = np.random.default_rng(self.cfg.seed)
        self.memo = dict(memo or {})
        self.history: list[dict[str, Any]] = []
        self.seen: set[Genome] = set()
        self.evaluations = 0  # calls of the evaluate function's items (not memo hits)

    # -- helpers ---------------------------------------------------------------------------
    def in_range(self, g: Genome) -> bool:
        m = self.axis(g)[0]
        return self.cfg.min_macs <= m <= self.cfg.max_macs

    def _fresh(self, g: Genome, batch: set[Genome]) -> bool:
        return g not in self.seen and g not in batch and self.in_range(g)

    def sample_in_range(self, batch: set[Genome]) -> Genome | None:
        lo, hi = self.cfg.min_macs, self.cfg.max_macs
        for _ in range(self.cfg.max_attempts):
            g = self.space.repair(self.space.random(self.rng), self.axis, lo, hi, self.rng)
            if self._fresh(g, batch):
                return g
        return None

    def _record(self, net_id: str, g: Genome, generation: int, origin: str,
                score: float) -> dict[str, Any]:
        macs, params = self.cost(g)
        rec = {"net_id": net_id, "generation": generation, "origin": origin,
               "genome": list(g), "macs": macs, "params": params, self.cfg.metric: score}
        if self.key != "macs":
            rec[self.key] = self.axis(g)[0]
        return rec

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
        recs = on_axis(self.history, self.key)
        if not recs:
            return []
        best_of_bin = {r["net_id"] for r in
                       pareto_set(recs, cfg.metric, cfg.mode, cfg.macs_step).values()}
        pts = [(float(r["macs"]), utility(float(r[cfg.metric]), cfg.mode)) for r in recs]
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

    def _breed(self, make: Callable[[], Genome], count: int, name: str, origin: str,
               batch: list[tuple[str, Genome, str]], taken: set[Genome]) -> None:
        """Up to ``count`` fresh in-range children of ``make()`` (repaired into the range)."""
        lo, hi = self.cfg.min_macs, self.cfg.max_macs
        for i in range(count):
            for _ in range(self.cfg.max_attempts):
                child = make()
                if not self.in_range(child):
                    child = self.space.repair(child, self.axis, lo, hi, self.rng)
                if self._fresh(child, taken):
                    batch.append((f"{name}_{origin}_{i}", child, origin))
                    taken.add(child)
                    break

    def children(self, generation: int) -> list[tuple[str, Genome, str]]:
        """``mutate_size`` mutations, then ``crossover_size`` crossovers of the parents."""
        cfg, rng, space = self.cfg, self.rng, self.space
        parents = self.parents()

        def mutant() -> Genome:
            return space.mutate(parents[int(rng.integers(len(parents)))], cfg.mutate_prob, rng)

        def crossed() -> Genome:
            a, b = rng.choice(len(parents), size=2, replace=False)
            return space.crossover(parents[int(a)], parents[int(b)], rng)

        batch: list[tuple[str, Genome, str]] = []
        taken: set[Genome] = set()
        name = f"net_evo_{generation}"
        self._breed(mutant, cfg.mutate_size, name, "mutate", batch, taken)
        if len(parents) >= 2:
            self._breed(crossed, cfg.crossover_size, name, "crossover", batch, taken)
        return batch

    def run(self, evaluate: EvaluateFn, on_result: Callable[[dict], None] | None = None,
            on_generation: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        """Initial population, then ``iteration`` generations; every generation is evaluated."""
        cfg = self.cfg
        check_reachable(self.space, self.axis, cfg.min_macs, cfg.max_macs, self.key)
        self._run_batch(self.initial_population(), -1, evaluate, on_result)
        if on_generation is not None:
            on_generation(-1)
        for gen in range(cfg.iteration):
            batch = self.children(gen)
            self._run_batch(batch, gen, evaluate, on_result)
            if on_generation is not None:
                on_generation(gen)
        return self.history

    def run_random(self, num: int | None, evaluate: EvaluateFn,
                   on_result: Callable[[dict], None] | None = None) -> list[dict[str, Any]]:
        """``num`` (default: ``num_subnets``) distinct random in-range subnets (a baseline)."""
        num = self.cfg.num_subnets if num is None else num
        check_reachable(self.space, self.axis, self.cfg.min_macs, self.cfg.max_macs, self.key)
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

    def search(self, evaluate: EvaluateFn, on_result: Callable[[dict], None] | None = None,
               on_generation: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        """The configured search: random when ``num_subnets`` is set, else the evolution."""
        if self.cfg.num_subnets is not None:
            return self.run_random(None, evaluate, on_result)
        return self.run(evaluate, on_result, on_generation)

    def planned_evaluations(self) -> int:
        """Upper bound on the number of candidates this configuration evaluates."""
        c = self.cfg
        planned = c.num_subnets if c.num_subnets is not None else (
            c.parent_popu_size + c.iteration * (c.mutate_size + c.crossover_size))
        return min(self.space.size, planned)


def random_search(space: ChoiceSpace, cost: CostFn, config: SearchConfig, num: int,
                  evaluate: EvaluateFn, on_result: Callable[[dict], None] | None = None
                  ) -> list[dict[str, Any]]:
    """``num`` distinct random subnets in the MACs range (the baseline for the bench)."""
    return EvolutionarySearch(space, cost, config).run_random(num, evaluate, on_result)


__all__ = [
    "GUIDE_NAMES", "TARGET_AXIS", "ChoiceSpace", "EvolutionarySearch", "Genome", "LatencyFn",
    "SearchConfig", "SearchRangeError", "bin_key", "bin_value", "check_mode", "check_reachable",
    "check_step", "default_macs_step", "dominates", "front_ranks", "hypervolume", "on_axis",
    "pareto_front", "pareto_front_on", "pareto_set", "pareto_set_on", "random_search",
    "step_decimals",
]

"""The candidate space of a search: genes with ordered options, and the moves between genomes.

Nothing here imports torch. A *genome* picks one option index per gene (an OFA supernet's genes
are its elastic group widths and kernel sizes, options ascending in cost); sampling, mutation,
crossover and the repair into a MACs range act on genomes only, with the backend's analytic
``cost(genome) -> (macs, params)`` (millions) as the one link to a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Genome = tuple[int, ...]
CostFn = Callable[[Genome], tuple[float, float]]


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


__all__ = ["ChoiceSpace", "CostFn", "Genome"]

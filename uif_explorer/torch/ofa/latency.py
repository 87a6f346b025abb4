"""Predicted latency of OFA subnets, for a search that targets latency instead of MACs.

The supernet's largest subnet is timed once per machine like any model
(:mod:`uif_explorer.torch.latency`: each conv / linear alone over its channel counts, the whole
model at full and half width) and cached in the workspace; a subnet is then priced without
building it: its widths are a plan of the space's graph (:meth:`LatencyModel.latency`), and an
elastic kernel cropped from ``K`` to ``k`` scales its conv's predicted time by ``k^2 / K^2``
(the taps it computes; the table is measured at the largest kernel).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from uif_explorer.core.evolution import Genome
from uif_explorer.core.latency import DEFAULT_POINTS, LatencyModel
from uif_explorer.core.plan import PruningPlan
from uif_explorer.core.pruner import BasePruner
from uif_explorer.torch.latency import latency_model
from uif_explorer.torch.ofa.space import OFASpace, space_of, unwrap
from uif_explorer.torch.pruner import example_inputs


class _SpaceView(BasePruner):
    """What the latency measurement needs of a pruner, over an OFA space: its graph and
    costs, and for the overhead probe a middle-width subnet as a plain model."""

    def __init__(self, space: OFASpace, model: nn.Module) -> None:
        super().__init__(space.capture.graph)
        self.space, self.model = space, model
        self._genomes: dict[int, Genome] = {}

    def plan(self, ratio: float, *_: Any, **__: Any) -> PruningPlan:
        """Each elastic group at its width closest to ``1 - ratio`` of its channels."""
        genome = tuple(int(np.argmin([abs(w - (1 - ratio) * g.channels) for w in g.widths]))
                       for g in self.space.groups) + tuple(
            len(k.kernels) - 1 for k in self.space.kernels)
        plan = self.space.plan(genome)
        self._genomes[id(plan)] = genome
        return plan

    def slim_model(self, plan: PruningPlan) -> nn.Module:
        return self.space.static(self.model, self._genomes[id(plan)])


class SubnetLatency:
    """``genome -> predicted ms`` of one OFA model's subnets on this machine."""

    def __init__(self, space: OFASpace, lat: LatencyModel) -> None:
        self.space, self.lat = space, lat
        names = [op.name for op in space.capture.graph.mac_ops]
        self._kernel_ops = {k.module: [i for i, n in enumerate(names) if n == k.module]
                            for k in space.kernels}

    def __call__(self, genome: Genome) -> float:
        plan = self.space.plan(genome)
        seconds = self.lat.latency(plan)
        _, kernels = self.space.decode(genome)
        small = [k for k in self.space.kernels if kernels[k.module] < k.max_kernel]
        if small:
            times = self.lat.op_times(plan)
            for k in small:
                share = 1.0 - (kernels[k.module] / k.max_kernel) ** 2
                seconds -= share * float(times[self._kernel_ops[k.module]].sum())
        return seconds * 1e3


def subnet_latency(ofa_model: nn.Module, inputs: Any, path: str | Path,
                   runtime: str = "eager", threads: int | None = None,
                   max_points: int = DEFAULT_POINTS) -> SubnetLatency:
    """Predicted latency of ``ofa_model``'s subnets, from the table at ``path`` (measured on
    the largest subnet at ``inputs`` when missing or made on another machine or graph)."""
    space = space_of(ofa_model)
    inputs = example_inputs(inputs)
    largest = space.static(unwrap(ofa_model), space.choice.largest())
    view = _SpaceView(space, unwrap(ofa_model))
    lat = latency_model(view, largest, inputs, path, runtime, threads, max_points=max_points)
    return SubnetLatency(space, lat)

"""The guide's once-for-all API: ``OFAPruner`` and the subnet functions (section 4.1.3.2).

    pruner = OFAPruner(model, torch.randn(1, 3, 224, 224))
    ofa_model = pruner.ofa_model([0.5, 0.75, 1], excludes=None, auto_add_excludes=True)
    model, setting = pruner.sample_subnet(ofa_model, "random")        # in a sandwich loop
    model, setting = pruner.sample_random_subnet(ofa_model)          # the same (guide's text)
    pareto = pruner.run_evolutionary_search(ofa_model, calibration_fn, (train_loader,),
                                            eval_fn, (val_loader,), "acc1", "max",
                                            min_flops=230, max_flops=250)
    pruner.save_subnet_config(pareto, "pareto_global.txt")
    static, config, macs, params = pruner.get_static_subnet(ofa_model,
                                                            pareto["240"]["subnet_setting"])
    pruner.reset_bn_running_stats_for_calibration(static)  # then forward a few train batches

Every function also exists at module level (``sample_subnet(ofa_model, "max")``): the OFA model
carries its search space, so a pruner object is only needed to make one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from uif_explorer.core.pareto import pareto_with_flops
from uif_explorer.io.workspace import atomic_write_json
from uif_explorer.torch.evaluation import batch_norms
from uif_explorer.torch.ofa.space import (
    DEFAULT_EXPAND_RATIO,
    build_ofa_model,
    space_of,
    unwrap,
)
from uif_explorer.torch.pruner import ChannelPruner

SubnetSetting = list[dict[str, Any]]


def sample_subnet(ofa_model: nn.Module, mode: str = "random",
                  rng: np.random.Generator | int | None = None) -> tuple[nn.Module, SubnetSetting]:
    """Activate the ``'max'``, ``'min'`` or a ``'random'`` subnet; returns ``(model, setting)``.

    ``model`` is ``ofa_model`` itself (a DDP wrapper stays the wrapper) running that subnet.
    Random draws come from ``rng`` (a seed or a numpy Generator), else from the model's own
    generator (seeded 0 when the OFA model was made, so processes that build the same model
    and call this the same number of times draw the same subnets, as DDP needs).
    """
    space = space_of(ofa_model)
    genome = space.sample(mode, rng)
    space.apply(unwrap(ofa_model), genome)
    return ofa_model, space.setting(genome)


def sample_random_subnet(ofa_model: nn.Module, rng: np.random.Generator | int | None = None
                         ) -> tuple[nn.Module, SubnetSetting]:
    """The guide's ``sample_random_subnet()``: ``sample_subnet(ofa_model, "random", rng)``."""
    return sample_subnet(ofa_model, "random", rng)


def reset_bn_running_stats_for_calibration(model: nn.Module) -> None:
    """Prepare ``model``'s BatchNorms to re-estimate their statistics (the reference's helper).

    Each BatchNorm that tracks statistics (dynamic ones included) is reset, switched to a
    cumulative average (``momentum=None``: every calibration batch counts the same) and put in
    train mode, the rest of the model keeping its mode; forward a few training batches under
    ``torch.no_grad()`` next, then ``model.eval()``. A subnet cut from a supernet needs this:
    its norms hold the statistics of the full network. :func:`~uif_explorer.torch.evaluation.
    adaptive_bn_calibration` does the whole step and restores the momenta.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected a torch.nn.Module. Received: model={type(model).__name__}")
    for bn in batch_norms(model):
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()


def set_subnet(ofa_model: nn.Module, subnet_setting: object) -> nn.Module:
    """Activate the subnet described by ``subnet_setting`` (or a Pareto entry holding one)."""
    space = space_of(ofa_model)
    space.apply(unwrap(ofa_model), space.parse(subnet_setting))
    return ofa_model


def active_setting(ofa_model: nn.Module) -> SubnetSetting:
    space = space_of(ofa_model)
    return space.setting(space.active or space.choice.largest())


def subnet_cost(ofa_model: nn.Module, subnet_setting: object) -> tuple[float, float]:
    """Analytic MACs and params of a subnet, in millions (no model is built)."""
    space = space_of(ofa_model)
    return space.cost_m(space.parse(subnet_setting))


def get_static_subnet(ofa_model: nn.Module, subnet_setting: object
                      ) -> tuple[nn.Module, dict[str, Any], float, float]:
    """The subnet as a model of plain layers: ``(model, config, macs, params)``.

    ``macs`` / ``params`` are in millions. ``config`` holds the complete ``subnet_setting``
    (every elastic group and kernel), the per-group widths with their full channel counts, and
    the same MACs and params. ``ofa_model`` is not changed (nor its active subnet).
    """
    space = space_of(ofa_model)
    genome = space.parse(subnet_setting)
    static = space.static(unwrap(ofa_model), genome)
    macs, params = space.cost_m(genome)
    widths, kernels = space.decode(genome)
    config = {
        "subnet_setting": space.setting(genome),
        "macs": macs,
        "params": params,
        "groups": [{"group": g.name, "channels": g.channels, "width": widths[g.id],
                    "candidates": list(g.widths)} for g in space.groups],
        "kernels": [{"module": k.module, "max_kernel_size": k.max_kernel,
                     "kernel_size": kernels[k.module]} for k in space.kernels],
        "fixed_groups": [dict(f) for f in space.fixed],
        "ofa_args": dict(space.args),
    }
    return static, config, macs, params


def describe(ofa_model: nn.Module) -> pd.DataFrame:
    """One row per channel group: channels, width candidates, or why it stays full."""
    space = space_of(ofa_model)
    rows = [{"group": g.name, "channels": g.channels, "elastic": True,
             "widths": list(g.widths), "reason": "", "layers": ", ".join(g.modules)}
            for g in space.groups]
    rows += [{"group": f["group"], "channels": f["channels"], "elastic": False,
              "widths": [f["channels"]], "reason": f["reason"], "layers": ""}
             for f in space.fixed]
    rows += [{"group": k.module, "channels": None, "elastic": True,
              "widths": [], "reason": f"kernel sizes {list(k.kernels)}", "layers": k.module}
             for k in space.kernels]
    return pd.DataFrame(rows, columns=["group", "channels", "elastic", "widths", "reason",
                                       "layers"])


def _builtin(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"Cannot write {type(obj).__name__} to a subnet config file")


def save_subnet_config(pareto: Mapping[str, Any] | Sequence[Any], path: str | os.PathLike) -> None:
    """Write a Pareto set (or one subnet_setting) as JSON, atomically."""
    atomic_write_json(Path(path), json.loads(json.dumps(pareto, default=_builtin)))


def load_subnet_config(path: str | os.PathLike) -> Any:
    """Read what :func:`save_subnet_config` wrote, or a reference ``pareto_global.txt``.

    Every entry carries both ``"macs"`` and the guide's ``"flops"`` (the same M MACs), so
    ``pareto["240"]["flops"]`` and ``["macs"]`` both work. A missing, unreadable or non-JSON
    file is an error that names the path and what to do.
    """
    path = Path(path)
    made_by = ("Expected the JSON file that save_subnet_config(pareto, path) writes after "
               "run_evolutionary_search")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problem = "there is no such file" if isinstance(exc, FileNotFoundError) else (
            f"it cannot be read ({exc.strerror or exc})")
        raise type(exc)(f"Cannot load the subnet config {path}: {problem}. {made_by}; check "
                        f"the path (relative paths start at {os.getcwd()}) or run the search "
                        "and save its result first.") from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{path} is not a subnet config: not JSON ({exc}). {made_by}; save "
                         "the Pareto set again with save_subnet_config.") from exc
    if isinstance(data, dict):
        return pareto_with_flops(data)
    if isinstance(data, list):
        return data  # one subnet_setting
    raise ValueError(f"{path} is not a subnet config: {made_by} (a Pareto set, one entry or a "
                     f"subnet_setting list). Received: {type(data).__name__} {data!r:.60}")


class OFAPruner:
    """Capture ``model`` at ``inputs`` once; make OFA models, search and extract subnets.

    ``name`` names the workspace files (default: the class name plus 6 hex digits of the graph
    digest); ``workdir`` is the workspace folder; ``criterion`` ranks channels before they are
    reordered ("l1", "l2", "bn_scale"). The user's model is never changed.
    """

    def __init__(self, model: nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor], *,
                 name: str | None = None, workdir: str | os.PathLike = ".vai",
                 criterion: str = "l1") -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected a torch.nn.Module. Received: model={type(model).__name__}")
        self.model = model
        self.inputs = inputs
        self.criterion = criterion
        self.pruner = ChannelPruner(model, inputs)
        digest = self.pruner.graph.graph_digest()
        self.name = name or f"{type(model).__name__}-{digest[:6]}"
        self.workdir = workdir

    @property
    def original_macs(self) -> float:
        """MACs of the original model, in millions."""
        return self.pruner.original_macs / 1e6

    def ofa_model(
        self,
        expand_ratio: Iterable[float] = DEFAULT_EXPAND_RATIO,
        channel_divisible: int = 8,
        excludes: Iterable[object] | None = None,
        auto_add_excludes: bool = True,
    ) -> nn.Module:
        """A copy of the model, channels reordered by importance, with dynamic layers.

        ``expand_ratio``: fractions of channels *kept* per group (the guide's [0.5, 0.75, 1]);
        widths are rounded to ``channel_divisible`` (at least that, at most all channels).
        ``excludes``: module names or modules kept at full width (a producer's output group; a
        norm's channels). ``auto_add_excludes`` also keeps the first conv and the layers
        feeding the output layer at full width.
        """
        return build_ofa_model(
            self.model, self.pruner.capture, self.pruner.orders(self.criterion), self.name,
            expand_ratio, channel_divisible, excludes, auto_add_excludes,
        )

    # the guide calls these as pruner methods
    @staticmethod
    def sample_subnet(ofa_model: nn.Module, mode: str = "random",
                      rng: np.random.Generator | int | None = None
                      ) -> tuple[nn.Module, SubnetSetting]:
        return sample_subnet(ofa_model, mode, rng)

    @staticmethod
    def sample_random_subnet(ofa_model: nn.Module, rng: np.random.Generator | int | None = None
                             ) -> tuple[nn.Module, SubnetSetting]:
        return sample_random_subnet(ofa_model, rng)

    @staticmethod
    def reset_bn_running_stats_for_calibration(model: nn.Module) -> None:
        reset_bn_running_stats_for_calibration(model)

    @staticmethod
    def get_static_subnet(ofa_model: nn.Module, subnet_setting: object
                          ) -> tuple[nn.Module, dict[str, Any], float, float]:
        return get_static_subnet(ofa_model, subnet_setting)

    @staticmethod
    def save_subnet_config(pareto: Mapping[str, Any], path: str | os.PathLike) -> None:
        save_subnet_config(pareto, path)

    @staticmethod
    def load_subnet_config(path: str | os.PathLike) -> Any:
        return load_subnet_config(path)

    @staticmethod
    def set_subnet(ofa_model: nn.Module, subnet_setting: object) -> nn.Module:
        return set_subnet(ofa_model, subnet_setting)

    def _in_workspace(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Search files go to this pruner's ``workdir`` under its ``name`` unless given."""
        return {"workdir": self.workdir, "name": self.name, "inputs": self.inputs, **kwargs}

    def run_evolutionary_search(self, ofa_model: nn.Module, *args: Any, **kwargs: Any):
        """:func:`~uif_explorer.torch.ofa.search.run_evolutionary_search` in this workspace."""
        from uif_explorer.torch.ofa.search import run_evolutionary_search

        return run_evolutionary_search(ofa_model, *args, **self._in_workspace(kwargs))

    def run_random_search(self, ofa_model: nn.Module, *args: Any, **kwargs: Any):
        """:func:`~uif_explorer.torch.ofa.search.run_random_search` in this workspace."""
        from uif_explorer.torch.ofa.search import run_random_search

        return run_random_search(ofa_model, *args, **self._in_workspace(kwargs))

__all__ = [
    "OFAPruner", "active_setting", "describe", "get_static_subnet", "load_subnet_config",
    "reset_bn_running_stats_for_calibration", "sample_random_subnet", "sample_subnet",
    "save_subnet_config", "set_subnet", "subnet_cost",
]

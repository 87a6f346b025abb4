"""Evolutionary search of an OFA model's subnets under a MACs range (the guide's last OFA step).

Each candidate becomes a static subnet (plain layers), its BatchNorm statistics are
re-estimated by the user's ``calibration_fn(model, *calib_args)`` and it is scored by
``eval_fn(model, *eval_args)``; candidates go through an executor (inline by default,
``'process'`` or ``'ray'``), so a search can spread over workers. MACs and params come from the
analytic cost model (millions). The full history of evaluated candidates is saved atomically to
``<workdir>/<model>_evolution.json`` after every result; running the same search again replays
it from that file without evaluating anything twice (resume after a crash).

The guide writes ``min_flops`` / ``max_flops``: they are accepted and mean MACs in millions
(``conventions.md``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from uif_explorer.core.evolution import (
    EvolutionarySearch,
    SearchConfig,
    check_reachable,
    pareto_front,
    pareto_set,
)
from uif_explorer.exec.executors import get_executor
from uif_explorer.io.workspace import Workspace, WorkspaceError, atomic_write_json, read_json
from uif_explorer.torch.capture import digest_weights
from uif_explorer.torch.evaluation import check_score
from uif_explorer.torch.ofa.pruner import get_static_subnet
from uif_explorer.torch.ofa.space import OFASpace, space_of, unwrap
from uif_explorer.torch.runners import AnalysisError

EVOLUTION_KIND = "uif-explorer-evolution"
Progress = Callable[[int, int, dict[str, Any]], object]


def _say(msg: str) -> None:
    print(f"[uif-explorer] {msg}", file=sys.stderr, flush=True)


class ParetoSet(dict):
    """The guide's Pareto set (``{bin: entry}``) with the search's ``history`` and file path.

    Still a plain ``dict`` for the guide's code (``pareto["240"]["subnet_setting"]``,
    ``save_subnet_config``); ``to_frame()`` and the notebook repr make it readable.
    """

    history: list[dict[str, Any]]
    path: str | None = None
    evaluations: int | None = None

    @classmethod
    def from_search(cls, search: Mapping[str, Any], path: str | None = None) -> ParetoSet:
        """The Pareto set of a saved search file (``load_search`` / ``bundled_search``)."""
        result = cls(search.get("pareto_set", {}))
        result.history = list(search.get("history", []))
        result.path = path
        result.evaluations = search.get("evaluations", len(result.history))
        return result

    def to_frame(self) -> Any:
        """One row per MACs bin: net_id, metric, MACs and params (M), the widths chosen."""
        from uif_explorer.present.reports import pareto_frame

        return pareto_frame(self)

    def __repr__(self) -> str:
        from uif_explorer.present.reports import pareto_text

        try:
            return pareto_text(self)
        except Exception:  # entries of an unexpected shape: the plain dict view
            return dict.__repr__(self)

    def _repr_html_(self) -> str:
        from uif_explorer.present.reports import pareto_html

        return pareto_html(self)


@dataclass
class _SubnetEvalContext:
    """What a worker needs to score one subnet (shipped once per worker)."""

    ofa_model: nn.Module
    calibration_fn: Callable | None
    calib_args: tuple
    eval_fn: Callable
    eval_args: tuple
    metric: str


def _evaluate_subnet(ctx: _SubnetEvalContext, setting: list) -> tuple[float, int]:
    static, _, _, _ = get_static_subnet(ctx.ofa_model, setting)
    if ctx.calibration_fn is not None:
        ctx.calibration_fn(static, *ctx.calib_args)
    try:
        value = ctx.eval_fn(static, *ctx.eval_args)
    except Exception as exc:
        raise AnalysisError(
            f"eval_fn raised {type(exc).__name__}: {exc}. Candidates evaluated so far are "
            "saved; fix eval_fn and run the search again to resume."
        ) from exc
    if isinstance(value, Mapping):
        if ctx.metric not in value:
            raise AnalysisError(f"eval_fn returned a dict without the metric {ctx.metric!r} "
                                f"(keys: {sorted(value)}).")
        value = value[ctx.metric]
    return check_score(value, "eval_fn"), os.getpid()


def _resolve_range(space: OFASpace, min_macs: float | None, max_macs: float | None,
                   min_flops: float | None, max_flops: float | None) -> tuple[float, float]:
    def pick(a: float | None, b: float | None, name: str) -> float | None:
        if a is not None and b is not None and float(a) != float(b):
            raise ValueError(f"Expected either {name}_macs or {name}_flops (the guide's name "
                             f"for the same MACs), not two values. Received: {a} and {b}")
        return a if a is not None else b

    lo, hi = pick(min_macs, min_flops, "min"), pick(max_macs, max_flops, "max")
    small = space.cost_m(space.choice.smallest())[0]
    large = space.cost_m(space.choice.largest())[0]
    return (small if lo is None else lo), (large if hi is None else hi)


def _space_summary(space: OFASpace) -> dict[str, Any]:
    return {
        "groups": [{"group": g.name, "channels": g.channels, "widths": list(g.widths),
                    "modules": g.modules} for g in space.groups],
        "kernels": [{"module": k.module, "kernel_sizes": list(k.kernels)}
                    for k in space.kernels],
        "fixed_groups": [dict(f) for f in space.fixed],
        "ofa_args": dict(space.args),
    }


def _progress(total: int, progress: Progress | None, desc: str):
    bar = None
    if progress is None and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit="subnet")
    return bar


def _run(
    kind: str,
    ofa_model: nn.Module,
    calibration_fn: Callable | None,
    calib_args: Sequence,
    eval_fn: Callable,
    eval_args: Sequence,
    config: SearchConfig,
    executor: object,
    workdir: str | os.PathLike,
    name: str | None,
    forced: bool,
    progress: Progress | None,
    num_random: int | None = None,
) -> ParetoSet:
    if not callable(eval_fn):
        raise TypeError(f"Expected eval_fn to be a function taking the model first. "
                        f"Received: eval_fn={eval_fn!r}")
    if calibration_fn is not None and not callable(calibration_fn):
        raise TypeError(f"Expected calibration_fn to be a function or None. Received: "
                        f"calibration_fn={calibration_fn!r}")
    inner = unwrap(ofa_model)
    space = space_of(inner)
    config.check()
    check_reachable(space.choice, space.cost_m, config.min_macs, config.max_macs)
    model_name = name or space.model_name
    suffix = "_evolution.json" if kind == "evolution" else "_random_search.json"
    path = Workspace(workdir).evolution(model_name)
    path = path.with_name(path.name.replace("_evolution.json", suffix))
    graph_digest = space.capture.graph.graph_digest()
    weights = digest_weights(inner)
    settings = {**config.as_dict(), "kind": kind, "num_random": num_random}
    memo: dict[tuple, dict] = {}
    if path.exists() and not forced:
        old = read_json(path, kind=EVOLUTION_KIND)
        if old.get("graph_digest") != graph_digest:
            raise WorkspaceError(
                f"{path} holds a search of another architecture or OFA space (graph digest "
                f"{old.get('graph_digest')} != {graph_digest}); pass forced=True to replace it,"
                " or use another name= / workdir=.")
        if old.get("weights_digest") == weights and old.get("settings") == settings:
            memo = {tuple(r["genome"]): r for r in old.get("history", [])}
            if memo:
                _say(f"resuming from {path}: {len(memo)} candidates already evaluated")
        else:
            _say(f"{path} was made with other weights or settings; starting afresh")
    search = EvolutionarySearch(space.choice, space.cost_m, config, memo)
    total = search.planned_evaluations() if num_random is None else num_random
    original = space.cost_m(space.choice.largest())
    data: dict[str, Any] = {
        "format_version": 1, "kind": EVOLUTION_KIND, "model": model_name,
        "graph_digest": graph_digest, "weights_digest": weights, "metric": config.metric,
        "mode": config.mode, "settings": settings, "macs_unit": "millions",
        "range": {"min_macs": config.min_macs, "max_macs": config.max_macs,
                  "min_subnet_macs": space.cost_m(space.choice.smallest())[0],
                  "max_subnet_macs": original[0]},
        "space": _space_summary(space), "history": [], "generations_done": None,
        "complete": False,
    }
    start = time.perf_counter()

    def save() -> None:
        data["history"] = search.history
        data["evaluations"] = len(search.history)
        data["seconds"] = round(time.perf_counter() - start, 3)
        scored = search.history
        data["pareto_set"] = pareto_set(scored, config.metric, config.mode, config.macs_step)
        data["pareto_front"] = [r["net_id"] for r in
                                pareto_front(scored, config.metric, config.mode)]
        atomic_write_json(path, data)

    bar = _progress(total, progress, model_name)
    done = 0

    def on_result(rec: dict) -> None:
        nonlocal done
        rec["mode"] = "evaluate"
        rec["subnet_setting"] = space.setting(tuple(rec["genome"]))
        if rec["net_id"] in pids:
            rec["worker_pid"] = pids.pop(rec["net_id"])
        done += 1
        save()
        if progress is not None:
            progress(done, total, {"net_id": rec["net_id"], config.metric: rec[config.metric],
                                   "macs": rec["macs"]})
        if bar is not None:
            bar.update(1)

    def on_generation(gen: int) -> None:
        data["generations_done"] = gen
        save()

    ctx = _SubnetEvalContext(inner, calibration_fn, tuple(calib_args), eval_fn,
                             tuple(eval_args), config.metric)
    runner = get_executor(executor)

    pids: dict[str, int] = {}

    def evaluate(batch: list[tuple[str, tuple]]):
        items = [space.setting(g) for _, g in batch]
        for index, (score, pid) in runner.run(_evaluate_subnet, ctx, items):
            pids[batch[index][0]] = pid
            yield index, score

    try:
        if num_random is None:
            search.run(evaluate, on_result, on_generation)
        else:
            search.run_random(num_random, evaluate, on_result)
    finally:
        if bar is not None:
            bar.close()
    data["complete"] = True
    save()
    result = ParetoSet(data["pareto_set"])
    result.history = search.history
    result.path = str(path)
    result.evaluations = search.evaluations
    return result


def run_evolutionary_search(
    ofa_model: nn.Module,
    calibration_fn: Callable | None = None,
    calib_args: Sequence = (),
    eval_fn: Callable | None = None,
    eval_args: Sequence = (),
    metric: str = "acc1",
    mode: str = "max",
    min_macs: float | None = None,
    max_macs: float | None = None,
    macs_step: float = 10,
    parent_popu_size: int = 16,
    iteration: int = 10,
    mutate_size: int = 8,
    mutate_prob: float = 0.2,
    crossover_size: int = 4,
    executor: object = None,
    *,
    min_flops: float | None = None,
    max_flops: float | None = None,
    seed: int = 0,
    workdir: str | os.PathLike = ".vai",
    name: str | None = None,
    forced: bool = False,
    progress: Progress | None = None,
    max_attempts: int = 200,
) -> ParetoSet:
    """Search subnets with ``min_macs <= MACs <= max_macs`` (millions); the Pareto set.

    The result maps MACs bins (``round(macs / macs_step) * macs_step``, printed with
    ``macs_step``'s decimals) to the best candidate of the bin, in the guide's shape
    ``{"230": {"net_id", "mode", <metric>, "macs", "params", "subnet_setting"}}``. ``mode``:
    'max' when a higher metric is better, 'min' otherwise. Without a range the whole span from
    the min to the max subnet is searched. ``result.history`` lists every evaluated candidate
    (also in ``<workdir>/<name>_evolution.json``).

    An initial population of ``parent_popu_size`` (the max and min subnets when in range, then
    random in-range subnets) is followed by ``iteration`` generations of ``mutate_size``
    mutations and ``crossover_size`` crossovers of the parents (best of each MACs bin first,
    then by Pareto rank); each generation is evaluated, the last one included.
    """
    space = space_of(ofa_model)
    lo, hi = _resolve_range(space, min_macs, max_macs, min_flops, max_flops)
    config = SearchConfig(metric, mode, lo, hi, macs_step, parent_popu_size, iteration,
                          mutate_size, mutate_prob, crossover_size, seed, max_attempts)
    return _run("evolution", ofa_model, calibration_fn, calib_args, eval_fn, eval_args,
                config, executor, workdir, name, forced, progress)


def run_random_search(
    ofa_model: nn.Module,
    calibration_fn: Callable | None = None,
    calib_args: Sequence = (),
    eval_fn: Callable | None = None,
    eval_args: Sequence = (),
    metric: str = "acc1",
    mode: str = "max",
    min_macs: float | None = None,
    max_macs: float | None = None,
    macs_step: float = 10,
    num_subnets: int = 50,
    executor: object = None,
    *,
    min_flops: float | None = None,
    max_flops: float | None = None,
    seed: int = 0,
    workdir: str | os.PathLike = ".vai",
    name: str | None = None,
    forced: bool = False,
    progress: Progress | None = None,
    max_attempts: int = 200,
) -> ParetoSet:
    """``num_subnets`` distinct random subnets in the MACs range (a baseline for the search).

    Same result shape as :func:`run_evolutionary_search`; history in
    ``<workdir>/<name>_random_search.json``.
    """
    if isinstance(num_subnets, bool) or not isinstance(num_subnets, (int, np.integer)) \
            or num_subnets < 1:
        raise ValueError(f"Expected num_subnets >= 1. Received: num_subnets={num_subnets!r}")
    space = space_of(ofa_model)
    lo, hi = _resolve_range(space, min_macs, max_macs, min_flops, max_flops)
    config = SearchConfig(metric, mode, lo, hi, macs_step, 1, 0, 0, 0.0, 0, seed, max_attempts)
    return _run("random", ofa_model, calibration_fn, calib_args, eval_fn, eval_args, config,
                executor, workdir, name, forced, progress, num_random=int(num_subnets))


def load_search(path: str | os.PathLike) -> dict[str, Any]:
    """A saved search file (history, Pareto set and front), checked to be one."""
    return read_json(path, kind=EVOLUTION_KIND)


__all__ = ["ParetoSet", "load_search", "run_evolutionary_search", "run_random_search"]

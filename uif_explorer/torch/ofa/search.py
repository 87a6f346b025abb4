"""Evolutionary search of an OFA model's subnets under a MACs range (the guide's last OFA step).

Each candidate becomes a static subnet (plain layers), its BatchNorm statistics are
re-estimated by the user's ``calibration_fn(model, *calib_args)`` and it is scored by
``eval_fn(model, *eval_args)``; candidates go through an executor (inline by default,
``'process'`` or ``'ray'``), so a search can spread over workers. MACs and params come from the
analytic cost model (millions). The full history of evaluated candidates is saved atomically to
``<workdir>/<model>_evolution.json`` after every result; running the same search again replays
it from that file without evaluating anything twice (resume after a crash).

The guide's positional call and its names (``evaluation_metric``, ``min_flops``...) bind to one
:class:`~uif_explorer.core.evolution.SearchConfig` for both searches; "FLOPs" there means MACs
in millions (``conventions.md``), and every Pareto entry carries both ``macs`` and ``flops``.
Scoring a subnet is :func:`~uif_explorer.core.scores.score_model`, as in the pruning runners.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from torch import nn

from uif_explorer.core.evolution import (
    EVOLUTION_SETTINGS,
    EvolutionarySearch,
    SearchConfig,
    check_reachable,
    pareto_front_on,
    pareto_set_on,
)
from uif_explorer.core.pareto import pareto_with_flops
from uif_explorer.core.runner import check_callable, say
from uif_explorer.core.scores import score_model
from uif_explorer.exec.executors import get_executor
from uif_explorer.io.workspace import Workspace, WorkspaceError, atomic_write_json, read_json
from uif_explorer.torch.capture import digest_weights
from uif_explorer.torch.device import to_job_device
from uif_explorer.torch.ofa.pruner import get_static_subnet
from uif_explorer.torch.ofa.space import OFASpace, space_of, unwrap

EVOLUTION_KIND = "uif-explorer-evolution"
Progress = Callable[[int, int, dict[str, Any]], object]
_RANGE = ("metric", "mode", "min_macs", "max_macs", "macs_step")
# the settings after eval_args, in the guide's positional order (then the executor)
EVOLUTION_ORDER = (*_RANGE, *EVOLUTION_SETTINGS, "executor")
RANDOM_ORDER = (*_RANGE, "num_subnets", "executor")
DEFAULT_NUM_SUBNETS = 50


@dataclass
class RunOptions:
    """Where and how a search runs, as opposed to what it searches (:class:`SearchConfig`)."""

    executor: object = None  # None/'inline', 'process', 'ray' or an executor object
    workdir: str | os.PathLike = ".vai"
    name: str | None = None  # file names; default: the OFA model's name
    forced: bool = False  # replace a saved search instead of resuming it
    progress: Progress | None = None  # progress(done, total, info); else tqdm on a terminal
    inputs: Any = None  # an example input: what target='latency' times the subnets at
    latency_runtime: str = "eager"  # or "onnxruntime" (target='latency')
    latency_threads: int | None = None  # intra-op threads it is timed with (default: torch's)


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
        result = cls(pareto_with_flops(search.get("pareto_set", {})))
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
    calib_args: Sequence
    eval_fn: Callable
    eval_args: Sequence
    metric: str
    resume_hint: str


def _evaluate_subnet(ctx: _SubnetEvalContext, item: tuple[str, list]) -> tuple[float, int]:
    net_id, setting = item
    static, _, _, _ = get_static_subnet(ctx.ofa_model, setting)
    static = to_job_device(static)  # a fresh copy: on the app's / CLI's device (torch/device.py)
    score = score_model(static, ctx.eval_fn, ctx.eval_args, calibration_fn=ctx.calibration_fn,
                        calib_args=ctx.calib_args, metric=ctx.metric,
                        resume_hint=ctx.resume_hint, what=f"subnet {net_id}")
    return score, os.getpid()


def _space_summary(space: OFASpace) -> dict[str, Any]:
    return {
        "groups": [{"group": g.name, "channels": g.channels, "widths": list(g.widths),
                    "modules": g.modules} for g in space.groups],
        "kernels": [{"module": k.module, "kernel_sizes": list(k.kernels)}
                    for k in space.kernels],
        "fixed_groups": [dict(f) for f in space.fixed],
        "ofa_args": dict(space.args),
    }


def _progress_bar(total: int, progress: Progress | None, desc: str):
    if progress is None and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="subnet")
    return None


def _bind(func: str, order: Sequence[str], settings: Sequence[Any], config: SearchConfig | None,
          options: Mapping[str, Any]) -> tuple[SearchConfig, RunOptions]:
    """The call's settings (positional in ``order``, keywords, guide spellings) as objects."""
    run_names = [f.name for f in fields(RunOptions)]
    allowed = {*order, "seed", "max_attempts", "target", *run_names}
    bound = SearchConfig.bind(func, order, settings, options, allowed)
    run = RunOptions(**{k: bound.pop(k) for k in run_names if k in bound})
    if config is not None and not isinstance(config, SearchConfig):
        raise TypeError(f"Expected config to be a SearchConfig. Received: config={config!r}")
    return replace(config or SearchConfig(), **bound), run


def _saved_results(path: Path, graph_digest: str, weights: str, settings: Mapping[str, Any]
                   ) -> dict[tuple, dict]:
    """Candidates a saved search of the same weights and settings already scored, by genome.

    A file of another architecture is refused (it would be overwritten); other weights or
    settings start afresh (the file is replaced as the new search goes).
    """
    if not path.exists():
        return {}
    old = read_json(path, kind=EVOLUTION_KIND)
    if old.get("graph_digest") != graph_digest:
        raise WorkspaceError(
            f"{path} holds a search of another architecture or OFA space (graph digest "
            f"{old.get('graph_digest')} != {graph_digest}); pass forced=True to replace it,"
            " or use another name= / workdir=.")
    if old.get("weights_digest") != weights or old.get("settings") != settings:
        say(f"{path} was made with other weights or settings; starting afresh")
        return {}
    memo = {tuple(r["genome"]): r for r in old.get("history", [])}
    if memo:
        say(f"resuming from {path}: {len(memo)} candidates already evaluated")
    return memo


def _search(ofa_model: nn.Module, calibration_fn: Callable | None, calib_args: Sequence,
            eval_fn: Callable, eval_args: Sequence, config: SearchConfig,
            run: RunOptions) -> ParetoSet:
    """Run (or resume) the search ``config`` describes; its Pareto set."""
    check_callable(eval_fn, "eval_fn")
    if calibration_fn is not None:
        check_callable(calibration_fn, "calibration_fn")
    inner = unwrap(ofa_model)
    space = space_of(inner)
    model_name = run.name or space.model_name
    latency = _subnet_latency(ofa_model, config, run, model_name)
    axis = space.cost_m if latency is None else (lambda g: (latency(g), 0.0))
    smallest, largest = axis(space.choice.smallest()), axis(space.choice.largest())
    config = config.with_span(smallest[0], largest[0]).check()
    key = "macs" if latency is None else "latency_ms"
    check_reachable(space.choice, axis, config.min_macs, config.max_macs, key)
    kind = "evolution" if config.num_subnets is None else "random"
    path = Workspace(run.workdir).evolution(model_name)
    if kind == "random":
        path = path.with_name(path.name.replace("_evolution.json", "_random_search.json"))
    graph_digest = space.capture.graph.graph_digest()
    weights = digest_weights(inner)
    settings = {**config.as_dict(), "kind": kind, "num_random": config.num_subnets}
    memo = {} if run.forced else _saved_results(path, graph_digest, weights, settings)
    search = EvolutionarySearch(space.choice, space.cost_m, config, memo, latency)
    total = search.planned_evaluations()
    data: dict[str, Any] = {
        "format_version": 1, "kind": EVOLUTION_KIND, "model": model_name,
        "graph_digest": graph_digest, "weights_digest": weights, "metric": config.metric,
        "mode": config.mode, "settings": settings, "macs_unit": "millions",
        "target": config.target, "range_unit": "M MACs" if latency is None else "ms",
        "range": {"min_macs": config.min_macs, "max_macs": config.max_macs,
                  "min_subnet_macs": smallest[0], "max_subnet_macs": largest[0]},
        "space": _space_summary(space), "history": [], "generations_done": None,
        "complete": False,
    }
    start = time.perf_counter()

    def save() -> None:
        scored = search.history
        data["history"] = scored
        data["evaluations"] = len(scored)
        data["seconds"] = round(time.perf_counter() - start, 3)
        data["pareto_set"] = pareto_set_on(scored, config.metric, config.mode,
                                           config.macs_step, key)
        data["pareto_front"] = [r["net_id"] for r in
                                pareto_front_on(scored, config.metric, config.mode, key)]
        atomic_write_json(path, data)

    bar = _progress_bar(total, run.progress, model_name)
    pids: dict[str, int] = {}

    def on_result(rec: dict) -> None:
        rec["mode"] = "evaluate"
        rec["subnet_setting"] = space.setting(tuple(rec["genome"]))
        if rec["net_id"] in pids:
            rec["worker_pid"] = pids.pop(rec["net_id"])
        save()
        if run.progress is not None:
            run.progress(len(search.history), total, {
                "net_id": rec["net_id"], config.metric: rec[config.metric], "macs": rec["macs"]})
        if bar is not None:
            bar.update(1)

    def on_generation(gen: int) -> None:
        data["generations_done"] = gen
        save()

    hint = (f"Candidates evaluated so far are saved in {path}; fix it and run the search "
            "again to resume.")
    ctx = _SubnetEvalContext(inner, calibration_fn, calib_args, eval_fn, eval_args,
                             config.metric, hint)
    executor = get_executor(run.executor)

    def evaluate(batch: list[tuple[str, tuple]]):
        items = [(net_id, space.setting(g)) for net_id, g in batch]
        for index, (score, pid) in executor.run(_evaluate_subnet, ctx, items):
            pids[batch[index][0]] = pid
            yield index, score

    try:
        search.search(evaluate, on_result, on_generation)
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


def _subnet_latency(ofa_model: nn.Module, config: SearchConfig, run: RunOptions,
                    model_name: str) -> Callable | None:
    """``genome -> predicted ms`` for ``target='latency'`` (the table measured once per
    machine and saved as ``<name>-ofa_<runtime>.latency``); None for a MACs search."""
    if config.target != "latency":
        return None
    if run.inputs is None:
        raise ValueError("Expected inputs= (an example input, e.g. torch.randn(1, 3, 224, 224))"
                         " for target='latency': the subnets' layers are timed at it. "
                         "OFAPruner.run_evolutionary_search passes its own. Received: "
                         "inputs=None")
    from uif_explorer.torch.ofa.latency import subnet_latency

    path = Workspace(run.workdir).latency(f"{model_name}-ofa", run.latency_runtime)
    return subnet_latency(ofa_model, run.inputs, path, run.latency_runtime, run.latency_threads)


def run_evolutionary_search(ofa_model: nn.Module, calibration_fn: Callable | None = None,
                            calib_args: Sequence = (), eval_fn: Callable | None = None,
                            eval_args: Sequence = (), *settings: Any,
                            config: SearchConfig | None = None, **options: Any) -> ParetoSet:
    """Search subnets with ``min_macs <= MACs <= max_macs`` (millions); the Pareto set.

    The guide's call works as written, positionally::

        run_evolutionary_search(ofa_model, calibration_fn, calib_args, eval_fn, eval_args,
                                evaluation_metric, min_or_max_metric, min_flops, max_flops,
                                flops_step, parent_popu_size, iteration, mutate_size,
                                mutate_prob, crossover_size[, executor])

    or by keyword, in the guide's spelling or this project's: ``metric='acc1'``
    (``evaluation_metric``), ``mode='max'`` (``min_or_max_metric``; 'min' when lower is
    better), ``min_macs`` / ``max_macs`` (``min_flops`` / ``max_flops``: the same M MACs;
    default: the whole span from the min to the max subnet), ``macs_step`` (``flops_step``;
    default: a readable step giving ~20 bins over that span), ``parent_popu_size=16``,
    ``iteration=10``, ``mutate_size=8``, ``mutate_prob=0.2``, ``crossover_size=4``,
    ``executor=None`` ('process', 'ray'), and keyword only ``seed=0``, ``max_attempts=200``,
    ``workdir='.vai'``, ``name=None``, ``forced=False``, ``progress=None``,
    ``target='macs'`` (``'latency'``: range, bins and front on this machine's predicted
    latency, the range in ms; needs ``inputs=`` an example input, ``latency_runtime=``
    'eager' or 'onnxruntime', ``latency_threads=``; entries then carry ``latency_ms`` too). A
    :class:`~uif_explorer.core.evolution.SearchConfig` given as ``config=`` supplies defaults.

    The result maps MACs bins (``round(macs / macs_step) * macs_step``, printed with
    ``macs_step``'s decimals) to the best candidate of the bin, in the guide's shape
    ``{"230": {"net_id", "mode", <metric>, "macs", "flops", "params", "subnet_setting"}}``
    (``flops`` = ``macs``, M MACs). ``result.history`` lists every evaluated candidate (also
    in ``<workdir>/<name>_evolution.json``, written after each one: a second run resumes).

    An initial population of ``parent_popu_size`` (the max and min subnets when in range, then
    random in-range subnets) is followed by ``iteration`` generations of ``mutate_size``
    mutations and ``crossover_size`` crossovers of the parents (best of each MACs bin first,
    then by Pareto rank); each generation is evaluated, the last one included. A failing
    ``calibration_fn`` or ``eval_fn`` raises ``AnalysisError`` naming it and the subnet.
    """
    config, run = _bind("run_evolutionary_search", EVOLUTION_ORDER, settings, config, options)
    return _search(ofa_model, calibration_fn, calib_args, eval_fn, eval_args,
                   replace(config, num_subnets=None), run)


def run_random_search(ofa_model: nn.Module, calibration_fn: Callable | None = None,
                      calib_args: Sequence = (), eval_fn: Callable | None = None,
                      eval_args: Sequence = (), *settings: Any,
                      config: SearchConfig | None = None, **options: Any) -> ParetoSet:
    """``num_subnets`` (default 50) distinct random subnets in the MACs range (a baseline).

    Settings after ``eval_args``, positional or by keyword: ``metric``, ``mode``,
    ``min_macs``, ``max_macs``, ``macs_step``, ``num_subnets``, ``executor`` (the guide's
    spellings and the keyword-only options as in :func:`run_evolutionary_search`). Same result
    shape; history in ``<workdir>/<name>_random_search.json``.
    """
    config, run = _bind("run_random_search", RANDOM_ORDER, settings, config, options)
    if config.num_subnets is None:
        config = replace(config, num_subnets=DEFAULT_NUM_SUBNETS)
    return _search(ofa_model, calibration_fn, calib_args, eval_fn, eval_args, config, run)


def load_search(path: str | os.PathLike) -> dict[str, Any]:
    """A saved search file (history, Pareto set and front), checked to be one.

    Pareto-set entries carry the guide's ``flops`` next to ``macs`` (files written before
    entries had it included).
    """
    search = read_json(path, kind=EVOLUTION_KIND)
    if isinstance(search.get("pareto_set"), Mapping):
        search["pareto_set"] = pareto_with_flops(search["pareto_set"])
    return search


__all__ = ["EVOLUTION_ORDER", "RANDOM_ORDER", "ParetoSet", "RunOptions", "load_search",
           "run_evolutionary_search", "run_random_search"]

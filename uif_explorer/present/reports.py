"""Readable tables and summaries of runners and workspace files, for notebooks and the REPL.

The runners and ``ParetoSet`` only forward to these functions, so a Keras runner, a PyTorch
runner and a file loaded by hand read the same way. Framework-neutral: torch / Keras are only
touched through the objects handed in (``layer_widths`` looks at a model's type lazily), never
imported here. Units follow the conventions: MACs and params in millions, ratios as fractions.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from uif_explorer.core.sensitivity import ratio_key

SENS_COLUMNS = ["group", "name", "channels", "prunable", "baseline"]
SEARCH_COLUMNS = ["id", "macs_m", "params_m", "removed_pct", "score", "rank", "best"]
PARETO_COLUMNS = ["bin", "net_id", "macs_m", "params_m", "widths"]
ENTRY_FIELDS = {"net_id", "mode", "macs", "params", "subnet_setting", "flops", "generation",
                "origin", "genome", "worker_pid"}


def load(obj: str | os.PathLike | Mapping[str, Any]) -> Mapping[str, Any]:
    """A workspace JSON dict from a path, or the dict itself (so every helper takes both)."""
    if isinstance(obj, (str, os.PathLike)):
        return json.loads(Path(obj).read_text())
    return obj


def ratio_column(ratio: float) -> str:
    """The column name of one sensitivity ratio: ``"removed 30%"``-style, readable in a table."""
    return f"removed {ratio_key(100 * float(ratio))}%"


# -- sensitivity -----------------------------------------------------------------------------
def sensitivity_frame(sens: str | os.PathLike | Mapping[str, Any]) -> pd.DataFrame:
    """One row per group: its score with each analysed fraction of its channels removed.

    Columns: group, name, channels, prunable, baseline, one ``removed <r>%`` column per ratio
    (NaN where not analysed yet, e.g. an unfinished analysis or an excluded group) and
    ``worst_drop``: the largest score loss over the curve (sign follows ``higher_is_better``),
    which is what decides how much the allocation prunes the group.
    """
    sens = load(sens)
    ratios = [float(r) for r in sens.get("ratios", [])]
    cols = [ratio_column(r) for r in ratios]
    baseline = sens.get("baseline")
    sign = 1.0 if sens.get("higher_is_better", True) else -1.0
    rows = []
    for g in sens.get("groups", []):
        by_key = {ratio_key(r): float(s) for r, s in g.get("curve", [])}
        row: dict[str, Any] = {
            "group": g.get("id"), "name": g.get("name"), "channels": g.get("num_channels"),
            "prunable": bool(g.get("prunable", True)), "baseline": baseline,
        }
        for r, c in zip(ratios, cols):
            row[c] = by_key.get(ratio_key(r), float("nan"))
        drops = [sign * (float(baseline) - s) for s in by_key.values()] if baseline is not None \
            else []
        row["worst_drop"] = max(drops) if drops else float("nan")
        rows.append(row)
    return pd.DataFrame(rows, columns=SENS_COLUMNS + cols + ["worst_drop"])


# -- one-step search -------------------------------------------------------------------------
def search_frame(search: str | os.PathLike | Mapping[str, Any],
                 group_ratios: bool = False) -> pd.DataFrame:
    """One row per candidate, in id order: MACs and params (M), MACs removed (%), score, rank.

    ``rank`` is 1 for the best scored candidate (computed from the scores, ties by id, never
    implied by position); unscored candidates have no rank. ``group_ratios=True`` adds one
    column per prunable group with the fraction of its channels the candidate removes.
    """
    search = load(search)
    sign = -1.0 if search.get("higher_is_better", True) else 1.0
    cands = sorted(search.get("candidates", []), key=lambda c: int(c["id"]))
    scored = sorted((c for c in cands if c.get("score") is not None),
                    key=lambda c: (sign * float(c["score"]), int(c["id"])))
    rank = {int(c["id"]): i + 1 for i, c in enumerate(scored)}
    groups = [g for g in search.get("groups", []) if g.get("prunable", True)]
    rows = []
    for c in cands:
        cid = int(c["id"])
        row: dict[str, Any] = {
            "id": cid, "macs_m": float(c["macs"]), "params_m": float(c["params"]),
            "removed_pct": 100.0 * float(c.get("removal", 0.0)),
            "score": None if c.get("score") is None else float(c["score"]),
            "rank": rank.get(cid), "best": rank.get(cid) == 1,
        }
        if group_ratios:
            for g in groups:
                row[str(g.get("name", g["id"]))] = float(c.get("ratios", {}).get(str(g["id"]),
                                                                                0.0))
        rows.append(row)
    extra = [str(g.get("name", g["id"])) for g in groups] if group_ratios else []
    frame = pd.DataFrame(rows, columns=SEARCH_COLUMNS + extra)
    frame["rank"] = frame["rank"].astype("Int64")
    return frame


# -- OFA Pareto set --------------------------------------------------------------------------
def pareto_metric(pareto: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The metric key of Pareto entries (the one number that is not MACs/params/ids)."""
    for entry in pareto.values():
        for key, value in entry.items():
            if key not in ENTRY_FIELDS and isinstance(value, (int, float)) \
                    and not isinstance(value, bool):
                return str(key)
    return None


def _widths(setting: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for e in setting or []:
        if "group" in e:
            parts.append(f"{e['group']}={e.get('width')}")
        elif "module" in e:
            parts.append(f"{e['module']}:k{e.get('kernel_size')}")
    return ", ".join(parts)


def pareto_frame(pareto: str | os.PathLike | Mapping[str, Any]) -> pd.DataFrame:
    """One row per MACs bin of a Pareto set (the guide's ``{bin: entry}``), bins ascending.

    Also takes a whole search file (its ``pareto_set``). Columns: bin, net_id, the metric,
    macs_m, params_m and ``widths``, the subnet_setting written as ``group=width`` pairs.
    """
    pareto = load(pareto)
    if "pareto_set" in pareto and "history" in pareto:
        pareto = pareto["pareto_set"]
    metric = pareto_metric(pareto) or "score"
    rows = []
    for key, e in pareto.items():
        rows.append({
            "bin": key, "net_id": e.get("net_id"),
            metric: None if e.get(metric) is None else float(e[metric]),
            "macs_m": float(e.get("macs", e.get("flops", float("nan")))),
            "params_m": float(e.get("params", float("nan"))),
            "widths": _widths(e.get("subnet_setting", [])),
        })
    cols = PARETO_COLUMNS[:2] + [metric] + PARETO_COLUMNS[2:]
    frame = pd.DataFrame(rows, columns=cols)
    return frame.sort_values("macs_m", kind="stable").reset_index(drop=True)


def pareto_text(pareto: Mapping[str, Any]) -> str:
    """A short plain-text summary (bins, metric range, evaluations) for ``repr``."""
    metric = pareto_metric(pareto) or "score"
    head = f"ParetoSet({len(pareto)} bins"
    evaluations = getattr(pareto, "evaluations", None)
    if evaluations is not None:
        head += f" from {evaluations} evaluated subnets"
    head += ")"
    if not pareto:
        return head
    frame = pareto_frame(pareto)[["bin", "net_id", metric, "macs_m", "params_m"]]
    return head + "\n" + frame.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def pareto_html(pareto: Mapping[str, Any]) -> str:
    """The Pareto table as HTML, with a caption, for notebooks."""
    caption = html.escape(pareto_text(pareto).splitlines()[0])
    return f"<p><b>{caption}</b></p>" + pareto_frame(pareto).to_html(index=False)


# -- models ----------------------------------------------------------------------------------
def layer_widths(model: Any) -> dict[str, int]:
    """Output channels of every conv / dense layer that still carry weights, by layer name.

    A sparse model keeps its shapes and zeroes the pruned channels, so channels whose weights
    are all zero are not counted: a sparse model and its slim twin give the same widths, which
    is what a before/after chart should show. Works for torch ``nn.Module`` and Keras models.
    """
    if hasattr(model, "named_modules"):
        return _torch_widths(model)
    if hasattr(model, "layers"):
        return _keras_widths(model)
    raise TypeError(f"Expected a torch.nn.Module or a keras.Model. Received: {type(model)!r}")


def _live(weight: Any, axis: int) -> int:
    import numpy as np

    w = np.asarray(weight)
    w = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    return int((np.abs(w).sum(axis=1) > 0).sum())


def _torch_widths(model: Any) -> dict[str, int]:
    from torch import nn

    widths = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            w = m.weight.detach().cpu().float().numpy()
            if m.transposed:  # (in, out / groups, ...): live outputs per group position
                widths[name] = _live(w, 1) * m.groups
            else:
                widths[name] = _live(w, 0)
        elif isinstance(m, nn.Linear):
            widths[name] = _live(m.weight.detach().cpu().float().numpy(), 0)
    return widths


def _keras_widths(model: Any) -> dict[str, int]:
    widths: dict[str, int] = {}

    def walk(layers: Sequence[Any], prefix: str) -> None:
        for layer in layers:
            name = prefix + layer.name
            if hasattr(layer, "layers") and layer.layers:
                walk(layer.layers, name + "/")
                continue
            kernel = getattr(layer, "kernel", None)
            if kernel is None or not (hasattr(layer, "filters") or hasattr(layer, "units")):
                continue
            w = kernel.numpy() if hasattr(kernel, "numpy") else kernel
            axis = -2 if "Transpose" in type(layer).__name__ else -1
            widths[name] = _live(w, axis % len(w.shape))

    walk(model.layers, "")
    return widths


def width_frame(before: Mapping[str, int], after: Mapping[str, int]) -> pd.DataFrame:
    """Per layer (``before``'s order): channels before, after, and the fraction removed."""
    rows = [{"layer": k, "before": int(v), "after": int(after.get(k, v)),
             "removed": round(1 - int(after.get(k, v)) / int(v), 4) if v else 0.0}
            for k, v in before.items()]
    return pd.DataFrame(rows, columns=["layer", "before", "after", "removed"])


# -- runners ---------------------------------------------------------------------------------
def runner_facts(runner: Any) -> dict[str, Any]:
    """What a runner is about, in a few numbers: model name, MACs, params, groups, files."""
    pr = runner.pruner
    groups = pr.graph.groups
    sens_path = runner.workspace.sens(runner.name)
    status = "none"
    if sens_path.exists():
        try:
            status = "finished" if load(sens_path).get("complete") else "unfinished"
        except ValueError:
            status = "unreadable"
    searches = sorted(p.name for p in runner.workspace.root.glob(f"{runner.name}_ratio_*.search"))
    return {
        "runner": type(runner).__name__,
        "framework": getattr(pr, "framework", "") or "torch",
        "name": runner.name,
        "macs_m": pr.original_macs / 1e6,
        "params_m": pr.original_params / 1e6,
        "groups": len(groups),
        "prunable_groups": sum(1 for g in groups if g.prunable),
        "criterion": runner.criterion,
        "workspace": str(runner.workspace.root),
        "analysis": status,
        "searches": searches,
    }


def runner_text(runner: Any) -> str:
    """One line per fact, for ``repr(runner)``."""
    f = runner_facts(runner)
    return (f"{f['runner']}({f['name']!r}, {f['framework']}): {f['macs_m']:.3f} M MACs, "
            f"{f['params_m']:.4f} M params, {f['prunable_groups']}/{f['groups']} groups "
            f"prunable, criterion {f['criterion']}; workspace {f['workspace']} (analysis: "
            f"{f['analysis']}; searches: {', '.join(f['searches']) or 'none'})")


def runner_html(runner: Any) -> str:
    """The facts and the groups table as HTML, for notebooks."""
    f = runner_facts(runner)
    facts = "".join(
        f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
        f"<td style='text-align:left'>{html.escape(_fmt(v))}</td></tr>" for k, v in f.items())
    groups = runner.pruner.groups_table().to_html(index=False)
    return (f"<div><table>{facts}</table><details><summary>{f['groups']} channel groups"
            f"</summary>{groups}</details></div>")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ", ".join(map(str, v)) or "none"
    return str(v)


__all__ = ["layer_widths", "load", "pareto_frame", "pareto_html", "pareto_metric",
           "pareto_text", "runner_facts", "runner_html", "runner_text", "search_frame",
           "sensitivity_frame", "width_frame"]


ORIGINS = {"uniform": "uniform L1"}  # a candidate's ``origin`` in a .search file, as shown


def candidate_origin(candidate: Mapping[str, Any]) -> str:
    """Where a candidate's plan came from: "sampled" (EagleEye) or the built-in uniform plan
    that refinement carries, so a person can see when the search's pick is the plain one."""
    return ORIGINS.get(str(candidate.get("origin", "")), "sampled")


def candidates_table(search: Mapping[str, Any]) -> pd.DataFrame:
    """The One-step page's table: one row per candidate (id, where its plan came from, MACs
    (M), params (M), MACs removed (%), score, the images it was scored on, the best)."""
    best = search.get("ranking", [None])[0] if search.get("ranking") else None
    rows = [{
        "id": int(c["id"]),
        "plan": candidate_origin(c),
        "macs_m": round(float(c["macs"]), 4),
        "params_m": round(float(c["params"]), 4),
        "removed_pct": round(100 * float(c.get("removal", 0.0)), 2),
        "score": None if c.get("score") is None else round(float(c["score"]), 3),
        "images": c.get("images"),
        "best": c["id"] == best,
    } for c in search.get("candidates", [])]
    return pd.DataFrame(rows, columns=["id", "plan", "macs_m", "params_m", "removed_pct",
                                       "score", "images", "best"])


def candidate_ratios_table(search: Mapping[str, Any], ids: Sequence[int]) -> pd.DataFrame:
    """Per prunable group (rows) the fraction of channels removed by each chosen candidate."""
    by_id = {int(c["id"]): c for c in search.get("candidates", [])}
    rows = []
    for g in search.get("groups", []):
        if not g.get("prunable", True):
            continue
        row = {"group": g["id"], "name": g["name"], "channels": g["num_channels"]}
        for cid in ids:
            c = by_id.get(int(cid))
            if c is not None:
                row[f"candidate {cid}"] = float(c.get("ratios", {}).get(str(g["id"]), 0.0))
        rows.append(row)
    return pd.DataFrame(rows)


def refinement_table(search: Mapping[str, Any]) -> pd.DataFrame:
    """The refinement stages of a ``.search`` file: one row per candidate that was fine-tuned,
    its adaptive-BN score, then its score after each stage's fine-tune (None where it did not
    get there), the last stage it reached, the image count of the scores, and the winner."""
    state = search.get("refinement") or {}
    stages = state.get("stages", [])
    by_id = {int(c["id"]): c for c in search.get("candidates", [])}
    columns = [f"stage {s['stage']} ({s['budget']} batches)" for s in stages]
    winner = state.get("winner") if state.get("complete") else None
    rows = []
    for cid in (stages[0]["candidates"] if stages else []):
        cand = by_id.get(int(cid), {})
        row: dict[str, Any] = {"candidate": int(cid), "plan": candidate_origin(cand),
                               "adaptive_bn": cand.get("score")}
        reached = 0
        for col, s in zip(columns, stages, strict=True):
            value = s.get("scores", {}).get(str(cid))
            row[col] = None if value is None else round(float(value), 3)
            reached = s["stage"] if int(cid) in s["candidates"] else reached
        images = [s.get("images") for s in stages if s.get("images")]
        row.update(reached=reached, images=images[-1] if images else cand.get("images"),
                   winner=winner is not None and int(cid) == int(winner))
        rows.append(row)
    return pd.DataFrame(rows, columns=["candidate", "plan", "adaptive_bn", *columns, "reached",
                                       "images", "winner"])

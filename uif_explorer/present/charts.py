"""Plotly figures of the workspace files: the ONE chart module of the app and the notebooks.

Every function takes the workspace JSON dicts as they are on disk (``.sens``, ``.search``) or
plain per-layer width mappings and returns a ``plotly.graph_objects.Figure``. No streamlit here.
Units follow docs conventions: MACs in millions, ratios as fractions shown in percent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.colors
import plotly.graph_objects as go

SCORE_TITLE = "Score (top-1 accuracy, %)"
BEST_COLOR = "#d62728"
POINT_COLOR = "#1f77b4"


def _score_title(data: Mapping[str, Any]) -> str:
    metric = data.get("metric", "score")
    if metric in (None, "score", "top1", "accuracy"):
        return SCORE_TITLE
    return f"Score ({metric})"


def _layers_label(modules: Sequence[str], limit: int = 12) -> str:
    names = list(modules)
    shown = "<br>".join(names[:limit])
    if len(names) > limit:
        shown += f"<br>... and {len(names) - limit} more"
    return shown


def sensitivity_figure(sens: Mapping[str, Any]) -> go.Figure:
    """One line per analysed group: score vs fraction of the group's channels removed.

    The baseline (unpruned score) is each line's point at ratio 0 and a dashed horizontal line;
    hovering a point lists the group's layers. Groups without results yet are left out, so the
    figure of an unfinished analysis shows what has arrived so far.
    """
    fig = go.Figure()
    baseline = sens.get("baseline")
    for g in sens.get("groups", []):
        curve = [(float(r), float(s)) for r, s in g.get("curve", [])]
        if not curve:
            continue
        if baseline is not None:
            curve = [(0.0, float(baseline))] + curve
        layers = _layers_label(g.get("modules") or [g.get("name", "")])
        fig.add_trace(go.Scatter(
            x=[r for r, _ in curve],
            y=[s for _, s in curve],
            mode="lines+markers",
            name=f"{g.get('name', g.get('id'))} ({g.get('num_channels', '?')} ch)",
            customdata=[[g.get("id")]] * len(curve),
            hovertemplate=(
                f"<b>group {g.get('id')}: {g.get('name')}</b><br>"
                "removed %{x:.0%} of its channels<br>score %{y:.2f}<br>"
                f"layers:<br>{layers}<extra></extra>"
            ),
        ))
    if baseline is not None:
        fig.add_hline(y=float(baseline), line_dash="dash", line_color="gray",
                      annotation_text=f"baseline {float(baseline):.2f}",
                      annotation_position="bottom left")
    fig.update_layout(
        title="Sensitivity: score with one group pruned at a time",
        xaxis_title="Fraction of the group's channels removed",
        yaxis_title=_score_title(sens),
        legend_title="Group",
        hovermode="closest",
        colorway=plotly.colors.qualitative.Dark24,  # 24 distinct colours: one per group
    )
    fig.update_xaxes(tickformat=".0%", range=[-0.02, 1.0])
    return fig


def scored_candidates(search: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The candidates that have a score, in id order."""
    return sorted((c for c in search.get("candidates", []) if c.get("score") is not None),
                  key=lambda c: c["id"])


def best_candidate_id(search: Mapping[str, Any]) -> int | None:
    """The best candidate's id: from ``ranking`` when present, else computed from the scores."""
    ranking = search.get("ranking")
    if ranking:
        return int(ranking[0])
    scored = scored_candidates(search)
    if not scored:
        return None
    sign = -1.0 if search.get("higher_is_better", True) else 1.0
    return int(min(scored, key=lambda c: (sign * c["score"], c["id"]))["id"])


def candidates_figure(search: Mapping[str, Any]) -> go.Figure:
    """Score vs MACs (millions) of every scored candidate; the best one highlighted.

    Two traces: all candidates (ids in ``customdata[0]``) and the best (same customdata).
    """
    cands = scored_candidates(search)
    best = best_candidate_id(search)
    others = [c for c in cands if c["id"] != best]
    fig = go.Figure()
    hover = ("<b>candidate %{customdata[0]}</b><br>MACs %{x:.3f} M<br>score %{y:.2f}<br>"
             "MACs removed %{customdata[1]:.1%}<extra></extra>")
    fig.add_trace(go.Scatter(
        x=[c["macs"] for c in others], y=[c["score"] for c in others], mode="markers",
        name="candidates", marker={"size": 9, "color": POINT_COLOR, "opacity": 0.75},
        customdata=[[c["id"], c.get("removal", 0.0)] for c in others], hovertemplate=hover,
    ))
    best_c = [c for c in cands if c["id"] == best]
    fig.add_trace(go.Scatter(
        x=[c["macs"] for c in best_c], y=[c["score"] for c in best_c], mode="markers",
        name=f"best (candidate {best})" if best is not None else "best",
        marker={"size": 15, "color": BEST_COLOR, "symbol": "star"},
        unselected={"marker": {"opacity": 1.0}},  # the best stays visible beside a selection
        customdata=[[c["id"], c.get("removal", 0.0)] for c in best_c], hovertemplate=hover,
    ))
    base = search.get("baseline") or {}
    if base.get("score") is not None:
        fig.add_hline(y=float(base["score"]), line_dash="dash", line_color="gray",
                      annotation_text=f"unpruned {float(base['score']):.2f}",
                      annotation_position="bottom left")
    ratio = search.get("removal_ratio")
    fig.update_layout(
        title=f"One-step search: {len(cands)} candidates"
        + (f" at {float(ratio):.0%} MACs removed" if ratio is not None else ""),
        xaxis_title="MACs (millions)",
        yaxis_title=_score_title(search),
        hovermode="closest",
        clickmode="event+select",
    )
    return fig


def measured_figure(points: Sequence[Mapping[str, Any]],
                    baseline: float | None = None) -> go.Figure:
    """MACs removed (%) vs score of every measured plan (``<model>.measured.json`` points),
    their 95 % intervals as error bars: the whole-model trade-off curve, filled in as the
    user measures plans on the Sensitivity page."""
    fig = go.Figure()
    lows = [p["score"] - p["interval"][0] if p.get("interval") else 0.0 for p in points]
    highs = [p["interval"][1] - p["score"] if p.get("interval") else 0.0 for p in points]
    fig.add_trace(go.Scatter(
        x=[100 * float(p["achieved_removal"]) for p in points],
        y=[float(p["score"]) for p in points], mode="markers+lines", name="measured",
        marker={"size": 10, "color": BEST_COLOR},
        error_y={"type": "data", "symmetric": False, "array": highs, "arrayminus": lows},
        customdata=[[p.get("images")] for p in points],
        hovertemplate=("MACs removed %{x:.1f} %<br>score %{y:.2f}<br>"
                       "on %{customdata[0]} images<extra></extra>"),
    ))
    if baseline is not None:
        fig.add_hline(y=float(baseline), line_dash="dash", line_color="gray",
                      annotation_text=f"unpruned {float(baseline):.2f}",
                      annotation_position="bottom left")
    fig.update_layout(title=f"MACs removed vs score: {len(points)} measured plan(s)",
                      xaxis_title="MACs removed (%)", yaxis_title=SCORE_TITLE,
                      hovermode="closest")
    return fig


def _group_names(search: Mapping[str, Any]) -> dict[str, str]:
    return {str(g["id"]): str(g.get("name", g["id"])) for g in search.get("groups", [])}


def candidate_ratios_figure(search: Mapping[str, Any], ids: Sequence[int]) -> go.Figure:
    """Per-group channel ratios removed of the chosen candidates, as side-by-side bars."""
    by_id = {int(c["id"]): c for c in search.get("candidates", [])}
    groups = [g for g in search.get("groups", []) if g.get("prunable", True)]
    names = [str(g.get("name", g["id"])) for g in groups]
    best = best_candidate_id(search)
    fig = go.Figure()
    for cid in ids:
        c = by_id.get(int(cid))
        if c is None:
            continue
        ratios = c.get("ratios", {})
        label = f"candidate {cid}" + (" (best)" if cid == best else "")
        fig.add_trace(go.Bar(
            x=names, y=[float(ratios.get(str(g["id"]), 0.0)) for g in groups], name=label,
            hovertemplate="%{x}: %{y:.1%} of channels removed<extra>" + label + "</extra>",
        ))
    fig.update_layout(
        title="Per-group channels removed",
        xaxis_title="Channel group (first layer)",
        yaxis_title="Fraction of the group's channels removed",
        barmode="group",
    )
    fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    return fig


def width_figure(before_widths: Mapping[str, int], after_widths: Mapping[str, int]) -> go.Figure:
    """Per-layer output channels before and after pruning (layers in ``before_widths``' order)."""
    layers = list(before_widths)
    fig = go.Figure()
    fig.add_trace(go.Bar(x=layers, y=[int(before_widths[k]) for k in layers], name="before",
                         hovertemplate="%{x}: %{y} channels<extra>before</extra>"))
    fig.add_trace(go.Bar(x=layers, y=[int(after_widths.get(k, before_widths[k])) for k in layers],
                         name="after", hovertemplate="%{x}: %{y} channels<extra>after</extra>"))
    fig.update_layout(
        title="Channels per layer, before and after",
        xaxis_title="Layer",
        yaxis_title="Output channels",
        barmode="group",
    )
    return fig


def subnet_widths_figure(full: Mapping[str, int], subnets: Mapping[str, Mapping[str, int]]
                         ) -> go.Figure:
    """Per-layer output channels: the full supernet and each chosen subnet as grouped bars."""
    layers = list(full)
    fig = go.Figure()
    fig.add_trace(go.Bar(x=layers, y=[int(full[k]) for k in layers], name="full (max subnet)",
                         marker={"color": "lightgray"},
                         hovertemplate="%{x}: %{y} channels<extra>full</extra>"))
    for label, widths in subnets.items():
        fig.add_trace(go.Bar(x=layers, y=[int(widths.get(k, full[k])) for k in layers],
                             name=label,
                             hovertemplate="%{x}: %{y} channels<extra>" + label + "</extra>"))
    fig.update_layout(title="Output channels per layer", xaxis_title="Layer",
                      yaxis_title="Output channels", barmode="group",
                      legend={"orientation": "h", "y": -0.35})
    return fig


def _evolution_records(evo: Mapping[str, Any], macs_range: tuple[float, float] | None
                       ) -> list[Mapping[str, Any]]:
    metric = evo.get("metric", "acc1")
    recs = [r for r in evo.get("history", []) if r.get(metric) is not None]
    if macs_range is not None:
        lo, hi = (float(v) for v in macs_range)
        recs = [r for r in recs if lo <= float(r["macs"]) <= hi]
    return recs


def evolution_figure(evo: Mapping[str, Any],
                     macs_range: tuple[float, float] | None = None,
                     highlight: Sequence[str] = ()) -> go.Figure:
    """OFA search: every evaluated subnet (MACs vs metric, coloured by generation) and the
    Pareto front of the shown points drawn as a step line.

    ``evo`` is an evolution file (``history`` of records with ``net_id``, ``macs``, ``params``,
    ``generation`` and the metric). ``macs_range`` filters the points (and the front is
    recomputed over what is left); ``highlight`` net ids are drawn as large diamonds.
    ``customdata[0]`` of every point is its ``net_id`` so a plotly selection names subnets.
    """
    from uif_explorer.core.evolution import pareto_front

    metric = str(evo.get("metric", "acc1"))
    mode = str(evo.get("mode", "max"))
    recs = _evolution_records(evo, macs_range)
    fig = go.Figure()
    hover = ("<b>%{customdata[0]}</b><br>MACs %{x:.3f} M<br>" + metric + " %{y:.2f}<br>"
             "params %{customdata[1]:.4f} M<br>generation %{customdata[2]}<extra></extra>")

    def data(rs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {"x": [float(r["macs"]) for r in rs], "y": [float(r[metric]) for r in rs],
                "customdata": [[r["net_id"], float(r.get("params", 0.0)),
                                int(r.get("generation", -1))] for r in rs]}

    fig.add_trace(go.Scatter(
        **data(recs), mode="markers", name="evaluated subnets", hovertemplate=hover,
        marker={"size": 8, "opacity": 0.7, "color": [int(r.get("generation", -1)) for r in recs],
                "colorscale": "Viridis", "colorbar": {"title": "generation"}},
    ))
    front = pareto_front(recs, metric, mode) if recs else []
    fig.add_trace(go.Scatter(
        **data(front), mode="lines+markers", name="Pareto front", hovertemplate=hover,
        line={"shape": "hv", "color": BEST_COLOR}, marker={"size": 11, "color": BEST_COLOR},
        unselected={"marker": {"opacity": 1.0}},
    ))
    chosen = [r for r in recs if r["net_id"] in set(highlight)]
    if chosen:
        fig.add_trace(go.Scatter(
            **data(chosen), mode="markers", name="selected", hovertemplate=hover,
            marker={"size": 16, "symbol": "diamond-open", "color": "black",
                    "line": {"width": 2}},
        ))
    fig.update_layout(
        title=f"OFA search: {len(recs)} subnets, {len(front)} on the Pareto front",
        xaxis_title="MACs (millions)",
        yaxis_title=_score_title({"metric": metric}) if metric != "acc1" else SCORE_TITLE,
        hovermode="closest",
        clickmode="event+select",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


# -- conveniences for notebooks: any workspace object in, the right figure out -------------------
def _kind_of(data: Mapping[str, Any]) -> str:
    kind = str(data.get("kind", ""))
    if kind.endswith("sensitivity") or ("ratios" in data and "candidates" not in data):
        return "sens"
    if kind.endswith("search") or "candidates" in data:
        return "search"
    if kind.endswith("evolution") or "history" in data:
        return "evolution"
    raise ValueError("Expected a .sens, .search or OFA evolution file (or its dict); found "
                     f"kind={data.get('kind')!r} with keys {sorted(data)[:8]}")


def _runner_data(runner: Any) -> Mapping[str, Any]:
    from uif_explorer.io.workspace import read_json

    sens = [runner.workspace.sens(runner.name)]
    found = sorted(runner.workspace.root.glob(f"{runner.name}_ratio_*.search"),
                   key=lambda p: p.stat().st_mtime)[-1:]
    # an iterative runner (it has ana) shows its analysis first, a one-step runner its search
    for path in (sens + found) if hasattr(runner, "ana") else (found + sens):
        if path.exists():
            return read_json(path)
    raise ValueError(f"{runner.name} has no analysis and no search in {runner.workspace.root} "
                     "yet: run runner.ana(...) or runner.search(...) first.")


def figure_data(obj: Any, mode: str = "max") -> Mapping[str, Any]:
    """The workspace dict behind ``obj``: a dict, a path to a file, a runner (its analysis,
    else its newest search) or an OFA ``ParetoSet`` (its history)."""
    import os
    from pathlib import Path

    from uif_explorer.present.reports import load, pareto_metric

    if isinstance(obj, (str, os.PathLike)):
        return load(Path(obj))
    if hasattr(obj, "pruner") and hasattr(obj, "workspace"):
        return _runner_data(obj)
    if isinstance(obj, Mapping) and hasattr(obj, "history") and "history" not in obj:
        return {"metric": pareto_metric(obj) or "acc1", "mode": mode,
                "history": list(obj.history)}
    if isinstance(obj, Mapping):
        return obj
    raise TypeError("Expected a workspace dict, a file path, a runner or a ParetoSet. "
                    f"Received: {type(obj).__name__}")


def figure_of(obj: Any, **kwargs: Any) -> go.Figure:
    """The natural figure of ``obj`` (see :func:`figure_data`): sensitivity curves of an
    analysis, candidates of a one-step search, subnets and Pareto front of an OFA search.
    ``kwargs`` go to that figure function (e.g. ``macs_range=`` for an OFA search)."""
    data = figure_data(obj, kwargs.pop("mode", "max"))
    kind = _kind_of(data)
    if kind == "sens":
        return sensitivity_figure(data, **kwargs)
    if kind == "search":
        return candidates_figure(data, **kwargs)
    return evolution_figure(data, **kwargs)


def model_width_figure(before: Any, after: Any) -> go.Figure:
    """Channels per layer of two models (torch or Keras): the original (or a runner, meaning
    its model) and the pruned one, sparse or slim; zeroed channels do not count."""
    from uif_explorer.present.reports import layer_widths

    if hasattr(before, "pruner") and hasattr(before, "model"):
        before = before.model
    return width_figure(layer_widths(before), layer_widths(after))

"""The refinement stages of a one-step search as a plotly figure (no streamlit).

One line per fine-tuned candidate: its adaptive-BN score, then its score after each stage's
fine-tune, with the 95 % interval of each score (Wilson, from the image count) as error bars,
so a reader sees which differences the halving decided on could be noise. The winner, the
candidate ``prune(index=None)`` builds, is drawn thick.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go

from uif_explorer.core.uncertainty import wilson_interval

WINNER_COLOR = "#d62728"


def _bars(scores: list[float | None], images: list[int | None]) -> dict[str, list[float]]:
    """Asymmetric error bars of accuracies in % (zero where the interval is unknown)."""
    plus, minus = [], []
    for s, n in zip(scores, images, strict=True):
        if s is None or not n or not 0.0 <= s <= 100.0:
            plus.append(0.0)
            minus.append(0.0)
            continue
        low, high = wilson_interval(float(s), int(n))
        plus.append(high - s)
        minus.append(s - low)
    return {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus}


def refinement_figure(search: Mapping[str, Any]) -> go.Figure:
    """Score per stage (x: 'adaptive BN', 'stage 1: 20 batches', ...) of every candidate that
    was fine-tuned; candidates dropped at a stage stop there."""
    state = search.get("refinement") or {}
    stages = state.get("stages", [])
    winner = state.get("winner") if state.get("complete") else None
    by_id = {int(c["id"]): c for c in search.get("candidates", [])}
    labels = stage_labels(search)
    fig = go.Figure()
    for cid in (stages[0]["candidates"] if stages else []):
        cand = by_id.get(int(cid), {})
        scores: list[float | None] = [cand.get("score")]
        images: list[int | None] = [cand.get("images")]
        for s in stages:
            value = s.get("scores", {}).get(str(cid))
            scores.append(None if value is None else float(value))
            images.append(s.get("images"))
        last = max(i for i, v in enumerate(scores) if v is not None) if any(
            v is not None for v in scores) else 0
        is_winner = winner is not None and int(cid) == int(winner)
        fig.add_trace(go.Scatter(
            x=labels[: last + 1], y=scores[: last + 1], mode="lines+markers",
            name=f"candidate {cid}" + (" (winner)" if is_winner else ""),
            error_y=_bars(scores[: last + 1], images[: last + 1]),
            line={"width": 4 if is_winner else 1.5,
                  **({"color": WINNER_COLOR} if is_winner else {})},
            customdata=[[int(cid), n] for n in images[: last + 1]],
            hovertemplate=("<b>candidate %{customdata[0]}</b><br>%{x}<br>score %{y:.2f} on "
                           "%{customdata[1]} images<extra></extra>"),
        ))
    fig.update_layout(
        title="Refinement: score after each stage's fine-tune (95 % intervals)",
        xaxis_title="Stage (fine-tuning batches)", yaxis_title="Score (top-1 accuracy, %)",
        legend_title="Candidate", hovermode="closest",
    )
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=labels)
    return fig


def stage_labels(search: Mapping[str, Any]) -> list[str]:
    """The x categories of :func:`refinement_figure` (tests and captions use them)."""
    stages = (search.get("refinement") or {}).get("stages", [])
    return ["adaptive BN"] + [f"stage {s['stage']}: {s['budget']} batches" for s in stages]


__all__ = ["refinement_figure", "stage_labels"]

"""The spec: a pruning plan as JSON, tied to the graph it was made for.

A spec plus the original architecture rebuilds the slim model in a fresh process: groups are
re-derived from the captured graph (deterministic) and each group's kept channels are listed by
canonical position. The graph digest guards against applying a spec to another architecture.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from uif_explorer.core.channels import ChannelGraph
from uif_explorer.core.plan import PlanError, PruningPlan

SPEC_FORMAT_VERSION = 1


class SpecMismatchError(PlanError):
    """A spec made for a different graph (architecture or input signature)."""


def plan_to_spec(
    graph: ChannelGraph,
    plan: PruningPlan,
    **meta: Any,
) -> dict[str, Any]:
    """JSON-ready dict; ``meta`` adds fields such as model name, ratio, MACs and digests."""
    groups = []
    for g in graph.groups:
        entry: dict[str, Any] = {
            "id": g.id,
            "name": g.name,
            "modules": g.modules,
            "num_channels": g.num_channels,
            "prunable": g.prunable,
        }
        if not g.prunable:
            entry["excluded_reason"] = g.excluded_reason
        if g.id in plan.kept:
            entry["ratio"] = round(plan.ratios.get(g.id, 0.0), 6)
            entry["kept"] = [int(i) for i in plan.kept[g.id]]
        groups.append(entry)
    return {
        "format_version": SPEC_FORMAT_VERSION,
        "kind": "uif-explorer-spec",
        "graph_digest": graph.graph_digest(),
        **meta,
        "groups": groups,
    }


def plan_from_spec(graph: ChannelGraph, spec: dict[str, Any]) -> PruningPlan:
    """Rebuild the plan of a spec on this graph; refuses a spec of another graph."""
    if spec.get("kind") != "uif-explorer-spec":
        raise SpecMismatchError("Expected a UIF Explorer spec (kind 'uif-explorer-spec').")
    digest = graph.graph_digest()
    if spec.get("graph_digest") != digest:
        raise SpecMismatchError(
            f"This spec was made for another graph (digest {spec.get('graph_digest')}, this "
            f"model has {digest}): use the architecture and input signature it was made with."
        )
    plan = PruningPlan()
    for entry in spec["groups"]:
        if "kept" not in entry:
            continue
        gid = int(entry["id"])
        g = graph.groups[gid]
        kept = np.asarray(entry["kept"], dtype=np.int64)
        if len(kept) and (kept.min() < 0 or kept.max() >= g.num_channels):
            raise SpecMismatchError(f"Group {g.name}: kept index out of range.")
        plan.kept[gid] = kept
        plan.ratios[gid] = float(entry.get("ratio", 1 - len(kept) / g.num_channels))
    return plan

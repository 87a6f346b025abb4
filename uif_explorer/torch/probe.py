"""Find channel groups that a model's own Python code cannot take narrower, and freeze them.

The captured graph sees data flow, not the arithmetic that produced a shape. Code such as
MaxViT's attention (``out.reshape(B, G, P, D)`` with ``D`` read from the *input's* width) ties
two widths that share no tensor, so a plan that narrows one breaks the forward pass of the slim
model. A slim copy with every prunable group one step narrower is run once on the ``meta``
device (shapes only, nearly free: the slim copy is made from a meta copy of the model, so no
weight is copied or sliced, however many times the search below slims it); if it fails, halves
of the groups are probed until the culprits are found, and those are excluded with the error as
the reason. Models that run (nearly all) pay for one meta copy and one shape-only forward.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from uif_explorer.core.channels import Group
from uif_explorer.core.plan import PruningPlan
from uif_explorer.torch.apply import make_slim
from uif_explorer.torch.capture import Capture

REASON = "narrowing it breaks the model's code"


def _narrow_plan(groups: Sequence[Group]) -> PruningPlan:
    """Drop the last 1, 2 or 3 channels of every block of each group (by group id), so that
    two groups the code ties together rarely land on the same width by chance."""
    plan = PruningPlan()
    for g in groups:
        per_block = g.num_channels // g.blocks
        drop = min(1 + g.id % 3, per_block - 1)
        if drop < 1:
            continue
        idx = np.arange(g.num_channels).reshape(g.blocks, per_block)[:, :-drop].ravel()
        plan.kept[g.id] = np.sort(idx)
        plan.ratios[g.id] = 1.0 - len(idx) / g.num_channels
    return plan


def _runs(model: nn.Module, cap: Capture, args: tuple, groups: Sequence[Group],
          device: str) -> str | None:
    """None when the slim copy narrowed at ``groups`` runs, else the error's first line."""
    plan = _narrow_plan(groups)
    if not plan.kept:
        return None
    try:
        slim = make_slim(model, cap, plan).to(device)
        with torch.no_grad():
            slim(*(a.to(device) if torch.is_tensor(a) else a for a in args))
    except Exception as exc:  # noqa: BLE001 - any failure means the code rejects the widths
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0][:160] if text else ''}"
    return None


def _probe_model(model: nn.Module, args: tuple) -> tuple[nn.Module, str]:
    """A ``meta`` copy of the model when it runs there (shape-only: every probe step slims
    this copy without copying or slicing a single weight), else the model on its own device."""
    try:
        meta = copy.deepcopy(model).to("meta")
        with torch.no_grad():
            meta(*(a.to("meta") if torch.is_tensor(a) else a for a in args))
        return meta, "meta"
    except Exception:  # noqa: BLE001 - some ops have no meta kernel: probe for real
        first = next(iter(model.parameters()), None)
        return model, str(first.device) if first is not None else "cpu"


def freeze_breaking_groups(model: nn.Module, cap: Capture, args: tuple) -> list[str]:
    """Exclude the prunable groups whose narrowing fails the forward pass; their names."""
    groups = list(cap.graph.prunable_groups)
    if not groups:
        return []
    model, device = _probe_model(model, args)
    if _runs(model, cap, args, groups, device) is None:
        return []
    frozen: list[str] = []

    def search(part: list[Group], error: str) -> None:
        if len(part) == 1:
            part[0].excluded_reason = f"{REASON} ({error})"
            frozen.append(part[0].name)
            return
        half = len(part) // 2
        found = False
        for sub in (part[:half], part[half:]):
            err = _runs(model, cap, args, sub, device)
            if err is not None:
                found = True
                search(sub, err)
        if not found:  # only the combination fails: keep all of them whole
            for g in part:
                g.excluded_reason = f"{REASON} together with others ({error})"
                frozen.append(g.name)

    search(groups, "")
    cap.graph.notes.append(f"Frozen because the model's code needs their width: {frozen}")
    return frozen

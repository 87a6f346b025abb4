"""Torch-Pruning side by side in the coverage benches: the same model, the same input, the
same 50 % MACs target, with Torch-Pruning's defaults.

Torch-Pruning (a bench-only dependency, ``requirements-bench.txt``) has no MACs target: like
``bench/latency.py`` this refines its uniform per-layer channel ratio from the MACs it reaches
(``MetaPruner`` with ``MagnitudeImportance``, its default L2 norm, ``round_to=None``), at most
six tries. As its docs ask, the layers whose outputs are the model's outputs are left whole
(found with forward hooks: a module whose output tensor is returned as it is, plus the last
conv or linear layer), and in detector cores the head's output convolutions and, for the
R-CNNs, the FPN layers read by the RoI heads. A row passes when the pruned model runs, keeps
the output shape and lands within 2 points of the target.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

HEAD_OUTPUTS = ("cls_logits", "bbox_reg", "bbox_pred", "bbox_ctrness", "classification_head",
                "regression_head", "backbone.fpn")


def _tensors(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def output_layers(model: nn.Module, x: torch.Tensor, detector: bool) -> list[nn.Module]:
    """Modules Torch-Pruning must leave whole so the model's outputs keep their shape."""
    weighted = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    seen: dict[int, nn.Module] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: seen.update({id(t): m for t in _tensors(o)}))
             for m in weighted]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    found = {id(m): m for t in _tensors(out) if (m := seen.get(id(t))) is not None}
    if weighted:
        found[id(weighted[-1])] = weighted[-1]
    if detector:
        for name, m in model.named_modules():
            if any(part in name for part in HEAD_OUTPUTS) and m in weighted:
                found[id(m)] = m
    return list(found.values())


def first_shape(out: object) -> tuple[int, ...]:
    ts = _tensors(out)
    return tuple(ts[0].shape) if ts else ()


def tp_check(model: nn.Module, x: torch.Tensor, ratio: float, detector: bool = False) -> dict:
    """Torch-Pruning at ``ratio`` of the MACs removed: ``tp_removed``, ``tp_status``,
    ``tp_seconds`` (``tp_error`` on failure)."""
    start = time.time()
    row: dict = {}
    try:
        import torch_pruning as tp

        base, _ = tp.utils.count_ops_and_params(model, x)
        with torch.no_grad():
            shape = first_shape(model(x))
        keep = 1.0 - ratio
        channel_ratio, removed = 1 - keep ** 0.5, 0.0
        for _ in range(6):
            slim = copy.deepcopy(model).eval()
            pruner = tp.pruner.MetaPruner(
                slim, x, importance=tp.importance.MagnitudeImportance(),
                pruning_ratio=min(channel_ratio, 0.95),
                ignored_layers=output_layers(slim, x, detector))
            pruner.step()
            macs, _ = tp.utils.count_ops_and_params(slim, x)
            removed = 1 - macs / base
            if abs(removed - ratio) <= 0.02 or macs <= 0:
                break
            channel_ratio = 1 - (1 - channel_ratio) * (keep * base / max(macs, 1)) ** 0.5
        with torch.no_grad():
            runs = first_shape(slim.eval()(x)) == shape
        row["tp_removed"] = round(removed, 3)
        if not runs:
            row["tp_status"] = "fail: output shape changed"
        elif abs(removed - ratio) > 0.02:
            row["tp_status"] = f"off target ({removed:.1%} removed)"
        else:
            row["tp_status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - the table records every failure
        first = str(exc).splitlines()[0][:120] if str(exc) else ""
        row["tp_status"] = f"fail: {type(exc).__name__}: {first}"
    row["tp_seconds"] = round(time.time() - start, 1)
    return row


__all__ = ["output_layers", "tp_check"]

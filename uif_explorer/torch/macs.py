"""MACs and parameter counts from PyTorch's own FLOP counter.

MACs follow ``conventions.md``: FLOPs of convolution / linear / matmul ops reported by
``torch.utils.flop_counter.FlopCounterMode`` divided by two, at the given example input.
Functional ops (``F.linear``, ``torch.matmul`` inside ``forward``) are counted too and are
attributed to the module whose ``forward`` called them.

A CPU LSTM (oneDNN's fused ``mkldnn_rnn_layer``) gets the count its ``meta`` decomposition has.
Fused attention (``F.scaled_dot_product_attention``) runs on the CPU as
``aten._scaled_dot_product_flash_attention_for_cpu``, which the FLOP counter has no formula for
(it counts 0), while on the ``meta`` device it decomposes into counted ``bmm`` ops. Every count
here adds the counter's own SDPA formula for that op, so a model costs the same on either device
and a plan's MACs match the count of its slim model whichever way it is counted.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

# flop_counter warns once on import that triton (removed on purpose, see setup_env.sh) is absent.
logging.getLogger("torch.utils.flop_counter").setLevel(logging.ERROR)
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count  # noqa: E402


def _sdpa_flops(query_shape, key_shape, value_shape, *_args, out_shape=None, **_kw) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _mkldnn_lstm_flops(x_shape, w_ih, w_hh, *_args, out_shape=None, **_kw) -> int:
    """A CPU LSTM runs as one oneDNN kernel per layer and direction (``mkldnn_rnn_layer``) that
    the counter has no formula for; on ``meta`` it decomposes into an ``mm`` over all steps
    (inputs) and an ``addmm`` per step (state): count the same, ``2 * rows * 4H * (in + H)``."""
    return 2 * math.prod(x_shape[:-1]) * w_ih[0] * (w_ih[1] + w_hh[1])


# Ops the FLOP counter has no formula for, counted with the formula of their kind.
EXTRA_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops,
                  torch.ops.aten.mkldnn_rnn_layer: _mkldnn_lstm_flops}


def flop_counter() -> FlopCounterMode:
    """PyTorch's FLOP counter (no printout) with :data:`EXTRA_FORMULAS`: use this one."""
    return FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)

Inputs = torch.Tensor | Sequence[torch.Tensor]


@dataclass(frozen=True)
class ModelCost:
    """Totals (exact integers) and the per-module table of one model at one input."""

    macs: int
    params: int
    table: pd.DataFrame

    @property
    def macs_m(self) -> float:
        return self.macs / 1e6

    @property
    def params_m(self) -> float:
        return self.params / 1e6


def as_tuple(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    """A runner's input signature may be one tensor or a sequence of them."""
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    return tuple(inputs)


def _output_shape(out: object) -> tuple[int, ...] | None:
    return tuple(out.shape) if isinstance(out, torch.Tensor) else None


def _counted(model: nn.Module, inputs: Inputs) -> FlopCounterMode:
    """Run the FLOP counter on a meta-device copy (shapes only, no arithmetic).

    Counting needs shapes, not values, so a copy on the ``meta`` device makes it nearly free
    even for large models; a model whose code cannot run on ``meta`` is counted for real, on a
    copy too. The copies' parameters do not require grad: the counter's module tracker hooks
    every input that requires grad, and a view of a parameter taken under ``no_grad`` (CaiT's
    ``cls_token.expand(...)`` fed to a block) requires grad with no grad function, which fails
    its hook with "Expected gradient function to be set".
    """
    args = as_tuple(inputs)
    try:
        meta_args = tuple(a.to("meta") if torch.is_tensor(a) else a for a in args)
        return _count(_no_grad_copy(model).to("meta"), meta_args)
    except Exception:  # noqa: BLE001 - any failure on meta: count on the real model
        return _count(_no_grad_copy(model), args)


def _no_grad_copy(model: nn.Module) -> nn.Module:
    """A copy whose parameters do not require grad (the user's model is left as it is)."""
    return copy.deepcopy(model).requires_grad_(False)


def _count(model: nn.Module, args: tuple) -> FlopCounterMode:
    with torch.no_grad(), flop_counter() as counter:
        model(*args)
    return counter


def count_macs(model: nn.Module, inputs: Inputs) -> int:
    """Total MACs of one forward pass at ``inputs`` (the model is not run for real)."""
    return _counted(model, inputs).get_total_flops() // 2


def count_macs_by_module(model: nn.Module, inputs: Inputs) -> tuple[int, dict[str, int]]:
    """Total MACs and MACs per module name (cumulative: a module includes its children)."""
    counter = _counted(model, inputs)
    root = type(model).__name__
    per = {}
    for key, ops in counter.get_flop_counts().items():
        if key != "Global":
            per["" if key == root else key.removeprefix(root + ".")] = sum(ops.values()) // 2
    return counter.get_total_flops() // 2, per


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_cost(model: nn.Module, inputs: Inputs) -> ModelCost:
    """Count MACs and params; the table has one row per module with own params or MACs.

    Columns: ``name``, ``type``, ``params`` (own, not children's), ``macs`` (own ops),
    ``output_shape``. Exact integers, as ``conventions.md`` asks of per-layer tables. Counted
    on a copy whose parameters do not require grad (see :func:`_counted`).
    """
    model = _no_grad_copy(model)
    names = {m: n for n, m in model.named_modules()}
    shapes: dict[str, tuple[int, ...] | None] = {}

    def hook(mod: nn.Module, _inp: object, out: object) -> None:
        shapes.setdefault(names[mod], _output_shape(out))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        counter = _count(model, as_tuple(inputs))
    finally:
        for h in handles:
            h.remove()

    root = type(model).__name__
    totals: dict[str, int] = {}
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            continue
        name = "" if key == root else key.removeprefix(root + ".")
        totals[name] = sum(ops.values()) // 2

    rows = []
    for name, mod in model.named_modules():
        own_params = sum(p.numel() for p in mod.parameters(recurse=False))
        child_macs = sum(
            totals.get(f"{name}.{c}" if name else c, 0) for c, _ in mod.named_children()
        )
        own_macs = totals.get(name, 0) - child_macs
        if own_params == 0 and own_macs <= 0:
            continue
        rows.append(
            {
                "name": name or "(root)",
                "type": type(mod).__name__,
                "params": own_params,
                "macs": max(own_macs, 0),
                "output_shape": shapes.get(name),
            }
        )
    table = pd.DataFrame(rows, columns=["name", "type", "params", "macs", "output_shape"])
    return ModelCost(
        macs=counter.get_total_flops() // 2, params=count_params(model), table=table
    )

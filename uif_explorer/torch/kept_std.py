"""The sparse model's weight-standardised convolutions, standardised over the kept fan-in.

A slim ``StdConv2d`` / ``ScaledStdConv2d`` standardises each filter over the inputs it kept; the
sparse one's masked filter still holds zeros for the pruned inputs, which would count in its
mean and variance. While such a module runs, a :class:`~torch.overrides.TorchFunctionMode`
swaps its ``batch_norm`` over the filters (input ``(1, out, fan_in)``, training statistics) for
the same call over each filter's kept entries; the pruned entries come out zero, as the slim
filter lacks them. Grouped convolutions keep equal counts per group (their block constraint),
so every filter keeps as many entries and one gather does all of them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from uif_explorer.torch.capture import SpanningNorm
from uif_explorer.torch.kept_norm import run_in_mode


def kept_fan_in(keep: np.ndarray, groups: int, rows: int, fan_in: int) -> torch.Tensor:
    """Per filter, the positions of its flattened fan-in ``(in/groups, *kernel)`` that read a
    kept input: a ``(rows, kept)`` index (filter ``r`` belongs to group ``r // (rows/groups)``)."""
    per = len(keep) // groups
    kernel = fan_in // per
    blocks = np.repeat(keep.reshape(groups, per), kernel, axis=1)  # (groups, fan_in)
    mask = np.repeat(blocks, rows // groups, axis=0)  # (rows, fan_in)
    return torch.from_numpy(np.nonzero(mask)[1].reshape(rows, -1))


class _KeptFanInMode(TorchFunctionMode):
    """Active while a standardised convolution runs: its weight ``batch_norm`` normalises
    each filter over the kept entries ``index`` only."""

    def __init__(self, index: torch.Tensor, fan_in: int) -> None:
        super().__init__()
        self.index, self.fan_in = index, fan_in

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        x = args[0] if args else None
        rows, kept = self.index.shape
        if (func is not F.batch_norm or not torch.is_tensor(x)
                or tuple(x.shape) != (1, rows, self.fan_in) or kept == self.fan_in):
            return func(*args, **kwargs)
        idx = self.index.to(x.device)
        y = func(x[0].gather(1, idx).unsqueeze(0), *args[1:], **kwargs)
        return torch.zeros_like(x[0]).scatter(1, idx, y[0]).unsqueeze(0)


def hook_kept_std(module: nn.Module, norm: SpanningNorm, kept: torch.Tensor) -> None:
    """Make the weight-standardised convolution ``module`` standardise its filters over the
    inputs ``kept`` (indices into ``norm.classes``, its input channels)."""
    keep = np.zeros(len(norm.classes), dtype=bool)
    keep[kept.numpy()] = True
    fan_in = module.weight[0].numel()
    index = kept_fan_in(keep, norm.num_groups, module.weight.shape[0], fan_in)
    module.register_buffer("kept_fan_in_uif_mask", index, persistent=False)
    run_in_mode(module, lambda mod: _KeptFanInMode(mod.kept_fan_in_uif_mask, fan_in))

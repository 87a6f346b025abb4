"""Dynamic layers: plain PyTorch layers that run on a chosen subset of their channels.

Each class subclasses its plain counterpart (``DynamicConv2d(nn.Conv2d)``, ...), so parameter
names, state-dict keys and constructor attributes are exactly the original ones: the OFA model's
``state_dict()`` loads into the original architecture and back. Only ``forward`` differs: it
reads the *active selection* that :class:`~uif_explorer.torch.ofa.space.OFASpace` sets
(``uif_sel``: per tensor, per axis, either a prefix length or an index tensor; ``uif_kernel``:
the active kernel size of an elastic kernel; ``uif_groups``: the active group count of a
depthwise conv). With no selection a dynamic layer is its plain layer.

Channels were reordered by importance before the layers were swapped in, so a selection is a
prefix ("the first k channels") everywhere except where channels of several groups meet in one
axis (the input of a layer after ``torch.cat``): there it is an index tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (axis, prefix length or int64 index tensor) per selected axis of one tensor
AxisSelection = tuple[tuple[int, "int | torch.Tensor"], ...]


def select(t: torch.Tensor, axes: AxisSelection) -> torch.Tensor:
    """``t`` restricted to the selected positions along each listed axis."""
    for dim, sel in axes:
        if isinstance(sel, int):
            t = t.narrow(dim, 0, sel)
        else:
            t = t.index_select(dim, sel.to(t.device))
    return t


class _Dynamic:
    """Active-selection state shared by every dynamic layer."""

    uif_sel: dict[str, AxisSelection]
    uif_kernel: int | None
    uif_groups: int | None

    def uif_reset(self) -> None:
        self.uif_sel = {}
        self.uif_kernel = None
        self.uif_groups = None

    def _active(self, name: str) -> torch.Tensor | None:
        t = getattr(self, name)
        if t is None:
            return None
        axes = self.uif_sel.get(name)
        return select(t, axes) if axes else t


def _crop(w: torch.Tensor, kernel: int) -> torch.Tensor:
    """Centre ``kernel x kernel`` crop of a square kernel (the last two axes)."""
    full = w.shape[-1]
    start = (full - kernel) // 2
    return w[..., start : start + kernel, start : start + kernel]


class DynamicConv2d(_Dynamic, nn.Conv2d):
    """``nn.Conv2d`` with elastic output/input channels and (optionally) elastic kernel size."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.uif_sel and self.uif_kernel is None:
            return super().forward(input)
        weight = self._active("weight")
        bias = self._active("bias")
        padding = self.padding
        if self.uif_kernel is not None and self.uif_kernel != self.kernel_size[0]:
            weight = _crop(weight, self.uif_kernel)
            if padding != "same":
                padding = (self.uif_kernel // 2, self.uif_kernel // 2)
        groups = self.uif_groups or self.groups
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = (0, 0)
        return F.conv2d(input, weight, bias, self.stride, padding, self.dilation, groups)


class DynamicConvTranspose2d(_Dynamic, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with elastic output/input channels."""

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if not self.uif_sel:
            return super().forward(input, output_size)
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation
        )
        return F.conv_transpose2d(
            input, self._active("weight"), self._active("bias"), self.stride, self.padding,
            output_padding, self.uif_groups or self.groups, self.dilation,
        )


class DynamicBatchNorm2d(_Dynamic, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` over the active channels (statistics of the others are untouched)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.uif_sel:
            return super().forward(input)
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                      else self.momentum)
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        use_stats = not self.training or self.track_running_stats
        mean = self._active("running_mean") if use_stats else None
        var = self._active("running_var") if use_stats else None
        out = F.batch_norm(input, mean, var, self._active("weight"), self._active("bias"),
                           bn_training, factor, self.eps)
        if self.training and use_stats and mean is not None:
            # A prefix is a view (updated in place); an index selection is a copy: write back.
            for name, new in (("running_mean", mean), ("running_var", var)):
                axes = self.uif_sel.get(name)
                if axes and not isinstance(axes[0][1], int):
                    buf = getattr(self, name)
                    with torch.no_grad():
                        buf.index_copy_(0, axes[0][1].to(buf.device), new)
        return out


class DynamicLinear(_Dynamic, nn.Linear):
    """``nn.Linear`` with elastic output/input features."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.uif_sel:
            return super().forward(input)
        return F.linear(input, self._active("weight"), self._active("bias"))


DYNAMIC_OF: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv2d: DynamicConv2d,
    nn.ConvTranspose2d: DynamicConvTranspose2d,
    nn.BatchNorm2d: DynamicBatchNorm2d,
    nn.Linear: DynamicLinear,
}
PLAIN_OF: dict[type[nn.Module], type[nn.Module]] = {v: k for k, v in DYNAMIC_OF.items()}
# Tensors of each plain type whose channel axes a dynamic layer can select.
SELECTABLE: dict[type[nn.Module], frozenset[str]] = {
    nn.Conv2d: frozenset({"weight", "bias"}),
    nn.ConvTranspose2d: frozenset({"weight", "bias"}),
    nn.BatchNorm2d: frozenset({"weight", "bias", "running_mean", "running_var"}),
    nn.Linear: frozenset({"weight", "bias"}),
}


def make_dynamic(module: nn.Module) -> nn.Module:
    """Turn a plain layer of an exact supported type into its dynamic class, in place.

    The object keeps its parameters, buffers and attributes (only its class changes), so
    nothing is copied and every reference to its tensors stays valid.
    """
    module.__class__ = DYNAMIC_OF[type(module)]
    module.uif_reset()
    return module


def make_plain(module: nn.Module) -> nn.Module:
    """The inverse of :func:`make_dynamic`, in place: drop the selection, restore the class."""
    for attr in ("uif_sel", "uif_kernel", "uif_groups"):
        module.__dict__.pop(attr, None)
    module.__class__ = PLAIN_OF[type(module)]
    return module


def is_dynamic(module: nn.Module) -> bool:
    return type(module) in PLAIN_OF


__all__ = [
    "DynamicBatchNorm2d", "DynamicConv2d", "DynamicConvTranspose2d", "DynamicLinear",
    "is_dynamic", "make_dynamic", "make_plain", "select",
]

"""Layer rules of PyTorch's built-in module types: how the slim model rebuilds their sizes.

The walk follows these modules' ATen ops (the rules are *traced*), so their weights are sliced
along whatever the op rules found; what is left per type is the attribute rebuild after
slicing (``in_channels``, ``groups``, ``num_features``...). :func:`update_module` is the one
place apply calls: it finds the rule along the module's type hierarchy, so a subclass of
``nn.Conv2d`` is rebuilt as a conv unless its own rule is registered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from uif_explorer.core.rules import LayerRule
from uif_explorer.torch.rules.base import LAYERS, register_builtin

if TYPE_CHECKING:
    from uif_explorer.torch.capture import Capture


def _conv(m: nn.modules.conv._ConvNd, kept_in: int, kept_out: int) -> None:
    # Attributes still hold the original sizes here: depthwise is read from them.
    depthwise = m.groups > 1 and m.groups == m.in_channels
    w = m.weight
    if m.transposed:
        if depthwise:
            m.groups = w.shape[0]
        m.in_channels = w.shape[0]
        m.out_channels = w.shape[1] * m.groups
    elif depthwise:
        mult = max(1, m.out_channels // m.groups)  # channel multiplier, unchanged
        m.groups = w.shape[0] // mult
        m.in_channels = m.groups
        m.out_channels = w.shape[0]
    else:
        m.out_channels = w.shape[0]
        m.in_channels = w.shape[1] * m.groups


def _linear(m: nn.Linear, kept_in: int, kept_out: int) -> None:
    m.out_features, m.in_features = kept_out, kept_in


def _batch_norm(m: nn.modules.batchnorm._NormBase, kept_in: int, kept_out: int) -> None:
    m.num_features = kept_out


def _group_norm(m: nn.GroupNorm, kept_in: int, kept_out: int) -> None:
    m.num_channels = kept_out


def _layer_norm(m: nn.LayerNorm, kept_in: int, kept_out: int) -> None:
    m.normalized_shape = tuple(m.weight.shape)


def _prelu(m: nn.PReLU, kept_in: int, kept_out: int) -> None:
    m.num_parameters = m.weight.numel()


def _embedding(m: nn.Embedding, kept_in: int, kept_out: int) -> None:
    m.embedding_dim = kept_out


def _traced(kind: str, out_dims: dict[str, int], in_dims: dict[str, int], update) -> LayerRule:
    return LayerRule(kind, out_dims, in_dims, update, traced=True)


_BN_DIMS = {"running_mean": 0, "weight": 0}
for _typ, _rule in {
    nn.modules.conv._ConvNd: _traced("producer", {"weight": 0}, {"weight": 1}, _conv),
    nn.modules.conv._ConvTransposeNd: _traced("producer", {"weight": 1}, {"weight": 0}, _conv),
    nn.Linear: _traced("producer", {"weight": 0}, {"weight": 1}, _linear),
    nn.Embedding: _traced("producer", {"weight": 1}, {}, _embedding),
    nn.modules.batchnorm._NormBase: _traced("channelwise", _BN_DIMS, {}, _batch_norm),
    nn.GroupNorm: _traced("channelwise", {"weight": 0}, {}, _group_norm),
    nn.LayerNorm: _traced("channelwise", {"weight": -1}, {}, _layer_norm),
    nn.PReLU: _traced("channelwise", {"weight": 0}, {}, _prelu),
}.items():
    register_builtin(_typ, _rule)


def _kept(m: nn.Module, dims: dict[str, int]) -> int | None:
    for pname, dim in dims.items():
        t = getattr(m, pname, None)
        if t is not None and t.ndim:
            return int(t.shape[dim])
    return None


def update_module(m: nn.Module, name: str, cap: Capture) -> None:
    """Make a module's size attributes agree with its sliced tensors (its rule's ``update``)."""
    rule = cap.custom_modules.get(name) or LAYERS.lookup(m)
    if rule is None or rule.update is None:
        return
    kept_out = _kept(m, rule.out_dims)
    if kept_out is None:
        return
    kept_in = kept_out if rule.kind == "channelwise" else _kept(m, rule.in_dims)
    rule.update(m, kept_out if kept_in is None else kept_in, kept_out)

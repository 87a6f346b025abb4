"""The PyTorch backend's rule registries and the values its walk carries.

Two registries, both public and module-level, so that a new op or layer is one entry:

- :data:`OP_RULES` maps an ATen op name (``conv2d``, ``add``, ``view``...) to the handler the
  walk calls for every node of that op. Handlers live in :mod:`.weighted` and :mod:`.shape`.
- :data:`LAYERS` maps a module type to its :class:`~uif_explorer.core.rules.LayerRule`. Built-in
  types (Conv, Linear, norms, ...) are *traced*: the walk follows their ATen ops and the rule
  only rebuilds their size attributes in the slim model. A type registered with
  :func:`register_layer` is *opaque*: the whole module is one producer or channel-wise node.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from uif_explorer.core.rules import LayerRegistry, LayerRule, make_rule

if TYPE_CHECKING:
    from uif_explorer.torch.walk import Walker

OpRule = Callable[["Walker", torch.fx.Node], object]
OP_RULES: dict[str, OpRule] = {}
LAYERS = LayerRegistry()
BUILTIN_RULES: dict[type, LayerRule] = {}  # brought back when a user's override is dropped


def register_builtin(layer_type: type, rule: LayerRule) -> None:
    BUILTIN_RULES[layer_type] = rule
    LAYERS.register(layer_type, rule)


def register_op(names: str | Iterable[str], rule: OpRule) -> OpRule:
    """Make ``rule(walker, node)`` the handler of ATen ops named ``names`` during the walk."""
    for name in [names] if isinstance(names, str) else names:
        OP_RULES[name] = rule
    return rule


def op_rule(*names: str) -> Callable[[OpRule], OpRule]:
    """Decorator form of :func:`register_op`."""
    return lambda rule: register_op(names, rule)


def register_layer(
    layer_type: type,
    *,
    out_dims: dict[str, int] | None = None,
    in_dims: dict[str, int] | None = None,
    channelwise: bool = False,
    update: Callable[[Any, int, int], None] | None = None,
    channel_dim: int = 1,
) -> None:
    """Teach the pruner a custom layer type in one call, without editing the package.

    A producer (its output channels are its own): ``register_layer(MyConv,
    out_dims={"weight": 0, "bias": 0}, in_dims={"weight": 1}, update=lambda m, cin, cout:
    setattr(m, "out_channels", cout))``. A channel-wise layer (its output carries its input's
    channels, e.g. a learned per-channel scale): ``register_layer(Scale, channelwise=True,
    out_dims={"gamma": 0})``. ``channel_dim`` is the channel axis of the layer's input and
    output (1 for NCHW, -1 for channels-last); ``update(module, kept_in, kept_out)`` fixes the
    module's size attributes in the slim model.
    """
    if not isinstance(layer_type, type):
        raise TypeError(f"Expected a layer class. Received: layer_type={layer_type!r}")
    LAYERS.register(layer_type, make_rule(out_dims=out_dims, in_dims=in_dims,
                                          channelwise=channelwise, update=update,
                                          channel_dim=channel_dim))


def unregister_layer(layer_type: type) -> None:
    """Forget a rule made with :func:`register_layer`; a built-in type gets its own back."""
    if layer_type in BUILTIN_RULES:
        LAYERS.register(layer_type, BUILTIN_RULES[layer_type])
    else:
        LAYERS.unregister(layer_type)


# -- values and names of the walk ----------------------------------------------------------------
@dataclass(frozen=True)
class ParamVal:
    """A graph value that is a weight or buffer of the model itself."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ParamView:
    """A weight seen through ops that keep its channels apart (a view that only adds or drops
    size-1 dims, ``self.gamma.view(1, -1, 1, 1)``; a permute; a per-channel resize), so a
    product with it can still slice the weight: ``axes`` holds the weight's own axis for each
    dim of ``shape`` (-1 for a dim with none to slice: added, or resampled)."""

    param: ParamVal
    shape: tuple[int, ...]
    axes: tuple[int, ...]


def weight_axes(p: ParamVal | ParamView) -> tuple[ParamVal, tuple[int, ...]]:
    """The weight behind ``p`` and its own axis for each dim of ``p`` (-1: none to slice)."""
    if isinstance(p, ParamView):
        return p.param, p.axes
    return p, tuple(range(len(p.shape)))


def param_view(p: ParamVal | ParamView, out: tuple[int, ...]) -> ParamView | None:
    """``p`` reshaped to ``out`` when that only adds or drops size-1 dims, else None."""
    base, src = weight_axes(p)
    kept = [(n, a) for n, a in zip(p.shape, src, strict=True) if n != 1]
    if [n for n in out if n != 1] != [n for n, _ in kept]:
        return None
    it = iter(a for _, a in kept)
    return ParamView(base, tuple(out), tuple(next(it) if n != 1 else -1 for n in out))


def resampled_view(p: ParamVal | ParamView, out: tuple[int, ...]) -> ParamView | None:
    """``p`` after a per-channel spatial op (``F.interpolate`` of an NCHW position embedding):
    batch and channel dims keep their weight axes, the resampled dims (2 on) slice nothing.
    None when the op changes the first two dims."""
    base, axes = weight_axes(p)
    if len(out) != len(p.shape) or len(out) < 3 or tuple(out[:2]) != tuple(p.shape[:2]):
        return None
    return ParamView(base, tuple(out), tuple(axes[:2]) + (-1,) * (len(out) - 2))


@dataclass
class SpanningNorm:
    """A norm whose statistics span channels: the sparse model must normalise kept ones only."""

    module: str
    kind: str  # "layer_norm" / "rms_norm" (over the last dim), "group_norm" or "grn"
    classes: np.ndarray
    num_groups: int = 1
    eps: float | None = 1e-5  # None: rms_norm's default (the dtype's epsilon)
    dim: int = -1  # the channel axis ("grn": global response norm, -1 or 1)
    tail: tuple[str, ...] = ()  # child modules the norm's output runs through (a norm-act)


@dataclass
class SizeAttr:
    """A module attribute listing channel counts (e.g. split sizes read by ``forward``): the
    slim model gets, per entry, the number of channels of ``parts[i]`` the plan keeps."""

    module: str
    attr: str
    parts: list[np.ndarray]


def find_size_attr(module: object, sizes: list[int]) -> str | None:
    """The public attribute of ``module`` whose value is ``sizes`` (a list or tuple of ints)."""
    for key, value in vars(module).items():
        if (not key.startswith("_") and isinstance(value, (list, tuple))
                and list(value) == sizes and all(type(v) is int for v in value)):
            return key
    return None


def find_scalar_attrs(module: object, sizes: list[int]) -> list[str] | None:
    """Per size, the one public int attribute of ``module`` equal to it (a split written as
    ``[self.key_dim, self.key_dim, self.val_dim]``); None when a size matches no attribute or
    several (which one the code read is then unknown)."""
    ints = {k: v for k, v in vars(module).items() if not k.startswith("_") and type(v) is int}
    names = []
    for size in sizes:
        hits = [k for k, v in ints.items() if v == size]
        if len(hits) != 1:
            return None
        names.append(hits[0])
    return names


def op_name(node: torch.fx.Node) -> str:
    target = node.target
    if target is operator.getitem:
        return "getitem"
    packet = getattr(target, "overloadpacket", None)
    if packet is not None:
        return packet.__name__
    return getattr(target, "__name__", str(target))


def module_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return "(model)"
    fqn = list(stack.values())[-1][0]
    return fqn or "(model)"


def flat_vals(x: object) -> list:
    if isinstance(x, (list, tuple)):
        out = []
        for i in x:
            out.extend(flat_vals(i))
        return out
    return [x]

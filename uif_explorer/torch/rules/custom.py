"""Opaque layers registered with ``register_layer``: the whole module is one node of the graph.

Every ATen node that runs inside such a module comes here instead of to its op's handler. A
*producer* gives its output fresh channels (from its ``out_dims`` weight axis) and ties its
``in_dims`` weight axes to the channels that reach it; a *channel-wise* layer ties its
``out_dims`` weight axes to its input's channels and hands those on. Values made inside the
module carry its name, so they are not mistaken for its inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from uif_explorer.core.channels import MacOp, ParamSlice, Val, channel_list
from uif_explorer.core.rules import LayerRule
from uif_explorer.torch.rules.base import flat_vals

if TYPE_CHECKING:
    from uif_explorer.torch.walk import Walker


def _tie(w: Walker, owner: str, dims: dict[str, int], classes: np.ndarray,
         role: str) -> bool:
    """Tie each named weight axis to ``classes`` (slices added once); False on a size mismatch."""
    module = w.modules[owner]
    tensors = {**dict(module.named_parameters(recurse=False)),
               **dict(module.named_buffers(recurse=False))}
    axes = [(f"{owner}.{p}", d % tensors[p].ndim, tensors[p].shape[d])
            for p, d in dims.items() if tensors.get(p) is not None]
    if any(size != len(classes) for _, _, size in axes):
        return False
    for key, dim, size in axes:
        axis = w.b.param_axis(key, dim, size, None)
        w.b.unify(axis, classes)
        if (key, dim) not in w.custom_sliced:
            w.custom_sliced.add((key, dim))
            w.b.add_slice(ParamSlice(key, dim, axis, role=role), owner)
    return True


def _outputs(w: Walker, node: torch.fx.Node, owner: str, cdim: int, size: int,
             classes: np.ndarray) -> object:
    """The node's value: channels along ``cdim`` when its shape has them, else fixed."""
    shape = w.shape(node)
    if shape is None:
        return None
    d = cdim % len(shape)
    if size and shape[d] == size:
        v = Val(shape, classes.reshape([size if k == d else 1 for k in range(len(shape))]))
    else:
        v = w.fixed_val(shape, f"inside custom layer {owner}")
    v.owner = owner  # type: ignore[attr-defined]
    return v


def _inputs(w: Walker, node: torch.fx.Node, owner: str) -> list[Val]:
    return [a for a in flat_vals(w.arg(list(node.args)))
            if isinstance(a, Val) and getattr(a, "owner", None) != owner]


def custom_node(w: Walker, node: torch.fx.Node, owner: str, rule: LayerRule) -> object:
    w.custom[owner] = rule
    cdim = 1 if rule.channel_dim is None else rule.channel_dim
    if rule.kind == "channelwise":
        return _channelwise(w, node, owner, rule, cdim)
    params = dict(w.modules[owner].named_parameters(recurse=False))
    pname, dim = next(iter(rule.out_dims.items()))
    size = params[pname].shape[dim]
    out = w.b.param_axis(f"{owner}.{pname}", dim % params[pname].ndim, size, owner)
    _tie(w, owner, rule.out_dims, out, "out")
    for a in _inputs(w, node, owner):
        lst = channel_list(a, cdim)
        w.fix_if_excluded(owner, a.cls)
        if lst is None or not _tie(w, owner, rule.in_dims, lst, "in"):
            w.b.fix(a.cls, f"input of custom layer {owner} does not match it")
            continue
        if owner not in w.custom_macs:
            w.custom_macs.add(owner)
            w.b.mac_ops.append(MacOp(owner, w.module_macs.get(owner, 0), lst, out))
    w.fix_if_excluded(owner, out)
    return _outputs(w, node, owner, cdim, size, out)


def _channelwise(w: Walker, node: torch.fx.Node, owner: str, rule: LayerRule,
                 cdim: int) -> object:
    """Output channels are the input's; the layer's weights follow them."""
    seen = w.custom_inputs.get(owner)
    for a in _inputs(w, node, owner):
        lst = channel_list(a, cdim)
        if lst is None or not _tie(w, owner, rule.out_dims, lst, "other"):
            w.b.fix(a.cls, f"input of channel-wise layer {owner} does not match it")
            continue
        w.fix_if_excluded(owner, lst)
        seen = w.custom_inputs[owner] = lst
        if owner not in w.custom_macs and w.module_macs.get(owner, 0):
            w.custom_macs.add(owner)  # e.g. a per-channel conv: MACs scale with the channels
            w.b.mac_ops.append(MacOp(owner, w.module_macs[owner], None, lst, depthwise=True))
    if seen is None:  # e.g. a view of the layer's own weight, before the input arrives
        return _outputs(w, node, owner, cdim, 0, np.zeros(0, dtype=np.int64))
    return _outputs(w, node, owner, cdim, len(seen), seen)

"""Attention heads split from channels: whole heads and head width as two groups.

A reshape inside a module that holds its head count in ``num_heads`` (timm's ``Attention``,
``nn.MultiheadAttention``, most hand-written blocks) and splits a channel dim into heads
(``qkv.reshape(B, N, 3, self.num_heads, self.head_dim)``) makes the channels it splits
*composite*: channel ``c = (s * H + h) * D + d`` goes when its head ``h`` or its width ``d``
goes. The heads and the widths are two fresh groups (``<module> (heads)``, ``<module> (head
width)``); the composite channels (the qkv rows, the output projection's columns) follow them
(:meth:`~uif_explorer.core.channels.ChannelGraph.spread_removed`), so every head keeps the
same width and the slim model is a plain narrower reshape. The slim model gets the kept counts
in ``num_heads``, ``head_dim`` and (timm) ``attn_dim``
(:class:`~uif_explorer.torch.rules.base.SizeAttr`);
``nn.MultiheadAttention`` (whose own forward needs its inner width to equal its input width)
becomes :class:`HeadPrunedMultiheadAttention`, the same arithmetic at any width.

Reshapes, ``select``, ``unbind`` and a norm over the head width of composite channels are
followed exactly (positions are
tracked one by one); where the model's code then reads a width from elsewhere (a reshape back
to the input's width, a literal head count), the capture's probe freezes the group with the
error (:mod:`uif_explorer.torch.probe`). A split in a module without ``num_heads`` stays a
barrier, with that reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from uif_explorer.core.channels import Val, channel_list, compress, varies, varying_dims
from uif_explorer.core.rules import Barrier, LayerRule, reshape_groups
from uif_explorer.torch.rules import paths, shape, weighted
from uif_explorer.torch.rules.base import (
    SizeAttr,
    module_path,
    op_rule,
    register_builtin,
)

if TYPE_CHECKING:
    from uif_explorer.core.channels import ChannelGraphBuilder
    from uif_explorer.torch.walk import Walker

NO_HEAD_ATTR = ("reshape that splits channels (e.g. into attention heads) in a module without "
                "an int num_heads attribute (hold the head count in self.num_heads and the head "
                "width in self.head_dim, so that a narrower model can rewrite them)")
NO_HEAD_DIM = ("head width computed in forward, not read from a head_dim attribute (keep it in "
               "self.head_dim to prune it)")


def factors_of(b: ChannelGraphBuilder, cls: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(head, width) class arrays shaped like ``cls`` when every class in it is composite."""
    if not b.factor_of:
        return None
    flat = cls.ravel()
    pairs = [b.factor_of.get(int(c)) for c in flat]
    if not pairs or any(p is None for p in pairs):
        return None
    arr = np.array(pairs, dtype=np.int64)
    return arr[:, 0].reshape(cls.shape), arr[:, 1].reshape(cls.shape)


def exact_reshape(x: Val, out: tuple[int, ...]) -> Val:
    """Any reshape, position by position (row-major), of the runs of dims that carry classes."""
    vary = set(varying_dims(x.cls))
    groups = reshape_groups(x.shape, out)
    if groups is None:
        raise Barrier("reshape that regroups channels")
    idx: list[slice] = []
    new_shape: list[int] = []
    for in_dims, out_dims in groups:
        keep = any(d in vary for d in in_dims)
        idx.extend(slice(None) if keep else slice(0, 1) for _ in in_dims)
        new_shape.extend(out[d] if keep else 1 for d in out_dims)
    full = np.broadcast_to(x.cls, x.shape)[tuple(idx)]
    return Val(tuple(out), compress(np.ascontiguousarray(full).reshape(new_shape)))


def _module(w: Walker, node: torch.fx.Node) -> tuple[str, nn.Module | None]:
    path = module_path(node)
    path = "" if path == "(model)" else path
    return path, w.modules.get(path)


def _head_classes(w: Walker, path: str, module: nn.Module, heads: int,
                  width: int) -> tuple[np.ndarray, np.ndarray]:
    """The head and width classes of one attention module (made once, rewritten in slim)."""
    if path not in w.heads:
        label = path or "(model)"
        h = w.b.fresh(heads, f"{label} (heads)")
        d = w.b.fresh(width, f"{label} (head width)")
        w.size_attrs.append(SizeAttr(path, "num_heads", [h]))
        if isinstance(getattr(module, "head_dim", None), int):
            w.size_attrs.append(SizeAttr(path, "head_dim", [d]))
        else:
            w.b.fix(d, f"{NO_HEAD_DIM} ({label})")
        w.fix_if_excluded(path, h, d)
        w.heads[path] = (h, d)
    h, d = w.heads[path]
    if (len(h), len(d)) != (heads, width):
        raise Barrier(f"two different head splits in one module ({path or '(model)'})")
    return h, d


def head_split(w: Walker, node: torch.fx.Node, x: Val, out: tuple[int, ...]) -> Val:
    """A reshape splitting one channel dim into heads of the module's ``num_heads``."""
    path, module = _module(w, node)
    heads = getattr(module, "num_heads", None)
    vary = varying_dims(x.cls)
    if not isinstance(heads, int) or heads < 1 or len(vary) != 1:
        raise Barrier(NO_HEAD_ATTR)
    cd = vary[0]
    lst, c = channel_list(x, cd), x.shape[cd]
    run = next((r for r in reshape_groups(x.shape, out) or [] if cd in r[0]), None)
    width = getattr(module, "head_dim", None)
    if run is not None and not (isinstance(width, int) and width > 0):
        # no head_dim: the last piece is the width when the heads come right before it
        last, before = out[run[1][-1]], out[run[1][-2]] if len(run[1]) > 1 else 1
        width = last if before == heads else last // heads
    if (lst is None or run is None or run[0][-1] != cd or not width or c % (heads * width)
            or out[run[1][-1]] not in (width, heads * width)):
        raise Barrier(f"reshape that splits {c} channels other than into heads of "
                      f"num_heads={heads} x head width {width} ({path or '(model)'})")
    new = path not in w.heads
    h, d = _head_classes(w, path, module, heads, width)
    idx = np.arange(c)
    w.b.add_factors(lst, h[(idx // width) % heads], d[idx % width])
    if new and getattr(module, "attn_dim", None) == heads * width:  # timm: the inner width
        w.size_attrs.append(SizeAttr(path, "attn_dim", [lst[: heads * width]]))
    return exact_reshape(x, out)


@op_rule("view", "reshape", "_unsafe_view", "flatten", "unflatten", *shape.LIKE)
def reshape(w: Walker, node: torch.fx.Node) -> Val:
    """:func:`.shape.reshape`, plus splits into parts combined per channel
    (:func:`.paths.part_split`), head splits and any reshape of composite channels."""
    return shape.like_other(w, node, _reshape(w, node))


def _reshape(w: Walker, node: torch.fx.Node) -> Val:
    x, out = w.arg(node.args[0]), w.shape(node)
    if isinstance(x, Val) and factors_of(w.b, x.cls) is not None:
        return exact_reshape(x, out)
    try:
        return shape.plain_reshape(w, node)
    except Barrier as exc:
        if not isinstance(x, Val):
            raise
        try:
            return paths.part_split(w, node, x, out)
        except Barrier:
            pass
        try:
            return head_split(w, node, x, out)
        except Barrier as why:
            raise Barrier(f"{exc}; {why}" if str(why) == NO_HEAD_ATTR else str(why)) from None


def _free_along(w: Walker, x: Val, d: int) -> bool:
    """Whether dim ``d`` holds composite channels whose head and width do not change along it
    (the q / k / v axis of a packed projection): indexing it keeps whole heads."""
    if not varies(x.cls, d):
        return False
    f = factors_of(w.b, x.cls)
    return f is not None and not varies(f[0], d) and not varies(f[1], d)


@op_rule("select")
def select(w: Walker, node: torch.fx.Node) -> Val:
    x = w.arg(node.args[0])
    d = int(node.args[1]) % len(x.shape) if isinstance(x, Val) else 0
    if isinstance(x, Val) and _free_along(w, x, d):
        return Val(w.shape(node), compress(np.take(x.cls, int(node.args[2]), axis=d)))
    return shape.select(w, node)


@op_rule("unbind")
def unbind(w: Walker, node: torch.fx.Node) -> tuple:
    x = w.arg(node.args[0])
    d = int(node.args[1]) % len(x.shape) if isinstance(x, Val) and len(node.args) > 1 else 0
    if isinstance(x, Val) and _free_along(w, x, d):
        return tuple(Val(tuple(t.shape), compress(np.take(x.cls, i, axis=d)))
                     for i, t in enumerate(node.meta.get("val")))
    return shape.unbind(w, node)


@op_rule("layer_norm", "rms_norm")
def layer_norm(w: Walker, node: torch.fx.Node) -> Val:
    """:func:`.weighted.layer_norm`, plus a norm over the head width (timm's ``qk_norm``,
    Gemma's ``q_norm``): its weights follow the width classes, and it spans them (the sparse
    model normalises the kept widths only, like any channel-spanning norm)."""
    x = w.arg(node.args[0])
    per_head = (isinstance(x, Val) and len(node.args[1]) == 1 and channel_list(x, -1) is None)
    f = factors_of(w.b, x.cls) if per_head else None
    if f is None:  # incl. a norm over merged heads (timm's scale_norm): composites as channels
        return weighted.layer_norm(w, node)
    nd = len(x.shape)
    if varies(f[0], nd - 1) or any(varies(f[1], d) for d in range(nd - 1)):
        raise Barrier("layer norm over heads and head width together")
    weighted.record_last_dim_norm(w, node, np.broadcast_to(f[1], x.shape)[(0,) * (nd - 1)].copy())
    return Val(x.shape, x.cls)


# -- nn.MultiheadAttention --------------------------------------------------------------------
def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            mask, float("-inf"))
    return mask.to(dtype)


class HeadPrunedMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose inner width (``num_heads * head_dim``) may differ from
    its input width: what a slim model with pruned heads or a pruned residual stream needs
    (PyTorch's own forward requires the two to be equal). Same arithmetic otherwise; packed
    input projection only, masks shared by all heads."""

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        if self.bias_k is not None or self.add_zero_attn:
            raise NotImplementedError("add_bias_kv / add_zero_attn after pruning heads")
        packed = query is key and key is value  # one packed projection: capturable again
        if self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        length, batch, _ = query.shape
        heads, width = self.num_heads, self.head_dim
        inner = heads * width
        w, b = self.in_proj_weight, self.in_proj_bias
        if packed:
            qkv = F.linear(query, w, b).unflatten(-1, (3, inner)).unbind(-2)
        else:
            qkv = (F.linear(t, wt, bt) for t, wt, bt in zip(
                (query, key, value), w.split(inner), (None,) * 3 if b is None else b.split(inner),
                strict=True))
        q, k, v = (t.reshape(t.shape[0], batch, heads, width).permute(1, 2, 0, 3) for t in qkv)
        mask = None
        if attn_mask is not None:
            if attn_mask.dim() != 2:
                raise NotImplementedError("a per-head attention mask after pruning heads")
            mask = _additive(attn_mask, q.dtype)
        if key_padding_mask is not None:
            pad = _additive(key_padding_mask, q.dtype).view(batch, 1, 1, -1)
            mask = pad if mask is None else mask + pad
        p = self.dropout if self.training else 0.0
        if need_weights:
            scores = q @ k.transpose(-2, -1) * width ** -0.5
            attn = torch.softmax(scores if mask is None else scores + mask, dim=-1)
            out = F.dropout(attn, p) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        out = self.out_proj(out.permute(2, 0, 1, 3).reshape(length * batch, inner))
        out = out.view(length, batch, -1)
        if self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, attn.mean(1) if average_attn_weights else attn


def _mha_update(m: nn.MultiheadAttention, kept_in: int, kept_out: int) -> None:
    if m.in_proj_weight is None:  # separate q/k/v weights: its own forward (the probe checks)
        return
    m.__class__ = HeadPrunedMultiheadAttention
    m.embed_dim = m.kdim = m.vdim = int(m.in_proj_weight.shape[1])


register_builtin(nn.MultiheadAttention, LayerRule(
    "producer", {"in_proj_weight": 0}, {"in_proj_weight": 1}, _mha_update, traced=True))

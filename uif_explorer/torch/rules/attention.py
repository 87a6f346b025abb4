"""Op rules for attention: fused ``scaled_dot_product_attention`` and plain matmuls.

Attention costs MACs that depend on widths a plan can change: ``q @ k^T`` scales with the
query/key width, ``attn @ v`` with the value width. These rules tie the channels that must go
together (a query channel and the key channel it is multiplied with) and record both products
as :class:`~uif_explorer.core.channels.MacOp` records, so a plan's MACs follow the widths it
keeps and equal the FLOP counter's count of the slim model (see :mod:`uif_explorer.torch.macs`
for the CPU fused kernel the counter needs a formula for).

Fused attention's default scale is ``1 / sqrt(E)`` of the query width ``E`` it receives: a
narrower slim model would scale differently from the sparse one, so query/key channels are
fixed there unless the model passes ``scale=`` itself. Value channels are free either way.

Heads split from channels (:mod:`.heads`) reach these rules as composite channels on the heads
dim (-3) and the last dim: head ``h`` of q, k and v is tied (one head), q's and k's widths are
tied (contracted), and the products count kept heads x kept widths; with the default scale only
the head *width* is fixed, whole heads stay prunable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from uif_explorer.core.channels import (
    MacOp,
    Val,
    channel_list,
    compress,
    varies,
    varying_dims,
)
from uif_explorer.core.rules import Barrier, fixed_val
from uif_explorer.torch.rules import heads
from uif_explorer.torch.rules.base import ParamVal, ParamView, module_path, op_name, op_rule

if TYPE_CHECKING:
    from uif_explorer.torch.walk import Walker

DEFAULT_SCALE = ("fused attention's default scale reads the query width (pass scale= to "
                 "scaled_dot_product_attention to prune it)")
NO_CHANNELS = "attention scores carry no channels"


def _positions(x: object, what: str) -> np.ndarray:
    """Classes per (head, width) position, shape (H, E): the last dim and, for a tensor of
    three dims or more, the heads dim (-3) may carry channels; nothing else may."""
    if not isinstance(x, Val):
        raise Barrier(f"attention on a weight or constant {what}")
    nd = len(x.shape)
    allowed = {nd - 1, nd - 3} if nd >= 3 else {nd - 1}
    if any(d not in allowed for d in varying_dims(x.cls)):
        raise Barrier(f"attention whose {what} carries channels outside its last dim "
                      "(e.g. heads split from channels)")
    idx: list[object] = [0] * nd
    idx[-1] = slice(None)
    if nd >= 3:
        idx[-3] = slice(None)
    pos = np.broadcast_to(x.cls, x.shape)[tuple(idx)]
    return pos if nd >= 3 else pos[None, :]


def _tie_heads(w: Walker, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray | None:
    """Head h of q, k and v goes together and q, k widths are contracted: tie their factors.
    The widths of q (what the default scale reads), or None when q is not split into heads."""
    fq, fk, fv = (heads.factors_of(w.b, p) for p in (q, k, v))
    if fq is None and fk is None and fv is None:
        if any(varies(p, 0) for p in (q, k, v)):
            raise Barrier("attention heads split from channels the pruner cannot follow")
        return None
    if fq is None or fk is None or fv is None:
        raise Barrier("attention whose query, key and value are not all split into heads")
    w.b.unify(fq[0][:, :1], fk[0][:, :1])
    w.b.unify(fq[0][:, :1], fv[0][:, :1])
    w.b.unify(fq[1], fk[1])
    return fq[1]


def _as_last(out_shape: tuple[int, ...], lst: np.ndarray) -> np.ndarray:
    return lst.reshape([1] * (len(out_shape) - 1) + [-1])


@op_rule("scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
         "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
         "_scaled_dot_product_cudnn_attention")
def sdpa(w: Walker, node: torch.fx.Node) -> object:
    """softmax(q k^T * scale) v: q and k widths tied, v's width is the output's."""
    args = list(node.args)
    q, k, v = (w.arg(a) for a in args[:3])
    mask = w.arg(args[3]) if len(args) > 3 else w.arg(node.kwargs.get("attn_mask"))
    if isinstance(mask, Val) and any(varies(mask.cls, d) for d in range(mask.cls.ndim)):
        raise Barrier("attention mask that carries channels")
    q_pos, k_pos, v_pos = (_positions(t, n) for t, n in ((q, "query"), (k, "key"),
                                                          (v, "value")))
    if q_pos.shape != k_pos.shape or q_pos.shape[0] != v_pos.shape[0]:
        raise Barrier("attention whose query, key and value have different head counts")
    w.b.unify(q_pos, k_pos)
    q_widths = _tie_heads(w, q_pos, k_pos, v_pos)
    scale = args[6] if op_name(node) == "scaled_dot_product_attention" and len(args) > 6 \
        else node.kwargs.get("scale")
    if scale is None:
        w.b.fix(q_pos if q_widths is None else q_widths,
                f"{DEFAULT_SCALE} ({op_name(node)} in {module_path(node)})")
    val = node.meta.get("val")
    out = val[0] if isinstance(val, (list, tuple)) else val
    out_shape = tuple(int(s) for s in out.shape)
    batch = int(np.prod(q.shape[:-3])) if len(q.shape) >= 3 else 1
    length, keys = q.shape[-2], k.shape[-2]
    where = module_path(node)
    # positions (head x width) are counted one by one: kept heads x kept widths
    w.b.mac_ops.append(MacOp(where, batch * length * keys * q_pos.size, q_pos.ravel(), None))
    w.b.mac_ops.append(MacOp(where, batch * length * keys * v_pos.size, None, v_pos.ravel()))
    nd = len(out_shape)
    lead = [1] * (nd - 3) + [v_pos.shape[0], 1] if nd >= 3 else [1] * (nd - 1)
    result = Val(out_shape, compress(v_pos.reshape(lead + [v_pos.shape[1]])))
    if isinstance(val, (list, tuple)):  # (output, logsumexp, ...): the rest carry no channels
        return (result,) + tuple(
            fixed_val(w.b, tuple(t.shape), NO_CHANNELS) if isinstance(t, torch.Tensor) else None
            for t in val[1:]
        )
    return result


def _dim_list(x: Val, dim: int) -> np.ndarray | None:
    """Classes along ``dim`` when it carries channels, else None."""
    return channel_list(x, dim) if varies(x.cls, dim % len(x.shape)) else None


def _head_positions(x: Val, axis: int) -> np.ndarray | None:
    """Classes per (head, ``axis``) position, shape (H, n), when only the heads dim (-3) and
    ``axis`` carry channels; None otherwise."""
    nd = len(x.shape)
    if nd < 3 or any(d not in (nd - 3, axis % nd) for d in varying_dims(x.cls)):
        return None
    idx: list[object] = [0] * nd
    idx[-3], idx[axis] = slice(None), slice(None)
    return np.broadcast_to(x.cls, x.shape)[tuple(idx)]


def _heads_matmul(w: Walker, node: torch.fx.Node, a: Val, b: Val) -> Val:
    """``q @ k^T`` and ``attn @ v`` per head (dim -3 carries heads): the contracted width ties
    q's and k's composite channels, the heads of both sides are one head, and the output
    carries the heads (scores) or v's composite channels. MACs: kept heads x kept widths."""
    a_pos, b_k, b_cols = _head_positions(a, -1), _head_positions(b, -2), _head_positions(b, -1)
    if a_pos is None:
        raise Barrier("matmul whose batch dims carry channels")
    contract = varies(a_pos, 1)
    b_pos = b_k if contract else b_cols
    if b_pos is None or (contract and not varies(b_pos, 1)):
        raise Barrier("matmul whose batch dims carry channels, contracted with a tensor "
                      "that carries none or carries them elsewhere")
    fa, fb = heads.factors_of(w.b, a_pos), heads.factors_of(w.b, b_pos)
    if fb is None:
        raise Barrier("matmul of attention heads with a tensor not split into heads")
    a_heads = fa[0][:, :1] if fa is not None else a_pos[:, :1]
    w.b.unify(a_heads, fb[0][:, :1])
    out_shape = w.shape(node)
    batch = int(np.prod(out_shape[:-3])) * out_shape[-2]
    nd = len(out_shape)
    where = module_path(node)
    if contract:  # q @ k^T: the scores carry the heads
        if fa is None:
            raise Barrier("matmul of attention heads with a tensor not split into heads")
        w.b.unify(a_pos, b_pos)
        w.b.unify(fa[1], fb[1])
        w.b.mac_ops.append(MacOp(where, batch * out_shape[-1] * a_pos.size, a_pos.ravel(), None))
        return Val(out_shape, a_heads.reshape([1] * (nd - 3) + [-1, 1, 1]))
    w.b.mac_ops.append(MacOp(where, batch * a.shape[-1] * b_pos.size, None, b_pos.ravel()))
    return Val(out_shape, compress(b_pos.reshape([1] * (nd - 3) + [b_pos.shape[0], 1, -1])))


@op_rule("matmul", "bmm", "mm")
def matmul(w: Walker, node: torch.fx.Node) -> object:
    """``a @ b`` of activations (attention scores, ``attn @ v``): the contracted dim ties the
    channels of both sides; the output carries the channels of ``a``'s rows or ``b``'s
    columns. Its MACs follow the kept contracted and output widths."""
    a, b = w.arg(node.args[0]), w.arg(node.args[1])
    if isinstance(a, (ParamVal, ParamView)) or isinstance(b, (ParamVal, ParamView)):
        return w.unknown(node, op_name(node))  # a weight: a layer without a rule
    if not isinstance(a, Val) or not isinstance(b, Val) or len(a.shape) < 2 or len(b.shape) < 2:
        raise Barrier("matmul of vectors or constants")
    if any(varies(t.cls, d) for t in (a, b) for d in range(t.cls.ndim - 2)):
        return _heads_matmul(w, node, a, b)
    a_rows, a_k, b_k, b_cols = (_dim_list(a, -2), _dim_list(a, -1), _dim_list(b, -2),
                                _dim_list(b, -1))
    if (a_rows is not None and a_k is not None) or (b_k is not None and b_cols is not None):
        raise Barrier("matmul of an operand that carries channels on both of its axes")
    if a_rows is not None and b_cols is not None:
        raise Barrier("matmul of channels by channels (an outer product)")
    contracted = None
    if a_k is not None and b_k is not None:
        w.b.unify(a_k, b_k)
        contracted = a_k
    elif a_k is not None or b_k is not None:  # channels summed with a tensor that has none
        w.b.fix(a_k if a_k is not None else b_k,
                f"matmul contracts channels with a tensor that carries none ({module_path(node)})")
    out_shape = w.shape(node)
    batch = int(np.prod(out_shape[:-2])) if len(out_shape) > 2 else 1
    full = batch * a.shape[-2] * a.shape[-1] * b.shape[-1]
    out_list = b_cols if b_cols is not None else a_rows
    w.b.mac_ops.append(MacOp(module_path(node), full, contracted, out_list))
    if b_cols is not None:
        return Val(out_shape, _as_last(out_shape, b_cols))
    if a_rows is not None:
        return Val(out_shape, a_rows.reshape([1] * (len(out_shape) - 2) + [-1, 1]))
    return fixed_val(w.b, out_shape, NO_CHANNELS)

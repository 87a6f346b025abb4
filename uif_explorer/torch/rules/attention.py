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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from uif_explorer.core.channels import MacOp, Val, channel_list, varies
from uif_explorer.core.rules import Barrier, fixed_val
from uif_explorer.torch.rules.base import ParamVal, module_path, op_name, op_rule

if TYPE_CHECKING:
    from uif_explorer.torch.walk import Walker

DEFAULT_SCALE = ("fused attention's default scale reads the query width (pass scale= to "
                 "scaled_dot_product_attention to prune it)")
NO_CHANNELS = "attention scores carry no channels"


def _last_dim(x: object, what: str) -> np.ndarray:
    """Classes along the last dim, which must be the only dim that carries channels."""
    if not isinstance(x, Val):
        raise Barrier(f"attention on a weight or constant {what}")
    lst = channel_list(x, -1)
    if lst is None:
        raise Barrier(f"attention whose {what} carries channels outside its last dim "
                      "(e.g. heads split from channels)")
    return lst


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
    q_list, k_list, v_list = (_last_dim(t, n) for t, n in ((q, "query"), (k, "key"),
                                                            (v, "value")))
    w.b.unify(q_list, k_list)
    scale = args[6] if op_name(node) == "scaled_dot_product_attention" and len(args) > 6 \
        else node.kwargs.get("scale")
    if scale is None:
        w.b.fix(q_list, f"{DEFAULT_SCALE} ({op_name(node)} in {module_path(node)})")
    val = node.meta.get("val")
    out = val[0] if isinstance(val, (list, tuple)) else val
    out_shape = tuple(int(s) for s in out.shape)
    batch = int(np.prod(q.shape[:-2]))
    length, keys = q.shape[-2], k.shape[-2]
    where = module_path(node)
    w.b.mac_ops.append(MacOp(where, batch * length * keys * len(q_list), q_list, None))
    w.b.mac_ops.append(MacOp(where, batch * length * keys * len(v_list), None, v_list))
    result = Val(out_shape, _as_last(out_shape, v_list))
    if isinstance(val, (list, tuple)):  # (output, logsumexp, ...): the rest carry no channels
        return (result,) + tuple(
            fixed_val(w.b, tuple(t.shape), NO_CHANNELS) if isinstance(t, torch.Tensor) else None
            for t in val[1:]
        )
    return result


def _dim_list(x: Val, dim: int) -> np.ndarray | None:
    """Classes along ``dim`` when it carries channels, else None."""
    return channel_list(x, dim) if varies(x.cls, dim % len(x.shape)) else None


@op_rule("matmul", "bmm", "mm")
def matmul(w: Walker, node: torch.fx.Node) -> object:
    """``a @ b`` of activations (attention scores, ``attn @ v``): the contracted dim ties the
    channels of both sides; the output carries the channels of ``a``'s rows or ``b``'s
    columns. Its MACs follow the kept contracted and output widths."""
    a, b = w.arg(node.args[0]), w.arg(node.args[1])
    if isinstance(a, ParamVal) or isinstance(b, ParamVal):
        return w.unknown(node, op_name(node))  # a weight: a layer without a rule
    if not isinstance(a, Val) or not isinstance(b, Val) or len(a.shape) < 2 or len(b.shape) < 2:
        raise Barrier("matmul of vectors or constants")
    for t in (a, b):
        if any(varies(t.cls, d) for d in range(t.cls.ndim - 2)):
            raise Barrier("matmul whose batch dims carry channels")
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

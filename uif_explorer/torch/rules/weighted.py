"""Op rules for ATen ops that read weights: convolutions, linear, embeddings, norms, PReLU.

A convolution or linear creates fresh classes for its output axis (the same ones on every call
of a shared module) and ties its input axis to the classes that reach it. Depthwise
convolutions follow their input (they never lead a group); grouped ones add a block constraint.
Norms slice their parameters along the channels they see; norms whose statistics span channels
are recorded as :class:`~uif_explorer.torch.rules.base.SpanningNorm` for the sparse model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import torch

from uif_explorer.core.channels import MacOp, ParamSlice, Val, channel_list, varying_dims
from uif_explorer.core.rules import Barrier
from uif_explorer.torch.rules.base import (
    LAYERS,
    ParamVal,
    SizeAttr,
    SpanningNorm,
    find_size_attr,
    module_path,
    op_name,
    op_rule,
)
from uif_explorer.torch.rules.std_conv import record_standardized, standardized_weight

if TYPE_CHECKING:
    from uif_explorer.torch.walk import Walker


def _conv_args(node: torch.fx.Node, name: str) -> tuple[bool, int]:
    """(transposed, groups) of any ATen convolution overload."""
    args = list(node.args)
    if name in ("convolution", "_convolution"):
        return bool(args[6]), int(args[8])
    groups = int(args[6]) if len(args) > 6 else int(node.kwargs.get("groups", 1))
    return name.startswith("conv_transpose"), groups


@op_rule("conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d",
         "conv_transpose2d", "conv_transpose3d")
def conv(w: Walker, node: torch.fx.Node) -> Val:
    args = list(node.args)
    x, wt = w.arg(args[0]), w.arg(args[1])
    bias = w.arg(args[2]) if len(args) > 2 else None
    transposed, groups = _conv_args(node, op_name(node))
    std = None if isinstance(wt, ParamVal) or transposed else standardized_weight(w, args[1])
    wt = std.weight if std is not None else wt
    if not isinstance(x, Val) or not isinstance(wt, ParamVal):
        raise Barrier("convolution with computed weights")
    out_shape = w.shape(node)
    in_list = channel_list(x, 1)
    if in_list is None:
        raise Barrier("convolution input channels depend on position")
    module, wshape, c_in = w.module_of(wt.name), wt.shape, x.shape[1]
    c_out = wshape[1] * groups if transposed else wshape[0]
    depthwise = groups > 1 and groups == c_in
    if depthwise:
        # No producer space: a depthwise conv follows (it must not link concat inputs).
        # Transposed weight [C_in, mult, k]: dim 0 follows the inputs; else dim 0 = outputs.
        out_list = np.repeat(in_list, c_out // c_in)
        follows = in_list if transposed else out_list
        w.b.unify(w.b.param_axis(wt.name, 0, wshape[0], None), follows)
        w.b.add_slice(ParamSlice(wt.name, 0, follows, role="dw"), module)
        w.depthwise.add(module)
    elif transposed:
        if groups > 1:
            raise Barrier("grouped transposed convolution")
        out_list = w.b.param_axis(wt.name, 1, c_out, module)
        w.b.unify(w.b.param_axis(wt.name, 0, c_in, None), in_list)
        w.b.add_slice(ParamSlice(wt.name, 1, out_list, role="out"), module)
        w.b.add_slice(ParamSlice(wt.name, 0, in_list, role="in"), module)
    else:
        out_list = w.b.param_axis(wt.name, 0, c_out, module)
        w.b.add_slice(ParamSlice(wt.name, 0, out_list, role="out"), module)
        if groups > 1:
            w.b.add_slice(ParamSlice(wt.name, 1, in_list, blocks=groups, role="in"), module)
            w.b.add_block_constraint(in_list, groups, f"grouped conv {module}")
            w.b.add_block_constraint(out_list, groups, f"grouped conv {module}")
        else:
            w.b.unify(w.b.param_axis(wt.name, 1, c_in, None), in_list)
            w.b.add_slice(ParamSlice(wt.name, 1, in_list, role="in"), module)
    if isinstance(bias, ParamVal):
        w.b.add_slice(ParamSlice(bias.name, 0, out_list, role="bias"), module)
    if std is not None:
        record_standardized(w, std, module, in_list, out_list, groups, depthwise)
    w.fix_if_excluded(module, in_list, out_list)
    # MACs: N * out_spatial * C_out * C_in/groups * k (conv); transposed uses in_spatial.
    kernel = int(np.prod(wshape[2:])) if len(wshape) > 2 else 1
    spatial = int(np.prod(x.shape[2:])) if transposed else int(np.prod(out_shape[2:]))
    full = x.shape[0] * spatial * c_in * (c_out // groups) * kernel
    w.b.mac_ops.append(MacOp(module, full, in_list, out_list,
                             groups=1 if depthwise else groups, depthwise=depthwise))
    return Val(out_shape, out_list.reshape([1, -1] + [1] * (len(out_shape) - 2)))


@op_rule("linear")
def linear(w: Walker, node: torch.fx.Node) -> Val:
    x, wt = w.arg(node.args[0]), w.arg(node.args[1])
    bias = w.arg(node.args[2]) if len(node.args) > 2 else None
    if not isinstance(x, Val) or not isinstance(wt, ParamVal):
        raise Barrier("linear with computed weights")
    in_list = channel_list(x, -1)
    if in_list is None:
        raise Barrier("linear input features depend on position")
    module = w.module_of(wt.name)
    out_list = w.b.param_axis(wt.name, 0, wt.shape[0], module)
    w.b.add_slice(ParamSlice(wt.name, 0, out_list, role="out"), module)
    w.b.add_slice(ParamSlice(wt.name, 1, in_list, role="in"), module)
    w.b.unify(w.b.param_axis(wt.name, 1, wt.shape[1], None), in_list)
    if isinstance(bias, ParamVal):
        w.b.add_slice(ParamSlice(bias.name, 0, out_list, role="bias"), module)
    w.fix_if_excluded(module, in_list, out_list)
    out_shape = w.shape(node)
    rows = int(np.prod(out_shape[:-1])) if len(out_shape) > 1 else 1
    w.b.mac_ops.append(MacOp(module, rows * wt.shape[0] * wt.shape[1], in_list, out_list))
    return Val(out_shape, out_list.reshape([1] * (len(out_shape) - 1) + [-1]))


def _norm_params(w: Walker, params: Iterable[object], lst: np.ndarray, role: str) -> str | None:
    """Slice per-channel parameters along ``lst``; the module that owns them."""
    module = None
    for p in params:
        if isinstance(p, ParamVal):
            module = w.module_of(p.name)
            w.b.add_slice(ParamSlice(p.name, 0, lst, role=role), module)
    w.fix_if_excluded(module, lst)
    return module


def _input_channels(w: Walker, node: torch.fx.Node, dim: int, what: str) -> tuple[Val, np.ndarray]:
    x = w.arg(node.args[0])
    if not isinstance(x, Val):
        raise Barrier(f"{what} of a non-tensor")
    lst = channel_list(x, dim)
    if lst is None:
        raise Barrier(f"{what} input channels depend on position")
    return x, lst


@op_rule("batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit",
         "native_batch_norm", "instance_norm")
def batch_norm(w: Walker, node: torch.fx.Node) -> object:
    x, lst = _input_channels(w, node, 1, "batch norm")
    weight, bias = w.arg(node.args[1]), w.arg(node.args[2])
    stats = [w.arg(node.args[3]), w.arg(node.args[4])]
    _norm_params(w, [weight], lst, "norm")
    _norm_params(w, [bias] + stats, lst, "stat")
    val = node.meta.get("val")
    if isinstance(val, (list, tuple)):
        return tuple(
            Val(tuple(t.shape), x.cls) if i == 0 else w.fixed_val(tuple(t.shape), "bn")
            for i, t in enumerate(val)
        )
    return Val(x.shape, x.cls)


def _norm_args(w: Walker, node: torch.fx.Node) -> tuple[object, object, float]:
    """(weight, bias, eps) of aten layer_norm / group_norm: both put them at args 2-4."""
    args = node.args
    weight = w.arg(args[2]) if len(args) > 2 else None
    bias = w.arg(args[3]) if len(args) > 3 else None
    return weight, bias, float(args[4]) if len(args) > 4 else 1e-5


def last_dim_norm_args(w: Walker, node: torch.fx.Node) -> tuple[object, object, float | None]:
    """(weight, bias, eps) of aten ``layer_norm(x, shape, weight, bias, eps)`` or
    ``rms_norm(x, shape, weight, eps)`` (no bias; eps None = the dtype's epsilon)."""
    if op_name(node) != "rms_norm":
        return _norm_args(w, node)
    args = node.args
    weight = w.arg(args[2]) if len(args) > 2 else node.kwargs.get("weight")
    eps = args[3] if len(args) > 3 else node.kwargs.get("eps")
    return weight, None, None if eps is None else float(eps)


def _bare_norm_module(w: Walker, node: torch.fx.Node) -> str | None:
    """The module a weightless norm runs in, when that module is nothing but the norm (a leaf
    without parameters, e.g. ``RmsNorm(affine=False)``, whose input is the norm's input and
    whose output is the norm's output): a hook on it can recompute the norm."""
    path = module_path(node)
    m = w.modules.get(path)
    if path == "(model)" or m is None or next(m.children(), None) is not None:
        return None
    src = node.args[0]
    inside = [src] if isinstance(src, torch.fx.Node) and src.op == "call_function" else []
    if any(module_path(n) == path for n in inside + list(node.users)):
        return None
    return None if next(m.parameters(recurse=False), None) is not None else path


def record_last_dim_norm(w: Walker, node: torch.fx.Node, lst: np.ndarray) -> None:
    """A layer / RMS norm over the last dim whose classes are ``lst`` (channels, or the head
    width of composite ones): its weights are sliced along ``lst``, the sparse model recomputes
    it over the kept entries (:class:`SpanningNorm`) and a ``normalized_shape`` the module's
    forward reads is rewritten in the slim model when no layer rule updates it."""
    weight, bias, eps = last_dim_norm_args(w, node)
    if isinstance(weight, ParamVal):
        module = _norm_params(w, [weight], lst, "norm")
        _norm_params(w, [bias], lst, "stat")
    elif weight is None and bias is None:
        module = _bare_norm_module(w, node)
        w.fix_if_excluded(module, lst)
    else:
        raise Barrier(f"{op_name(node)} with computed weights spans channels")
    w.spanning.append(SpanningNorm(module or "", op_name(node), lst, 1, eps))
    owner = w.modules.get(module) if module else None
    rule = LAYERS.lookup(owner) if owner is not None else None
    if owner is not None and (rule is None or rule.update is None or weight is None) and (
            find_size_attr(owner, [len(lst)]) == "normalized_shape"):
        w.size_attrs.append(SizeAttr(module, "normalized_shape", [lst]))


@op_rule("layer_norm", "rms_norm")
def layer_norm(w: Walker, node: torch.fx.Node) -> Val:
    x = w.arg(node.args[0])
    if not isinstance(x, Val):
        raise Barrier(f"{op_name(node)} of a non-tensor")
    nd = len(node.args[1])
    if not [d for d in varying_dims(x.cls) if d >= len(x.shape) - nd]:
        return Val(x.shape, x.cls)
    if nd != 1:
        raise Barrier(f"{op_name(node)} over several dims spans channels")
    _, lst = _input_channels(w, node, -1, op_name(node))
    record_last_dim_norm(w, node, lst)
    return Val(x.shape, x.cls)


@op_rule("group_norm")
def group_norm(w: Walker, node: torch.fx.Node) -> Val:
    x, lst = _input_channels(w, node, 1, "group norm")
    groups = int(node.args[1])
    weight, bias, eps = _norm_args(w, node)
    if not isinstance(weight, ParamVal):
        raise Barrier("group norm without weights spans channels")
    module = _norm_params(w, [weight], lst, "norm")
    _norm_params(w, [bias], lst, "stat")
    w.b.add_block_constraint(lst, groups, f"GroupNorm {module}")
    w.spanning.append(SpanningNorm(module or "", "group_norm", lst, groups, eps))
    return Val(x.shape, x.cls)


RESPONSE_NORM = ("linalg_vector_norm", "norm")


def response_norm(w: Walker, node: torch.fx.Node, x: Val, dims: list[int], keep: bool) -> bool:
    """Whether this mean over channels is a norm's own statistic, spanning the channels, so
    recorded as a :class:`SpanningNorm` (the sparse model recomputes it over the kept channels;
    the weights are sliced where they multiply the channels):

    - a global response norm (ConvNeXt-V2, timm's ``GlobalResponseNorm``): ``g = x.norm(2,
      spatial); g / (g.mean(channels) + eps)`` in a module with per-channel ``weight`` and
      ``bias`` and an ``eps``;
    - an RMS norm written out (timm's ``RmsNorm2d``: ``x * rsqrt(x.pow(2).mean(1) + eps) *
      weight``) in a module holding only that ``weight`` (or none) and an ``eps``, and as
      children at most the element-wise layers its output then runs through (timm's
      ``RmsNormAct2d``: drop, act; see :func:`_norm_tail`)."""
    src = node.args[0]
    if (op_name(node) != "mean" or not keep or len(dims) != 1 or channel_list(x, dims[0]) is None
            or not isinstance(src, torch.fx.Node)):
        return False
    kind = "grn" if op_name(src) in RESPONSE_NORM else "rms_norm" if (
        op_name(src) == "pow" and len(src.args) > 1 and src.args[1] == 2) else None
    path = module_path(node)
    module = w.modules.get("" if path == "(model)" else path)
    own = dict(module.named_parameters(recurse=False)) if module is not None else {}
    c = x.shape[dims[0]]
    per_channel = all(tuple(p.shape) == (c,) for p in own.values())
    if kind is None or not isinstance(getattr(module, "eps", None), float) or not per_channel:
        return False
    if kind == "grn" and set(own) != {"weight", "bias"}:
        return False
    tail = _norm_tail(w, node, path, module) if kind == "rms_norm" else ()
    if kind == "rms_norm" and (set(own) - {"weight"} or tail is None
                               or dims[0] not in (1, len(x.shape) - 1)):
        return False
    lst = channel_list(x, dims[0])
    w.spanning.append(SpanningNorm(path, kind, lst, 1, module.eps, dim=dims[0], tail=tail))
    w.fix_if_excluded(path, lst)
    return True


def _inside(path: str, node: torch.fx.Node) -> bool:
    p = module_path(node)
    return p == path or p.startswith(path + ".")


def _norm_tail(w: Walker, node: torch.fx.Node, path: str, module: torch.nn.Module
               ) -> tuple[str, ...] | None:
    """The children of a norm module that its output runs through, in order (``()`` for a
    leaf), or None when they are not a plain tail: the sparse model's hook replaces the
    module's output, so it must redo them after the norm over the kept channels. A tail is
    children without weights or buffers whose ops come after all of the module's own ones,
    each taking only the previous op's output and keeping its shape (activation, dropout),
    run in the order the children are registered, the last one giving the module's output."""
    names = [n for n, _ in module.named_children()]
    if not names:
        return ()
    if any(next(c.parameters(), None) is not None or next(c.buffers(), None) is not None
           for c in module.children()):
        return None
    inside = [n for n in node.graph.nodes if n.op == "call_function" and _inside(path, n)]
    own = [i for i, n in enumerate(inside) if module_path(n) == path]
    prev, order = inside[own[-1]], []
    for n in inside[own[-1] + 1:]:
        if module_path(n) == path or n.all_input_nodes != [prev] or w.shape(n) != w.shape(prev):
            return None
        order.append(names.index(module_path(n)[len(path) + 1:].split(".")[0]))
        prev = n
    if len(own) != own[-1] + 1 or order != sorted(order) or any(
            _inside(path, u) for u in prev.users):
        return None
    return tuple(names)


@op_rule("prelu")
def prelu(w: Walker, node: torch.fx.Node) -> Val:
    x, wt = w.arg(node.args[0]), w.arg(node.args[1])
    if not isinstance(x, Val):
        raise Barrier("prelu of a non-tensor")
    if isinstance(wt, ParamVal) and int(np.prod(wt.shape)) > 1:
        _, lst = _input_channels(w, node, 1, "prelu")
        _norm_params(w, [wt], lst, "other")
    return Val(x.shape, x.cls)


@op_rule("embedding")
def embedding(w: Walker, node: torch.fx.Node) -> Val:
    """An embedding table produces its ``embedding_dim`` features (a lookup costs no MACs)."""
    wt = w.arg(node.args[0])
    out_shape = w.shape(node)
    if not isinstance(wt, ParamVal) or out_shape is None or len(wt.shape) != 2:
        raise Barrier("embedding of a computed table")
    module = w.module_of(wt.name)
    out_list = w.b.param_axis(wt.name, 1, wt.shape[1], module)
    w.b.add_slice(ParamSlice(wt.name, 1, out_list, role="out"), module)
    w.fix_if_excluded(module, out_list)
    return Val(out_shape, out_list.reshape([1] * (len(out_shape) - 1) + [-1]))

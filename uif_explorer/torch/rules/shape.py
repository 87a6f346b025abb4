"""Op rules for ATen ops without weights: activations, element-wise, concat, pooling, reshapes.

Structure-preserving ops hand their input's classes on; element-wise ops, concatenation and
reshapes use the framework-neutral rules of :mod:`uif_explorer.core.rules`. An op that would
move channels in a way a narrower model cannot follow raises
:class:`~uif_explorer.core.rules.Barrier` (the walk then fixes the channels reaching it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from uif_explorer.core.channels import ParamSlice, Val, channel_list, varies, varying_dims
from uif_explorer.core.rules import (
    Barrier,
    concat_classes,
    reshape_classes,
    unify_elementwise,
)
from uif_explorer.torch.rules import weighted
from uif_explorer.torch.rules.base import (
    ParamVal,
    ParamView,
    SizeAttr,
    find_scalar_attrs,
    find_size_attr,
    module_path,
    op_name,
    op_rule,
    param_view,
    register_op,
    resampled_view,
    weight_axes,
)

if TYPE_CHECKING:
    from uif_explorer.torch.walk import Walker

CONSTANT = "derived from weights or constants"


def _pass_on(w: Walker, node: torch.fx.Node, x: Val) -> object:
    """The input's classes for every output (ops that may return a tuple, e.g. max with idx)."""
    val = node.meta.get("val")
    if isinstance(val, (list, tuple)):
        return tuple(Val(tuple(t.shape), x.cls) for t in val)
    return Val(tuple(val.shape), x.cls)


def _tensor(w: Walker, node: torch.fx.Node) -> Val:
    x = w.arg(node.args[0]) if node.args else None
    if not isinstance(x, Val):
        raise Barrier("shape op on weights or constants")
    return x


@op_rule("getitem")
def getitem(w: Walker, node: torch.fx.Node) -> object:
    src = w.arg(node.args[0])
    return src[node.args[1]] if isinstance(src, (list, tuple)) else None


# ops that hand a weight on value for value (a dtype cast of a position embedding)
SAME_VALUES = ("to", "_to_copy", "contiguous", "clone", "alias", "detach", "type_as")


def unary(w: Walker, node: torch.fx.Node) -> object:
    x = w.arg(node.args[0]) if node.args else None
    shape = w.shape(node)
    if isinstance(x, Val) and shape == x.shape:
        return Val(shape, x.cls)
    if (isinstance(x, (ParamVal, ParamView)) and shape == tuple(x.shape)
            and op_name(node) in SAME_VALUES):
        return x  # still the weight: a product with it slices the weight itself
    if isinstance(x, (ParamVal, ParamView)) or x is None or shape is None:
        return w.output_fixed(node, CONSTANT)
    raise Barrier("shape-changing element-wise op")


register_op((
    "relu", "relu_", "gelu", "gelu_", "sigmoid", "sigmoid_", "hardsigmoid", "hardsigmoid_",
    "hardswish", "hardswish_", "hardtanh", "hardtanh_", "silu", "silu_", "tanh", "tanh_",
    "dropout", "dropout_", "alias", "contiguous", "clone", "detach", "leaky_relu",
    "leaky_relu_", "elu", "elu_", "selu", "selu_", "celu", "softplus", "mish", "mish_", "neg",
    "abs", "exp", "log", "sqrt", "rsqrt", "clamp", "clamp_", "clamp_min", "clamp_min_",
    "clamp_max", "relu6", "_to_copy", "to", "type_as", "lift_fresh_copy", "feature_dropout",
    "alpha_dropout", "erf", "reciprocal", "square", "pow", "fill_", "zeros_like", "ones_like",
    "bernoulli", "bernoulli_", "empty_like", "rand_like", "randn_like", "full_like", "sign",
    "floor", "ceil", "round", "log_sigmoid",
), unary)


@op_rule("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "maximum", "minimum",
         "where", "masked_fill", "masked_fill_", "rsub", "floor_divide", "lerp", "addcmul",
         "addcdiv")
def elementwise(w: Walker, node: torch.fx.Node) -> object:
    shape = w.shape(node)
    if shape is None:
        return None
    ops = [w.arg(a) for a in node.args[:3]]
    tensors = [v for v in ops if isinstance(v, Val)]
    if not tensors:
        return w.output_fixed(node, CONSTANT)
    out = unify_elementwise(w.b, tensors, shape, module_path(node))
    _weight_operands(w, [v for v in ops if isinstance(v, (ParamVal, ParamView))], out)
    return out


def _weight_operands(w: Walker, params: list[ParamVal | ParamView], out: Val) -> None:
    """A weight broadcast along one channel dim (``x * self.gamma``, also through a view
    such as ``self.gamma.view(1, -1, 1, 1)``) is sliced with it."""
    shape, nd = out.shape, len(out.shape)
    vary = set(varying_dims(out.cls))
    for p in params:
        pad = nd - len(p.shape)
        pshape = (1,) * pad + tuple(p.shape)
        base, axes = weight_axes(p)
        name = base.name
        for d in vary:
            if pshape[d] == shape[d] and shape[d] > 1:
                if len(vary) != 1 or d < pad:
                    raise Barrier("weight broadcast across several channel dims")
                lst = channel_list(out, d)
                module = w.module_of(name)
                axis = axes[d - pad]
                if axis < 0:
                    raise Barrier("weight resampled along the channel dim")
                w.b.add_slice(ParamSlice(name, axis, lst, role="other"), module)
                w.fix_if_excluded(module, lst)


@op_rule("cat", "concat", "concatenate")
def cat(w: Walker, node: torch.fx.Node) -> Val:
    dim = int(node.args[1]) if len(node.args) > 1 else int(node.kwargs.get("dim", 0))
    parts = []
    for item, src in zip(w.arg(node.args[0]), node.args[0], strict=True):
        if isinstance(item, Val):
            parts.append(item)
            continue
        s = w.shape(src) if isinstance(src, torch.fx.Node) else None
        if s is None:
            raise Barrier("concatenation of non-tensors")
        parts.append(w.fixed_val(s, "concatenated weight or constant"))
    return concat_classes(parts, dim, w.shape(node))


@op_rule(
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "max_pool2d_with_indices", "max_pool3d_with_indices", "upsample_nearest1d",
    "upsample_nearest2d", "upsample_nearest3d", "upsample_bilinear2d", "upsample_bicubic2d",
    "upsample_trilinear3d", "upsample_linear1d", "interpolate", "_adaptive_avg_pool2d",
    "_upsample_bicubic2d_aa", "_upsample_bilinear2d_aa",
)
def spatial(w: Walker, node: torch.fx.Node) -> object:
    """Pooling and resizing over dims 2 on: channels pass on; a weight resized so (an NCHW
    position embedding interpolated to the input's grid) stays sliceable along its channels,
    since a per-channel op commutes with dropping channels."""
    x = w.arg(node.args[0])
    val = node.meta.get("val")
    if isinstance(x, (ParamVal, ParamView)) and isinstance(val, torch.Tensor):
        view = resampled_view(x, tuple(val.shape))
        return view if view is not None else w.output_fixed(node, CONSTANT)
    if not isinstance(x, Val):
        return w.output_fixed(node, CONSTANT)
    if any(d >= 2 for d in varying_dims(x.cls)):
        raise Barrier("spatial op over positions that carry channels")
    if not isinstance(val, (list, tuple)):  # max_pool with indices returns a tuple
        out = tuple(val.shape)
        if len(out) != len(x.shape) or out[:2] != x.shape[:2]:
            raise Barrier("spatial op that changes channels")
    return _pass_on(w, node, x)


@op_rule("pad", "constant_pad_nd", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d",
         "replication_pad1d", "replication_pad2d", "replication_pad3d")
def pad(w: Walker, node: torch.fx.Node) -> object:
    """Padding of the dims its list names (pairs from the last dim back): channels pass
    through when no padded dim carries them, whatever the layout (NCHW pads H and W;
    channels-last code such as window attention pads H and W of ``(B, H, W, C)``)."""
    x = w.arg(node.args[0])
    if not isinstance(x, Val):
        return w.output_fixed(node, CONSTANT)
    amounts = list(node.args[1]) if len(node.args) > 1 else list(node.kwargs.get("pad", ()))
    nd = len(x.shape)
    padded = [nd - 1 - i for i in range(len(amounts) // 2)
              if amounts[2 * i] != 0 or amounts[2 * i + 1] != 0]
    if any(varies(x.cls, d) for d in padded):
        raise Barrier("padding along channels")
    idx = tuple(slice(0, 1) if d in padded else slice(None) for d in range(nd))
    return Val(w.shape(node), np.ascontiguousarray(x.cls[idx]))


@op_rule("mean", "sum", "amax", "amin", "max", "min", "logsumexp", *weighted.RESPONSE_NORM)
def reduce(w: Walker, node: torch.fx.Node) -> object:
    """Reductions over dims without channels (a vector norm's dims come after its order)."""
    x = w.arg(node.args[0])
    if not isinstance(x, Val):
        return w.output_fixed(node, CONSTANT)
    first = 2 if op_name(node) in weighted.RESPONSE_NORM else 1
    dims = node.args[first] if len(node.args) > first else node.kwargs.get("dim")
    if isinstance(dims, int):
        dims = [dims]
    keep = (bool(node.args[first + 1]) if len(node.args) > first + 1
            else bool(node.kwargs.get("keepdim")))
    nd = len(x.shape)
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        dims = list(range(nd))
    dims = sorted({int(d) % nd for d in dims})
    if set(dims) & set(varying_dims(x.cls)):
        if weighted.response_norm(w, node, x, dims, keep):
            return w.output_fixed(node, "a mean over channels (a norm's statistic)")
        raise Barrier("reduction across channels")
    cls = x.cls if keep else x.cls.reshape([x.cls.shape[d] for d in range(nd) if d not in dims])
    return _pass_on(w, node, Val(x.shape, cls))


@op_rule("softmax", "log_softmax", "_softmax", "_log_softmax", "cumsum", "sort", "topk")
def spanning(w: Walker, node: torch.fx.Node) -> object:
    x = w.arg(node.args[0])
    if not isinstance(x, Val):
        return w.output_fixed(node, CONSTANT)
    dim = int(node.args[1]) % len(x.shape) if len(node.args) > 1 else len(x.shape) - 1
    if varies(x.cls, dim):
        raise Barrier("softmax/sort across channels")
    return _pass_on(w, node, x)


# -- layout ops ----------------------------------------------------------------------------------
@op_rule("permute")
def permute(w: Walker, node: torch.fx.Node) -> Val | ParamView:
    x = w.arg(node.args[0]) if node.args else None
    if isinstance(x, (ParamVal, ParamView)):  # a weight's layout change: still the weight
        base, axes = weight_axes(x)
        order = [int(d) % len(x.shape) for d in node.args[1]]
        return ParamView(base, w.shape(node), tuple(axes[d] for d in order))
    x = _tensor(w, node)
    return Val(w.shape(node), np.transpose(x.cls, [int(d) % len(x.shape) for d in node.args[1]]))


@op_rule("transpose", "swapaxes", "t")
def transpose(w: Walker, node: torch.fx.Node) -> Val:
    x = _tensor(w, node)
    nd = len(x.shape)
    a, b = (0, 1) if len(node.args) < 3 else (int(node.args[1]) % nd, int(node.args[2]) % nd)
    return Val(w.shape(node), np.swapaxes(x.cls, a, b))


@op_rule("unsqueeze")
def unsqueeze(w: Walker, node: torch.fx.Node) -> Val:
    x, out = _tensor(w, node), w.shape(node)
    return Val(out, np.expand_dims(x.cls, int(node.args[1]) % len(out)))


@op_rule("squeeze")
def squeeze(w: Walker, node: torch.fx.Node) -> Val:
    x = _tensor(w, node)
    nd = len(x.shape)
    if len(node.args) > 1:
        dims = node.args[1]
        dims = [dims] if isinstance(dims, int) else list(dims)
        dims = [int(d) % nd for d in dims if x.shape[int(d) % nd] == 1]
    else:
        dims = [d for d in range(nd) if x.shape[d] == 1]
    return Val(w.shape(node), np.squeeze(x.cls, axis=tuple(dims)) if dims else x.cls)


@op_rule("expand", "expand_as")
def expand(w: Walker, node: torch.fx.Node) -> Val:
    x, out = _tensor(w, node), w.shape(node)
    return Val(out, x.cls.reshape((1,) * (len(out) - len(x.shape)) + x.cls.shape))


LIKE = ("reshape_as", "view_as")  # the target shape is another tensor's


def plain_reshape(w: Walker, node: torch.fx.Node) -> Val | ParamView:
    """Flatten-like merges (row-major); a reshape that splits a channel dim is a barrier. A
    weight viewed with size-1 dims added (``gamma.view(1, -1, 1, 1)``) stays a weight."""
    x = w.arg(node.args[0])
    if isinstance(x, (ParamVal, ParamView)):
        view = param_view(x, w.shape(node))
        if view is None:
            raise Barrier("reshape of a weight")
        return view
    sizes = node.args[1] if len(node.args) > 1 and op_name(node) in (
        "view", "reshape", "_unsafe_view") else None
    return reshape_classes(_tensor(w, node), w.shape(node), sizes)


def like_other(w: Walker, node: torch.fx.Node, out: Val) -> Val:
    """``x.reshape_as(y)`` / ``x.view_as(y)``: a reshape whose sizes are ``y``'s shape, so in
    the slim model each channel dim of the output is as wide as ``y`` is there. Tie the two
    (the same classes), or fix the output's channels where ``y``'s width is a constant."""
    if op_name(node) not in LIKE or not isinstance(out, Val):
        return out
    other = w.arg(node.args[1])
    for d in varying_dims(out.cls):
        lst = channel_list(out, d)
        theirs = channel_list(other, d) if isinstance(other, Val) else None
        if lst is None or theirs is None or not varies(other.cls, d):
            raise Barrier(f"{op_name(node)} to a tensor whose width there is a constant")
        w.b.unify(lst, theirs)
    return out


@op_rule("view", "reshape", "_unsafe_view", "flatten", "unflatten", *LIKE)
def reshape(w: Walker, node: torch.fx.Node) -> Val:
    """:func:`plain_reshape`; for ``reshape_as``/``view_as`` also :func:`like_other`."""
    return like_other(w, node, plain_reshape(w, node))


@op_rule("select")
def select(w: Walker, node: torch.fx.Node) -> Val:
    x = _tensor(w, node)
    d = int(node.args[1]) % len(x.shape)
    if varies(x.cls, d):
        raise Barrier("indexing one channel")
    return Val(w.shape(node), np.take(x.cls, 0, axis=d))


@op_rule("slice", "narrow")
def slice_(w: Walker, node: torch.fx.Node) -> Val:
    x, out = _tensor(w, node), w.shape(node)
    d = int(node.args[1]) % len(x.shape) if len(node.args) > 1 else 0
    if out != x.shape and varies(x.cls, d):
        raise Barrier("slicing channels at fixed positions")
    return Val(out, x.cls)


LITERAL_SIZES = ("split into channel chunks of sizes written as constants in forward (keep "
                 "them in a module attribute, e.g. self.split_sizes, or each in an int "
                 "attribute no other one equals, e.g. self.key_dim, so that they can be "
                 "rewritten for a narrower model)")


@op_rule("split", "chunk", "split_with_sizes", "tensor_split")
def split(w: Walker, node: torch.fx.Node) -> tuple:
    """Splits along channels. Equal splits (chunk) tie chunk i's channel k to chunk 0's
    channel k, so chunks stay equal. Splits with sizes (``torch.split(x, self.sizes, 1)``)
    prune each chunk on its own; the slim model gets the kept sizes in the module attribute
    the sizes were read from (:class:`SizeAttr`), or, for ``[self.key_dim, self.key_dim,
    self.val_dim]``, in each int attribute (chunks read from one attribute stay equal). Sizes
    written as literals in ``forward``, or equal to several attributes, cannot be rewritten:
    those channels are fixed, with that reason."""
    x = _tensor(w, node)
    nd = len(x.shape)
    d = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    d = int(d) % nd
    shapes = [tuple(t.shape) for t in node.meta.get("val")]
    if not varies(x.cls, d):
        return tuple(Val(s, x.cls) for s in shapes)
    sizes = [s[d] for s in shapes]
    full = np.broadcast_to(x.cls, [x.shape[k] if k == d else x.cls.shape[k] for k in range(nd)])
    if op_name(node) == "split_with_sizes":
        return _split_with_sizes(w, node, full, d, sizes, shapes)
    if len(set(sizes)) != 1:
        raise Barrier("split into unequal channel chunks")
    chunks = np.split(full, len(sizes), axis=d)
    for c in chunks[1:]:
        w.b.unify(chunks[0], c)
    return tuple(Val(s, np.ascontiguousarray(c)) for s, c in zip(shapes, chunks, strict=True))


def _split_with_sizes(w: Walker, node: torch.fx.Node, full: np.ndarray, d: int,
                      sizes: list[int], shapes: list[tuple[int, ...]]) -> tuple:
    path = module_path(node)
    path = "" if path == "(model)" else path
    module = w.modules.get(path)
    attr = find_size_attr(module, sizes) if module is not None else None
    scalars = find_scalar_attrs(module, sizes) if module is not None and attr is None else None
    if attr is None and scalars is None:
        raise Barrier(LITERAL_SIZES)
    chunks = np.split(full, np.cumsum(sizes)[:-1], axis=d)
    lists = [channel_list(Val(s, c), d) for s, c in zip(shapes, chunks, strict=True)]
    if any(lst is None for lst in lists):
        raise Barrier("split of channels that depend on position")
    if attr is not None:
        _size_attr(w, SizeAttr(path, attr, lists))
    else:  # one int attribute per chunk: chunks read from the same one keep the same count
        for name, lst in zip(scalars, lists, strict=True):
            _size_attr(w, SizeAttr(path, name, [lst]))
    return tuple(Val(s, np.ascontiguousarray(c)) for s, c in zip(shapes, chunks, strict=True))


def _size_attr(w: Walker, sa: SizeAttr) -> None:
    """Record ``sa``; an attribute read again (by a second split or chunk) holds one count
    for all its readers, so their channels are tied to the first reader's."""
    seen = next((s for s in w.size_attrs if (s.module, s.attr) == (sa.module, sa.attr)), None)
    if seen is None:
        w.size_attrs.append(sa)
        return
    for old, new in zip(seen.parts, sa.parts, strict=True):
        w.b.unify(old, new)


@op_rule("roll")
def roll(w: Walker, node: torch.fx.Node) -> Val:
    x = _tensor(w, node)
    dims = node.args[2] if len(node.args) > 2 else ()
    dims = [dims] if isinstance(dims, int) else list(dims)
    if not dims or any(varies(x.cls, int(d) % len(x.shape)) for d in dims):
        raise Barrier("rolling across channels")
    return Val(x.shape, x.cls)


@op_rule("unbind")
def unbind(w: Walker, node: torch.fx.Node) -> tuple:
    x = _tensor(w, node)
    d = int(node.args[1]) % len(x.shape) if len(node.args) > 1 else 0
    if varies(x.cls, d):
        raise Barrier("unbinding channels")
    cls = np.take(x.cls, 0, axis=d)
    return tuple(Val(tuple(t.shape), cls) for t in node.meta.get("val"))

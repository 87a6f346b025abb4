"""Capture a PyTorch model with ``torch.export`` and describe its channels to the core.

``torch.export.export(..., strict=False)`` runs the model's Python code on the example input
(so control flow that runs for that input is fine) and yields an ATen graph whose weights are
placeholders named by their module path. We walk that graph once, tracking for every tensor an
integer *class array* (broadcastable to the tensor's shape) that says which channel each
position belongs to, and hand unions, slices and MAC ops to
:class:`~uif_explorer.core.channels.ChannelGraphBuilder`.

Unknown parameter-free ops are *barriers*: channels reaching them are excluded from pruning
(with the reason recorded). An unknown op that holds weights and receives prunable channels is
an error naming the module, unless it is excluded or a handler is registered for its type.
"""

from __future__ import annotations

import copy
import difflib
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from uif_explorer.core.channels import (
    FIXED_INPUT,
    FIXED_OUTPUT,
    ChannelGraph,
    ChannelGraphBuilder,
    MacOp,
    ParamSlice,
    Val,
    channel_list,
    compress,
    varies,
    varying_dims,
)
from uif_explorer.torch.macs import as_tuple, count_macs_by_module


class CaptureError(RuntimeError):
    """The model could not be captured as a graph."""


class UnsupportedLayerError(RuntimeError):
    """A layer with weights receives prunable channels and no rule says how to prune it."""


@dataclass(frozen=True)
class ParamVal:
    """A graph value that is a weight or buffer of the model itself."""

    name: str
    shape: tuple[int, ...]


@dataclass
class SpanningNorm:
    """A norm whose statistics span channels: the sparse model must normalise kept ones only."""

    module: str
    kind: str  # "layer_norm" (over the last dim) or "group_norm"
    classes: np.ndarray
    num_groups: int = 1
    eps: float = 1e-5


@dataclass
class LayerRule:
    """How a custom layer type's weights follow channels (registered with `register_layer`).

    ``out_dims`` / ``in_dims`` map a parameter name of the layer to the axis that holds its
    output / input channels; ``channel_dim`` is the channel axis of its input and output
    tensors (1 for NCHW, -1 for channels-last); ``update`` fixes the module's size attributes
    after slicing (``update(module, in_channels, out_channels)``).
    """

    out_dims: dict[str, int]
    in_dims: dict[str, int]
    channel_dim: int = 1
    update: Callable[[nn.Module, int, int], None] | None = None


_LAYER_RULES: dict[type, LayerRule] = {}


def register_layer(
    layer_type: type,
    *,
    out_dims: dict[str, int],
    in_dims: dict[str, int],
    channel_dim: int = 1,
    update: Callable[[nn.Module, int, int], None] | None = None,
) -> None:
    """Teach the pruner a custom layer type in one call, without editing the package.

    Example: ``register_layer(MyConv, out_dims={"weight": 0, "bias": 0}, in_dims={"weight": 1},
    update=lambda m, cin, cout: setattr(m, "out_channels", cout))``. The layer is then treated
    as a producer: its outputs get channels of their own, its inputs follow its producers.
    """
    _LAYER_RULES[layer_type] = LayerRule(dict(out_dims), dict(in_dims), channel_dim, update)


def unregister_layer(layer_type: type) -> None:
    _LAYER_RULES.pop(layer_type, None)


@dataclass
class Capture:
    """A captured model: the core's channel graph plus torch-side facts for applying plans."""

    graph: ChannelGraph
    spanning_norms: list[SpanningNorm]
    depthwise_modules: set[str]
    custom_modules: dict[str, LayerRule]
    excluded_modules: list[str] = field(default_factory=list)


_PASS_UNARY = {
    "relu", "relu_", "gelu", "gelu_", "sigmoid", "sigmoid_", "hardsigmoid", "hardsigmoid_",
    "hardswish", "hardswish_", "hardtanh", "hardtanh_", "silu", "silu_", "tanh", "tanh_",
    "dropout", "dropout_", "alias", "contiguous", "clone", "detach", "leaky_relu",
    "leaky_relu_", "elu", "elu_", "selu", "selu_", "celu", "softplus", "mish", "mish_", "neg",
    "abs", "exp", "log", "sqrt", "rsqrt", "clamp", "clamp_", "clamp_min", "clamp_min_",
    "clamp_max", "relu6", "_to_copy", "to", "type_as", "lift_fresh_copy", "feature_dropout",
    "alpha_dropout", "erf", "reciprocal", "square", "pow", "fill_", "zeros_like", "ones_like",
    "bernoulli", "bernoulli_", "empty_like", "rand_like", "randn_like", "full_like", "sign",
    "floor", "ceil", "round", "log_sigmoid", "glu_never",
}
_ELEMENTWISE = {
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "maximum", "minimum",
    "where", "masked_fill", "masked_fill_", "rsub", "floor_divide", "lerp",
}
_SPATIAL = {
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "max_pool2d_with_indices", "max_pool3d_with_indices", "upsample_nearest1d",
    "upsample_nearest2d", "upsample_nearest3d", "upsample_bilinear2d", "upsample_bicubic2d",
    "upsample_trilinear3d", "upsample_linear1d", "interpolate", "pad", "constant_pad_nd",
    "reflection_pad2d", "replication_pad2d", "reflection_pad1d", "replication_pad1d",
    "_adaptive_avg_pool2d", "pixel_shuffle_never",
}
_REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "logsumexp"}
_SPANNING = {"softmax", "log_softmax", "_softmax", "_log_softmax", "cumsum", "sort", "topk"}
_CONV = {"conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d",
         "conv_transpose2d", "conv_transpose3d"}


def _op_name(node: torch.fx.Node) -> str:
    target = node.target
    if target is operator.getitem:
        return "getitem"
    packet = getattr(target, "overloadpacket", None)
    if packet is not None:
        return packet.__name__
    return getattr(target, "__name__", str(target))


def _module_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return "(model)"
    fqn = list(stack.values())[-1][0]
    return fqn or "(model)"


class _Walker:
    def __init__(
        self,
        model: nn.Module,
        ep: torch.export.ExportedProgram,
        excluded: set[str],
    ) -> None:
        self.model = model
        self.ep = ep
        self.b = ChannelGraphBuilder()
        self.vals: dict[torch.fx.Node, object] = {}
        self.excluded = excluded
        self.spanning: list[SpanningNorm] = []
        self.depthwise: set[str] = set()
        self.custom: dict[str, LayerRule] = {}
        self.unknown_with_weights: list[tuple[str, str, np.ndarray]] = []
        self.float_state = {n: t.is_floating_point() for n, t in
                            [*model.named_parameters(), *model.named_buffers()]}
        self.digest: list[str] = []
        sig = ep.graph_signature
        self.param_names = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
        self.user_inputs = set(sig.user_inputs)
        self.modules = dict(model.named_modules())
        self.custom_roots = self._custom_module_names()
        self.module_macs: dict[str, int] = {}
        self.custom_macs: set[str] = set()

    # -- helpers -------------------------------------------------------------------------
    def _custom_module_names(self) -> dict[str, LayerRule]:
        found = {}
        for name, mod in self.modules.items():
            for typ, rule in _LAYER_RULES.items():
                if isinstance(mod, typ) and not any(
                    name.startswith(p + ".") for p in found
                ):
                    found[name] = rule
        return found

    def shape(self, node: torch.fx.Node) -> tuple[int, ...] | None:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            return tuple(int(s) for s in val.shape)
        return None

    def fixed_val(self, shape: tuple[int, ...], reason: str) -> Val:
        cid = self.b.fresh_fixed(1, reason)[0]
        return Val(shape, np.full([1] * len(shape), cid, dtype=np.int64))

    def arg(self, x: object) -> object:
        if isinstance(x, torch.fx.Node):
            return self.vals.get(x)
        if isinstance(x, (list, tuple)):
            return type(x)(self.arg(i) for i in x)
        return x

    def barrier(self, node: torch.fx.Node, reason: str) -> object:
        """Fix every channel reaching this op; its outputs carry fixed channels."""
        where = f"{reason} ({_op_name(node)} in {_module_path(node)})"
        for v in _flat_vals(self.arg(list(node.args)) + [self.arg(list(node.kwargs.values()))]):
            if isinstance(v, Val):
                self.b.fix(v.cls, where)
        return self.output_fixed(node, where)

    def output_fixed(self, node: torch.fx.Node, reason: str) -> object:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            return self.fixed_val(tuple(val.shape), reason)
        if isinstance(val, (list, tuple)):
            return tuple(
                self.fixed_val(tuple(t.shape), reason) if isinstance(t, torch.Tensor) else None
                for t in val
            )
        return None

    def module_of(self, param: str) -> str:
        return param.rsplit(".", 1)[0] if "." in param else ""

    # -- walk ----------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.ep.graph.nodes:
            self.digest.append(self._digest_item(node))
            if node.op == "placeholder":
                self.vals[node] = self._placeholder(node)
            elif node.op == "call_function":
                custom = self._custom_owner(node)
                if custom is not None:
                    self.vals[node] = self._custom_node(node, custom)
                else:
                    self.vals[node] = self._call(node)
            elif node.op == "output":
                for v in _flat_vals(self.arg(list(node.args))):
                    if isinstance(v, Val):
                        self.b.fix(v.cls, FIXED_OUTPUT)
            else:
                self.vals[node] = self.output_fixed(node, f"unsupported node {node.op}")

    def _digest_item(self, node: torch.fx.Node) -> str:
        shape = self.shape(node)
        args = [a.name if isinstance(a, torch.fx.Node) else repr(a) for a in node.args]
        target = self.param_names.get(node.name, "") if node.op == "placeholder" else ""
        return f"{node.op}|{_op_name(node) if node.op == 'call_function' else target}|" \
               f"{shape}|{','.join(args)}"

    def _placeholder(self, node: torch.fx.Node) -> object:
        if node.name in self.param_names:
            shape = self.shape(node)
            return ParamVal(self.param_names[node.name], shape or ())
        shape = self.shape(node)
        if shape is None:
            return None
        return self.fixed_val(shape, FIXED_INPUT)

    def _call(self, node: torch.fx.Node) -> object:
        name = _op_name(node)
        try:
            if name == "getitem":
                src = self.arg(node.args[0])
                return src[node.args[1]] if isinstance(src, (list, tuple)) else None
            if name in _CONV:
                return self._conv(node, name)
            if name == "linear":
                return self._linear(node)
            if name in ("batch_norm", "_native_batch_norm_legit_no_training",
                        "_native_batch_norm_legit", "native_batch_norm", "instance_norm"):
                return self._batch_norm(node)
            if name == "layer_norm":
                return self._layer_norm(node)
            if name == "group_norm":
                return self._group_norm(node)
            if name == "prelu":
                return self._prelu(node)
            if name in _PASS_UNARY:
                return self._unary(node)
            if name in _ELEMENTWISE:
                return self._elementwise(node)
            if name == "cat" or name == "concat" or name == "concatenate":
                return self._cat(node)
            if name in _SPATIAL:
                return self._spatial(node)
            if name in _REDUCE:
                return self._reduce(node)
            if name in _SPANNING:
                return self._spanning(node)
            handler = _SHAPE_OPS.get(name)
            if handler is not None:
                return handler(self, node)
        except _Barrier as exc:
            return self.barrier(node, str(exc))
        return self._unknown(node, name)

    def _unknown(self, node: torch.fx.Node, name: str) -> object:
        # Integer buffers (index tables such as Swin V2's relative_position_index) are not
        # weights: an op reading them does not need a pruning rule.
        weights = [a for a in _flat_vals(self.arg(list(node.args)))
                   if isinstance(a, ParamVal) and self.float_state.get(a.name, True)]
        if weights:
            tensors = [a for a in _flat_vals(self.arg(list(node.args))) if isinstance(a, Val)]
            for t in tensors:
                self.unknown_with_weights.append((name, _module_path(node), t.cls.ravel()))
        return self.barrier(node, f"no pruning rule for op '{name}'")

    # -- custom layers -------------------------------------------------------------------
    def _custom_owner(self, node: torch.fx.Node) -> str | None:
        if not self.custom_roots:
            return None
        stack = node.meta.get("nn_module_stack") or {}
        for fqn, _typ in stack.values():
            if fqn in self.custom_roots:
                return fqn
        return None

    def _custom_node(self, node: torch.fx.Node, owner: str) -> object:
        """Nodes inside a registered custom layer: inputs feed its in-axes, outputs are new."""
        rule = self.custom_roots[owner]
        module = self.modules[owner]
        params = dict(module.named_parameters(recurse=False))
        first = owner not in self.custom
        self.custom[owner] = rule
        pname, dim = next(iter(rule.out_dims.items()))
        size = params[pname].shape[dim]
        out = self.b.param_axis(f"{owner}.{pname}", dim, size, owner)
        if first:
            for pn, d in rule.out_dims.items():
                self.b.add_slice(ParamSlice(f"{owner}.{pn}", d, out, role="out"), owner)
        for a in _flat_vals(self.arg(list(node.args))):
            if not isinstance(a, Val) or self._inside(a, owner):
                continue
            lst = channel_list(a, rule.channel_dim)
            for pn, d in rule.in_dims.items():
                n_in = params[pn].shape[d]
                if lst is None or len(lst) != n_in:
                    self.b.fix(a.cls, f"input of custom layer {owner} does not match it")
                    continue
                self.b.unify(self.b.param_axis(f"{owner}.{pn}", d, n_in, None), lst)
                self.b.add_slice(ParamSlice(f"{owner}.{pn}", d, lst, role="in"), owner)
                if owner not in self.custom_macs:
                    self.custom_macs.add(owner)
                    macs = self.module_macs.get(owner, 0)
                    self.b.mac_ops.append(MacOp(owner, macs, lst, out))
        shape = self.shape(node)
        if shape is None:
            return None
        cdim = rule.channel_dim % len(shape)
        if shape[cdim] == size:
            v = Val(shape, out.reshape([size if k == cdim else 1 for k in range(len(shape))]))
        else:
            v = self.fixed_val(shape, f"inside custom layer {owner}")
        v.owner = owner  # type: ignore[attr-defined]
        return v

    @staticmethod
    def _inside(v: Val, owner: str) -> bool:
        return getattr(v, "owner", None) == owner

    # -- weighted ops --------------------------------------------------------------------
    def _conv(self, node: torch.fx.Node, name: str) -> object:
        args = list(node.args)
        x, w = self.arg(args[0]), self.arg(args[1])
        bias = self.arg(args[2]) if len(args) > 2 else None
        if name in ("convolution", "_convolution"):
            transposed = bool(args[6])
            groups = int(args[8])
        elif name.startswith("conv_transpose"):
            transposed = True
            groups = int(args[6]) if len(args) > 6 else int(node.kwargs.get("groups", 1))
        else:
            transposed = False
            groups = int(args[6]) if len(args) > 6 else int(node.kwargs.get("groups", 1))
        if not isinstance(x, Val) or not isinstance(w, ParamVal):
            raise _Barrier("convolution with computed weights")
        out_shape = self.shape(node)
        in_list = channel_list(x, 1)
        if in_list is None:
            raise _Barrier("convolution input channels depend on position")
        module = self.module_of(w.name)
        wshape = w.shape
        c_in = x.shape[1]
        if transposed:
            c_out = wshape[1] * groups
        else:
            c_out = wshape[0]
        kernel = int(np.prod(wshape[2:])) if len(wshape) > 2 else 1
        depthwise = groups > 1 and groups == c_in
        if depthwise:
            mult = c_out // c_in
            out_list = np.repeat(in_list, mult)
            # no producer space: a depthwise conv follows (it must not link concat inputs)
            w_axis = self.b.param_axis(w.name, 0, wshape[0], None)
            if transposed:
                # weight [C_in, mult, k]: dim 0 follows the input channels
                self.b.unify(w_axis, in_list)
                out_list = np.repeat(in_list, mult)
                self.b.add_slice(ParamSlice(w.name, 0, in_list, role="dw"), module)
            else:
                self.b.unify(w_axis, out_list)
                self.b.add_slice(ParamSlice(w.name, 0, out_list, role="dw"), module)
            self.depthwise.add(module)
        elif transposed:
            if groups > 1:
                raise _Barrier("grouped transposed convolution")
            out_list = self.b.param_axis(w.name, 1, c_out, module)
            self.b.unify(self.b.param_axis(w.name, 0, c_in, None), in_list)
            self.b.add_slice(ParamSlice(w.name, 1, out_list, role="out"), module)
            self.b.add_slice(ParamSlice(w.name, 0, in_list, role="in"), module)
        else:
            out_list = self.b.param_axis(w.name, 0, c_out, module)
            self.b.add_slice(ParamSlice(w.name, 0, out_list, role="out"), module)
            if groups > 1:
                self.b.add_slice(ParamSlice(w.name, 1, in_list, blocks=groups, role="in"), module)
                self.b.add_block_constraint(in_list, groups, f"grouped conv {module}")
                self.b.add_block_constraint(out_list, groups, f"grouped conv {module}")
            else:
                self.b.unify(self.b.param_axis(w.name, 1, c_in, None), in_list)
                self.b.add_slice(ParamSlice(w.name, 1, in_list, role="in"), module)
        if isinstance(bias, ParamVal):
            self.b.add_slice(ParamSlice(bias.name, 0, out_list, role="bias"), module)
        if module in self.excluded or any(module.startswith(e + ".") for e in self.excluded):
            self.b.fix(in_list, f"excluded module {module}")
            self.b.fix(out_list, f"excluded module {module}")
        # MACs: N * out_spatial * C_out * C_in/groups * k (conv); transposed uses in_spatial.
        spatial = int(np.prod(x.shape[2:])) if transposed else int(np.prod(out_shape[2:]))
        full = x.shape[0] * spatial * c_in * (c_out // groups) * kernel
        self.b.mac_ops.append(
            MacOp(module, full, in_list, out_list, groups=1 if depthwise else groups,
                  depthwise=depthwise)
        )
        cls = out_list.reshape([1, -1] + [1] * (len(out_shape) - 2))
        return Val(out_shape, cls)

    def _linear(self, node: torch.fx.Node) -> object:
        x, w = self.arg(node.args[0]), self.arg(node.args[1])
        bias = self.arg(node.args[2]) if len(node.args) > 2 else None
        if not isinstance(x, Val) or not isinstance(w, ParamVal):
            raise _Barrier("linear with computed weights")
        in_list = channel_list(x, -1)
        if in_list is None:
            raise _Barrier("linear input features depend on position")
        module = self.module_of(w.name)
        out_list = self.b.param_axis(w.name, 0, w.shape[0], module)
        self.b.add_slice(ParamSlice(w.name, 0, out_list, role="out"), module)
        self.b.add_slice(ParamSlice(w.name, 1, in_list, role="in"), module)
        self.b.unify(self.b.param_axis(w.name, 1, w.shape[1], None), in_list)
        if isinstance(bias, ParamVal):
            self.b.add_slice(ParamSlice(bias.name, 0, out_list, role="bias"), module)
        if module in self.excluded or any(module.startswith(e + ".") for e in self.excluded):
            self.b.fix(in_list, f"excluded module {module}")
            self.b.fix(out_list, f"excluded module {module}")
        out_shape = self.shape(node)
        rows = int(np.prod(out_shape[:-1])) if len(out_shape) > 1 else 1
        self.b.mac_ops.append(MacOp(module, rows * w.shape[0] * w.shape[1], in_list, out_list))
        return Val(out_shape, out_list.reshape([1] * (len(out_shape) - 1) + [-1]))

    def _norm_params(self, node: torch.fx.Node, params: Iterable[object], lst: np.ndarray,
                     role: str) -> str | None:
        module = None
        for p in params:
            if isinstance(p, ParamVal):
                module = self.module_of(p.name)
                self.b.add_slice(ParamSlice(p.name, 0, lst, role=role), module)
        if module and (module in self.excluded
                       or any(module.startswith(e + ".") for e in self.excluded)):
            self.b.fix(lst, f"excluded module {module}")
        return module

    def _batch_norm(self, node: torch.fx.Node) -> object:
        x = self.arg(node.args[0])
        if not isinstance(x, Val):
            raise _Barrier("batch norm of a non-tensor")
        lst = channel_list(x, 1)
        if lst is None:
            raise _Barrier("batch norm input channels depend on position")
        weight, bias = self.arg(node.args[1]), self.arg(node.args[2])
        stats = [self.arg(node.args[3]), self.arg(node.args[4])]
        self._norm_params(node, [weight], lst, "norm")
        self._norm_params(node, [bias] + stats, lst, "stat")
        val = node.meta.get("val")
        if isinstance(val, (list, tuple)):
            return tuple(
                Val(tuple(t.shape), x.cls) if i == 0 else self.fixed_val(tuple(t.shape), "bn")
                for i, t in enumerate(val)
            )
        return Val(x.shape, x.cls)

    def _layer_norm(self, node: torch.fx.Node) -> object:
        x = self.arg(node.args[0])
        norm_shape = list(node.args[1])
        weight = self.arg(node.args[2]) if len(node.args) > 2 else None
        bias = self.arg(node.args[3]) if len(node.args) > 3 else None
        eps = float(node.args[4]) if len(node.args) > 4 else 1e-5
        if not isinstance(x, Val):
            raise _Barrier("layer norm of a non-tensor")
        nd = len(norm_shape)
        varying = varying_dims(x.cls)
        inner = [d for d in varying if d >= len(x.shape) - nd]
        if not inner:
            return Val(x.shape, x.cls)
        if nd != 1 or not isinstance(weight, ParamVal):
            raise _Barrier("layer norm over several dims (or without weights) spans channels")
        lst = channel_list(x, -1)
        if lst is None:
            raise _Barrier("layer norm input channels depend on position")
        module = self._norm_params(node, [weight], lst, "norm")
        self._norm_params(node, [bias], lst, "stat")
        self.spanning.append(SpanningNorm(module or "", "layer_norm", lst, 1, eps))
        return Val(x.shape, x.cls)

    def _group_norm(self, node: torch.fx.Node) -> object:
        x = self.arg(node.args[0])
        groups = int(node.args[1])
        weight = self.arg(node.args[2]) if len(node.args) > 2 else None
        bias = self.arg(node.args[3]) if len(node.args) > 3 else None
        eps = float(node.args[4]) if len(node.args) > 4 else 1e-5
        if not isinstance(x, Val):
            raise _Barrier("group norm of a non-tensor")
        lst = channel_list(x, 1)
        if lst is None:
            raise _Barrier("group norm input channels depend on position")
        if not isinstance(weight, ParamVal):
            raise _Barrier("group norm without weights spans channels")
        module = self._norm_params(node, [weight], lst, "norm")
        self._norm_params(node, [bias], lst, "stat")
        self.b.add_block_constraint(lst, groups, f"GroupNorm {module}")
        self.spanning.append(SpanningNorm(module or "", "group_norm", lst, groups, eps))
        return Val(x.shape, x.cls)

    def _prelu(self, node: torch.fx.Node) -> object:
        x, w = self.arg(node.args[0]), self.arg(node.args[1])
        if not isinstance(x, Val):
            raise _Barrier("prelu of a non-tensor")
        if isinstance(w, ParamVal) and int(np.prod(w.shape)) > 1:
            lst = channel_list(x, 1)
            if lst is None:
                raise _Barrier("prelu input channels depend on position")
            self._norm_params(node, [w], lst, "other")
        return Val(x.shape, x.cls)

    # -- structure-preserving ops --------------------------------------------------------
    def _unary(self, node: torch.fx.Node) -> object:
        x = self.arg(node.args[0]) if node.args else None
        shape = self.shape(node)
        if isinstance(x, Val) and shape == x.shape:
            return Val(shape, x.cls)
        if isinstance(x, ParamVal) or x is None or shape is None:
            return self.output_fixed(node, "derived from weights or constants")
        raise _Barrier("shape-changing element-wise op")

    def _elementwise(self, node: torch.fx.Node) -> object:
        shape = self.shape(node)
        if shape is None:
            return None
        ops = [self.arg(a) for a in node.args[:3]]
        tensors = [v for v in ops if isinstance(v, Val)]
        params = [v for v in ops if isinstance(v, ParamVal)]
        nd = len(shape)

        def expand(v: Val) -> Val:
            pad = nd - len(v.shape)
            return Val((1,) * pad + v.shape, v.cls.reshape((1,) * pad + v.cls.shape))

        tensors = [expand(v) for v in tensors]
        full = [v for v in tensors if v.shape == shape]
        if not full:
            if not tensors:
                return self.output_fixed(node, "derived from weights or constants")
            for v in tensors:
                self.b.fix(v.cls, f"broadcast element-wise op in {_module_path(node)}")
            return self.fixed_val(shape, "broadcast element-wise op")
        ref = full[0]
        for v in full[1:]:
            self.b.unify(ref.cls, v.cls)
        ref_vary = set(varying_dims(ref.cls))
        for v in tensors:
            if any(v is f for f in full):
                continue
            bdims = {d for d in range(nd) if v.shape[d] == 1 and shape[d] > 1}
            if bdims & ref_vary:
                self.b.fix(v.cls, f"broadcast against channels in {_module_path(node)}")
            else:
                self.b.unify(ref.cls, v.cls)
        for p in params:
            pshape = (1,) * (nd - len(p.shape)) + tuple(p.shape)
            pad = nd - len(p.shape)
            for d in ref_vary:
                if pshape[d] == shape[d] and shape[d] > 1:
                    if len(ref_vary) != 1 or d < pad:
                        raise _Barrier("weight broadcast across several channel dims")
                    lst = channel_list(ref, d)
                    module = self.module_of(p.name)
                    self.b.add_slice(ParamSlice(p.name, d - pad, lst, role="other"), module)
                    if module in self.excluded:
                        self.b.fix(lst, f"excluded module {module}")
        return Val(shape, ref.cls)

    def _cat(self, node: torch.fx.Node) -> object:
        items = self.arg(node.args[0])
        dim = int(node.args[1]) if len(node.args) > 1 else int(node.kwargs.get("dim", 0))
        shape = self.shape(node)
        nd = len(shape)
        dim %= nd
        parts = []
        for item, src in zip(items, node.args[0], strict=True):
            if isinstance(item, Val):
                parts.append(item)
            else:
                s = self.shape(src) if isinstance(src, torch.fx.Node) else None
                if s is None:
                    raise _Barrier("concatenation of non-tensors")
                parts.append(self.fixed_val(s, "concatenated weight or constant"))
        target = [max(p.cls.shape[d] for p in parts) if d != dim else None for d in range(nd)]
        cls_parts = []
        for p in parts:
            tshape = [p.shape[dim] if d == dim else target[d] for d in range(nd)]
            cls_parts.append(np.broadcast_to(p.cls, tshape))
        return Val(shape, compress(np.concatenate(cls_parts, axis=dim)))

    def _spatial(self, node: torch.fx.Node) -> object:
        x = self.arg(node.args[0])
        if not isinstance(x, Val):
            return self.output_fixed(node, "derived from weights or constants")
        val = node.meta.get("val")
        vary = varying_dims(x.cls)
        if any(d >= 2 for d in vary):
            raise _Barrier("spatial op over positions that carry channels")
        if isinstance(val, (list, tuple)):  # max_pool with indices
            return tuple(Val(tuple(t.shape), x.cls) for t in val)
        out = tuple(val.shape)
        if len(out) != len(x.shape) or out[:2] != x.shape[:2]:
            raise _Barrier("spatial op that changes channels")
        return Val(out, x.cls)

    def _reduce(self, node: torch.fx.Node) -> object:
        x = self.arg(node.args[0])
        val = node.meta.get("val")
        if not isinstance(x, Val):
            return self.output_fixed(node, "derived from weights or constants")
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if isinstance(dims, int):
            dims = [dims]
        keep = bool(node.args[2]) if len(node.args) > 2 else bool(node.kwargs.get("keepdim"))
        nd = len(x.shape)
        if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
            dims = list(range(nd))
        dims = sorted({int(d) % nd for d in dims})
        if set(dims) & set(varying_dims(x.cls)):
            raise _Barrier("reduction across channels")
        cls = x.cls
        if not keep:
            cls = cls.reshape([cls.shape[d] for d in range(nd) if d not in dims])
        if isinstance(val, (list, tuple)):
            return tuple(Val(tuple(t.shape), cls) for t in val)
        return Val(tuple(val.shape), cls)

    def _spanning(self, node: torch.fx.Node) -> object:
        x = self.arg(node.args[0])
        if not isinstance(x, Val):
            return self.output_fixed(node, "derived from weights or constants")
        dim = int(node.args[1]) % len(x.shape) if len(node.args) > 1 else len(x.shape) - 1
        if varies(x.cls, dim):
            raise _Barrier("softmax/sort across channels")
        val = node.meta.get("val")
        if isinstance(val, (list, tuple)):
            return tuple(Val(tuple(t.shape), x.cls) for t in val)
        return Val(x.shape, x.cls)


class _Barrier(Exception):
    """Raised by a handler that cannot follow channels through an op."""


def _flat_vals(x: object) -> list:
    if isinstance(x, (list, tuple)):
        out = []
        for i in x:
            out.extend(_flat_vals(i))
        return out
    return [x]


# -- shape ops ---------------------------------------------------------------------------
def _tensor_arg(w: _Walker, node: torch.fx.Node) -> Val:
    x = w.arg(node.args[0])
    if not isinstance(x, Val):
        raise _Barrier("shape op on weights or constants")
    return x


def _permute(w: _Walker, node: torch.fx.Node) -> Val:
    x = _tensor_arg(w, node)
    dims = [int(d) % len(x.shape) for d in node.args[1]]
    return Val(w.shape(node), np.transpose(x.cls, dims))


def _transpose(w: _Walker, node: torch.fx.Node) -> Val:
    x = _tensor_arg(w, node)
    nd = len(x.shape)
    if len(node.args) < 3:  # aten.t
        a, b = 0, 1
    else:
        a, b = int(node.args[1]) % nd, int(node.args[2]) % nd
    return Val(w.shape(node), np.swapaxes(x.cls, a, b))


def _unsqueeze(w: _Walker, node: torch.fx.Node) -> Val:
    x = _tensor_arg(w, node)
    out = w.shape(node)
    d = int(node.args[1]) % len(out)
    return Val(out, np.expand_dims(x.cls, d))


def _squeeze(w: _Walker, node: torch.fx.Node) -> Val:
    x = _tensor_arg(w, node)
    out = w.shape(node)
    nd = len(x.shape)
    if len(node.args) > 1:
        dims = node.args[1]
        dims = [dims] if isinstance(dims, int) else list(dims)
        dims = [int(d) % nd for d in dims if x.shape[int(d) % nd] == 1]
    else:
        dims = [d for d in range(nd) if x.shape[d] == 1]
    return Val(out, np.squeeze(x.cls, axis=tuple(dims)) if dims else x.cls)


def _expand(w: _Walker, node: torch.fx.Node) -> Val:
    x = _tensor_arg(w, node)
    out = w.shape(node)
    pad = len(out) - len(x.shape)
    return Val(out, x.cls.reshape((1,) * pad + x.cls.shape))


def _reshape(w: _Walker, node: torch.fx.Node) -> Val:
    """Follow flatten-like reshapes; a reshape that splits a channel dim is a barrier."""
    x = _tensor_arg(w, node)
    out = w.shape(node)
    vary = varying_dims(x.cls)
    if not vary:
        return Val(out, np.full([1] * len(out), x.cls.ravel()[0], dtype=np.int64))
    groups = _reshape_groups(x.shape, out)
    if groups is None:
        raise _Barrier("reshape that regroups channels")
    name = _op_name(node)
    size_args = node.args[1] if len(node.args) > 1 and name in ("view", "reshape",
                                                                 "_unsafe_view") else None
    pieces = []
    for in_dims, out_dims in groups:
        gv = [d for d in in_dims if d in vary]
        if not gv:
            pieces.append(("const", in_dims, out_dims))
            continue
        if len(out_dims) != 1 or len(gv) != 1:
            raise _Barrier("reshape that splits or mixes channel dims (e.g. channel shuffle)")
        if size_args is not None and len(in_dims) > 1:
            lit = size_args[out_dims[0]]
            if not (isinstance(lit, int) and lit == -1):
                raise _Barrier("reshape with a hard-coded size over channels")
        pieces.append(("merge", in_dims, out_dims))
    # Merge groups keep row-major order, so reshaping the materialised classes is exact.
    full_in = np.broadcast_to(x.cls, x.shape)
    idx = []
    new_shape = []
    for kind, in_dims, out_dims in pieces:
        idx.extend(slice(0, 1) if kind == "const" else slice(None) for _ in in_dims)
        if kind == "const":
            new_shape.extend([1] * len(out_dims))
        else:
            new_shape.append(int(np.prod([x.shape[d] for d in in_dims])))
    cls_new = np.ascontiguousarray(full_in[tuple(idx)]).reshape(new_shape)
    return Val(out, cls_new)


def _reshape_groups(a: Sequence[int], b: Sequence[int]):
    """Pair up dims of two shapes with equal products (None if sizes do not line up)."""
    i = j = 0
    groups = []
    while i < len(a) or j < len(b):
        gi, gj = [], []
        pa = pb = 1
        if i < len(a):
            gi.append(i)
            pa = a[i]
            i += 1
        if j < len(b):
            gj.append(j)
            pb = b[j]
            j += 1
        while pa != pb:
            if pa < pb:
                if i >= len(a):
                    return None
                gi.append(i)
                pa *= a[i]
                i += 1
            else:
                if j >= len(b):
                    return None
                gj.append(j)
                pb *= b[j]
                j += 1
        # absorb trailing size-1 dims
        groups.append((gi, gj))
    return groups


def _flatten(w: _Walker, node: torch.fx.Node) -> Val:
    return _reshape(w, node)


def _select(w: _Walker, node: torch.fx.Node) -> Val:
    x = _tensor_arg(w, node)
    d = int(node.args[1]) % len(x.shape)
    if varies(x.cls, d):
        raise _Barrier("indexing one channel")
    cls = np.take(x.cls, 0, axis=d) if x.cls.shape[d] == 1 else np.take(x.cls, 0, axis=d)
    return Val(w.shape(node), cls)


def _slice(w: _Walker, node: torch.fx.Node) -> Val:
    x = _tensor_arg(w, node)
    nd = len(x.shape)
    d = int(node.args[1]) % nd if len(node.args) > 1 else 0
    out = w.shape(node)
    if out == x.shape:
        return Val(out, x.cls)
    if varies(x.cls, d):
        raise _Barrier("slicing channels at fixed positions")
    return Val(out, x.cls)


def _split(w: _Walker, node: torch.fx.Node) -> tuple:
    """Equal splits (chunk) along channels: tie chunk i's channel k to chunk 0's channel k."""
    x = _tensor_arg(w, node)
    val = node.meta.get("val")
    nd = len(x.shape)
    name = _op_name(node)
    d = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    d = int(d) % nd
    shapes = [tuple(t.shape) for t in val]
    if not varies(x.cls, d):
        return tuple(Val(s, x.cls) for s in shapes)
    sizes = [s[d] for s in shapes]
    if len(set(sizes)) != 1 or name == "split_with_sizes":
        raise _Barrier("split into unequal channel chunks")
    full = np.broadcast_to(x.cls, [x.shape[k] if k == d else x.cls.shape[k] for k in range(nd)])
    chunks = np.split(full, len(sizes), axis=d)
    for c in chunks[1:]:
        w.b.unify(chunks[0], c)
    return tuple(Val(s, np.ascontiguousarray(c)) for s, c in zip(shapes, chunks, strict=True))


def _roll(w: _Walker, node: torch.fx.Node) -> Val:
    x = _tensor_arg(w, node)
    dims = node.args[2] if len(node.args) > 2 else ()
    dims = [dims] if isinstance(dims, int) else list(dims)
    if not dims or any(varies(x.cls, int(d) % len(x.shape)) for d in dims):
        raise _Barrier("rolling across channels")
    return Val(x.shape, x.cls)


def _unbind(w: _Walker, node: torch.fx.Node) -> tuple:
    x = _tensor_arg(w, node)
    d = int(node.args[1]) % len(x.shape) if len(node.args) > 1 else 0
    if varies(x.cls, d):
        raise _Barrier("unbinding channels")
    val = node.meta.get("val")
    cls = np.take(x.cls, 0, axis=d)
    return tuple(Val(tuple(t.shape), cls) for t in val)


_SHAPE_OPS: dict[str, Callable[[_Walker, torch.fx.Node], object]] = {
    "permute": _permute, "transpose": _transpose, "swapaxes": _transpose, "t": _transpose,
    "unsqueeze": _unsqueeze, "squeeze": _squeeze, "expand": _expand, "expand_as": _expand,
    "view": _reshape, "reshape": _reshape, "_unsafe_view": _reshape, "flatten": _flatten,
    "unflatten": _reshape, "select": _select, "slice": _slice, "narrow": _slice,
    "split": _split, "chunk": _split, "split_with_sizes": _split, "unbind": _unbind,
    "tensor_split": _split, "roll": _roll,
}


def _export(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    try:
        return torch.export.export(model, inputs, strict=False)
    except Exception as exc:  # torch raises many types here; report them all the same way
        raise CaptureError(
            f"torch.export could not capture {type(model).__name__}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. Check that the input signature "
            "matches what the model's forward expects (shape, dtype, number of inputs), and "
            "that forward has no data-dependent control flow on tensor values."
        ) from exc


def resolve_excludes(model: nn.Module, excludes: Iterable[object] | None) -> set[str]:
    """Module names from a mix of names and module objects; unknown names are an error."""
    if not excludes:
        return set()
    by_id = {id(m): n for n, m in model.named_modules()}
    names = dict(model.named_modules())
    out = set()
    for e in excludes:
        if isinstance(e, nn.Module):
            if id(e) not in by_id:
                raise ValueError(
                    f"Expected excludes to hold modules of this model. Received a "
                    f"{type(e).__name__} that is not part of it."
                )
            out.add(by_id[id(e)])
        elif isinstance(e, str):
            if e not in names:
                close = difflib.get_close_matches(e, [n for n in names if n], n=3)
                raise ValueError(
                    f"Expected excludes to name modules of the model. Received: {e!r}"
                    + (f"; did you mean one of {close}?" if close else "")
                )
            out.add(e)
        else:
            raise TypeError(f"Expected a module name or module in excludes. Received: {e!r}")
    return out


def capture(
    model: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    excludes: Iterable[object] | None = None,
) -> Capture:
    """Capture ``model`` (not mutated) at ``inputs`` and build its channel graph."""
    args = as_tuple(inputs)
    excluded = resolve_excludes(model, excludes)
    work = copy.deepcopy(model).eval()
    with torch.no_grad():
        ep = _export(work, args)
        total_macs, per_module = count_macs_by_module(work, args)
    walker = _Walker(work, ep, excluded)
    walker.module_macs = per_module
    walker.run()
    shapes = {n: tuple(p.shape) for n, p in work.named_parameters()}
    buffers = {n: tuple(b.shape) for n, b in work.named_buffers()}
    graph = walker.b.build(shapes, buffers, total_macs, walker.digest)
    _check_unknown(graph, walker.unknown_with_weights)
    for norm in walker.spanning:
        if not norm.module:
            _exclude_classes(graph, norm.classes, "a norm without a module spans channels")
    cap = Capture(graph, walker.spanning, walker.depthwise, walker.custom, sorted(excluded))
    from uif_explorer.torch.probe import freeze_breaking_groups  # probe imports apply -> here

    freeze_breaking_groups(work, cap, args)
    return cap


def _exclude_classes(graph: ChannelGraph, classes: np.ndarray, reason: str) -> None:
    for r in graph.uf.roots(np.asarray(classes)):
        gid = graph.root_group.get(int(r))
        if gid is not None and graph.groups[gid].prunable:
            graph.groups[gid].excluded_reason = reason


def _check_unknown(graph: ChannelGraph, records: list[tuple[str, str, np.ndarray]]) -> None:
    """An op with weights but no rule must not silently stop channels that could be pruned."""
    for op, where, classes in records:
        for r in np.unique(graph.uf.roots(classes)):
            gid = graph.root_group.get(int(r))
            if gid is None:
                continue
            g = graph.groups[gid]
            if g.fix_reasons and all("no pruning rule" in why for why in g.fix_reasons):
                raise UnsupportedLayerError(
                    f"{where}: op '{op}' holds weights and receives the channels of group "
                    f"'{g.name}' ({g.num_channels} channels), but there is no rule for "
                    f"pruning it. Add '{where}' to excludes, or register a handler for its "
                    "layer type with uif_explorer.torch.register_layer(...)."
                )


def digest_weights(model: nn.Module) -> str:
    """SHA-256 (16 hex) of the float32 CPU values of the state dict, in key order."""
    import hashlib

    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        if torch.is_tensor(v):
            t = v.detach().to("cpu")
            if t.is_floating_point():
                t = t.float()
            h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


__all__ = [
    "Capture", "CaptureError", "LayerRule", "SpanningNorm", "UnsupportedLayerError", "capture",
    "digest_weights", "register_layer", "resolve_excludes", "unregister_layer",
]

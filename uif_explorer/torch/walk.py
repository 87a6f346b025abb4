"""Walk an exported ATen graph once, giving every tensor its channel-class array.

The walk itself knows no op: each ``call_function`` node goes to the handler registered for
its op name in :data:`~uif_explorer.torch.rules.OP_RULES`, or, when it runs inside a module
whose type has an opaque :class:`~uif_explorer.core.rules.LayerRule` (``register_layer``), to
the custom-layer rule. An op without a handler is a barrier; one that also reads weights is
recorded, so that capture can raise ``UnsupportedLayerError`` when it stops prunable channels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from uif_explorer.core import rules as core_rules
from uif_explorer.core.channels import FIXED_INPUT, FIXED_OUTPUT, ChannelGraphBuilder, Val
from uif_explorer.core.rules import NO_RULE, Barrier, LayerRule
from uif_explorer.torch.rules import (
    LAYERS,
    OP_RULES,
    ParamVal,
    ParamView,
    SizeAttr,
    SpanningNorm,
    custom_node,
    flat_vals,
    module_path,
    op_name,
)


class Walker:
    """State of one walk: the graph builder, each node's value and torch-side facts."""

    def __init__(self, model: nn.Module, ep: torch.export.ExportedProgram,
                 excluded: set[str]) -> None:
        self.model = model
        self.ep = ep
        self.b = ChannelGraphBuilder()
        self.vals: dict[torch.fx.Node, object] = {}
        self.excluded = excluded
        self.spanning: list[SpanningNorm] = []
        self.depthwise: set[str] = set()
        self.custom: dict[str, LayerRule] = {}  # opaque layers met during the walk
        self.unknown_with_weights: list[tuple[str, str, np.ndarray]] = []
        self.float_state = {n: t.is_floating_point() for n, t in
                            [*model.named_parameters(), *model.named_buffers()]}
        self.digest: list[str] = []
        sig = ep.graph_signature
        self.param_names = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
        self.modules = dict(model.named_modules())
        self.custom_roots = self._custom_roots()
        self.module_macs: dict[str, int] = {}
        self.custom_macs: set[str] = set()
        self.custom_inputs: dict[str, np.ndarray] = {}  # channel-wise layer -> its channels
        self.custom_sliced: set[tuple[str, int]] = set()  # weight axes of opaque layers
        self.size_attrs: list[SizeAttr] = []  # split sizes etc. the slim model rewrites
        self.heads: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # module -> (heads, widths)

    def _custom_roots(self) -> dict[str, LayerRule]:
        """Modules whose type has an opaque rule (outermost ones: a rule covers its children)."""
        found: dict[str, LayerRule] = {}
        for name, mod in self.modules.items():
            rule = LAYERS.lookup(mod)
            if rule is not None and not rule.traced and not any(
                name.startswith(p + ".") for p in found
            ):
                found[name] = rule
        return found

    # -- helpers for rules ---------------------------------------------------------------
    def shape(self, node: torch.fx.Node) -> tuple[int, ...] | None:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            return tuple(int(s) for s in val.shape)
        return None

    def fixed_val(self, shape: tuple[int, ...], reason: str) -> Val:
        return core_rules.fixed_val(self.b, shape, reason)

    def arg(self, x: object) -> object:
        if isinstance(x, torch.fx.Node):
            return self.vals.get(x)
        if isinstance(x, (list, tuple)):
            return type(x)(self.arg(i) for i in x)
        return x

    def all_args(self, node: torch.fx.Node) -> list:
        return flat_vals(self.arg(list(node.args)) + [self.arg(list(node.kwargs.values()))])

    def barrier(self, node: torch.fx.Node, reason: str) -> object:
        """Fix every channel reaching this op; its outputs carry fixed channels."""
        where = f"{reason} ({op_name(node)} in {module_path(node)})"
        core_rules.barrier(self.b, self.all_args(node), where)
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

    def is_excluded(self, module: str | None) -> bool:
        return bool(module) and any(module == e or module.startswith(e + ".")
                                    for e in self.excluded)

    def fix_if_excluded(self, module: str | None, *classes: np.ndarray) -> None:
        if self.is_excluded(module):
            for c in classes:
                self.b.fix(c, f"excluded module {module}")

    # -- walk ----------------------------------------------------------------------------
    def run(self) -> None:
        for node in self.ep.graph.nodes:
            self.digest.append(self._digest_item(node))
            if node.op == "placeholder":
                self.vals[node] = self._placeholder(node)
            elif node.op == "call_function":
                self.vals[node] = self._call(node)
            elif node.op == "output":
                core_rules.barrier(self.b, flat_vals(self.arg(list(node.args))), FIXED_OUTPUT)
            else:
                self.vals[node] = self.output_fixed(node, f"unsupported node {node.op}")

    def _digest_item(self, node: torch.fx.Node) -> str:
        shape = self.shape(node)
        args = [a.name if isinstance(a, torch.fx.Node) else repr(a) for a in node.args]
        target = self.param_names.get(node.name, "") if node.op == "placeholder" else ""
        return f"{node.op}|{op_name(node) if node.op == 'call_function' else target}|" \
               f"{shape}|{','.join(args)}"

    def _placeholder(self, node: torch.fx.Node) -> object:
        shape = self.shape(node)
        if node.name in self.param_names:
            return ParamVal(self.param_names[node.name], shape or ())
        if shape is None:
            return None
        return self.fixed_val(shape, FIXED_INPUT)

    def _call(self, node: torch.fx.Node) -> object:
        owner = self._custom_owner(node)
        name = op_name(node)
        rule = OP_RULES.get(name)
        try:
            if owner is not None:
                return custom_node(self, node, owner, self.custom_roots[owner])
            if rule is not None:
                return rule(self, node)
        except Barrier as exc:
            return self.barrier(node, str(exc))
        return self.unknown(node, name)

    def unknown(self, node: torch.fx.Node, name: str) -> object:
        """A barrier for an op without a rule; one reading weights is recorded as unsupported."""
        # Integer buffers (index tables such as Swin V2's relative_position_index) are not
        # weights: an op reading them does not need a pruning rule.
        args = [a.param if isinstance(a, ParamView) else a for a in self.all_args(node)]
        if any(isinstance(a, ParamVal) and self.float_state.get(a.name, True) for a in args):
            for t in args:
                if isinstance(t, Val):
                    self.unknown_with_weights.append((name, module_path(node), t.cls.ravel()))
        return self.barrier(node, f"{NO_RULE} for op '{name}'")

    def _custom_owner(self, node: torch.fx.Node) -> str | None:
        if not self.custom_roots:
            return None
        for fqn, _typ in (node.meta.get("nn_module_stack") or {}).values():
            if fqn in self.custom_roots:
                return fqn
        return None

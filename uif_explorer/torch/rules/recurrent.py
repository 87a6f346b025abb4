"""Recurrent layers (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``): input features and hidden units.

A recurrent op consumes the channels on its input's last dim (``weight_ih_l0`` columns of every
direction, whatever ``batch_first`` says) and produces ``hidden_size`` units of its own, shared
by every layer and direction. A hidden unit is removed with its rows in every gate of
``weight_ih``/``weight_hh``/biases, its ``weight_hh`` column and the next layer's input
columns. That is exact when the initial state is zero (``hx`` not given): with all its gate
pre-activations at 0 the unit's state stays 0 (LSTM ``c = f*c + i*tanh(0)``, GRU ``h = (1-z)*
tanh(0) + z*h``, RNN ``tanh(0)``), so the sparse unit outputs 0 and the others never see it.
With a given initial state, or LSTM projections (``proj_size``), the hidden size stays whole.

MACs are what PyTorch's FLOP counter counts for the op (on ``meta`` it decomposes into one
``mm`` over all steps for the input and one ``addmm`` per step for the state): per layer and
direction ``rows * gates*hidden * in`` plus ``rows * gates*hidden * hidden``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from uif_explorer.core.channels import MacOp, ParamSlice, Val, channel_list
from uif_explorer.core.rules import Barrier, LayerRule
from uif_explorer.torch.rules.base import ParamVal, op_name, op_rule, register_builtin

if TYPE_CHECKING:
    from uif_explorer.torch.walk import Walker

ZERO_STATE = ("zeros", "new_zeros", "zeros_like")


def _zero_state(hx: object) -> bool:
    """Whether the initial state is made of fresh zeros (the module's default)."""
    nodes = list(hx) if isinstance(hx, (list, tuple)) else [hx]
    return all(isinstance(n, torch.fx.Node) and n.op == "call_function"
               and op_name(n) in ZERO_STATE for n in nodes)


@op_rule("lstm", "gru", "rnn_tanh", "rnn_relu")
def recurrent(w: Walker, node: torch.fx.Node) -> tuple:
    """``aten.lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
    batch_first)`` and the same for ``gru`` / ``rnn_*``."""
    if len(node.args) < 9 or not isinstance(node.args[2], (list, tuple)):
        raise Barrier(f"{op_name(node)} with packed sequences")
    x = w.arg(node.args[0])
    params = [w.arg(p) for p in node.args[2]]
    has_bias, layers, bidir = bool(node.args[3]), int(node.args[4]), bool(node.args[7])
    dirs, per = 2 if bidir else 1, 4 if has_bias else 2
    if not isinstance(x, Val) or not all(isinstance(p, ParamVal) for p in params):
        raise Barrier(f"{op_name(node)} with computed weights")
    if len(params) != layers * dirs * per:
        raise Barrier(f"{op_name(node)} with projections (proj_size) keeps its sizes")
    in_list = channel_list(x, -1)
    if in_list is None:
        raise Barrier(f"{op_name(node)} input features depend on position")
    module = w.module_of(params[0].name)
    hidden = params[1].shape[1]
    gates = params[0].shape[0] // hidden
    hid = w.b.param_axis(params[1].name, 1, hidden, module)
    if not _zero_state(node.args[1]):
        w.b.fix(hid, f"{op_name(node)} {module} starts from a given state: its hidden size "
                     "stays whole")
        for h in w.arg(node.args[1]) if isinstance(node.args[1], (list, tuple)) else []:
            if isinstance(h, Val):
                w.b.fix(h.cls, f"initial state of {module}")
    rows = int(np.prod(x.shape[:-1]))
    gate_rows = np.tile(hid, gates)
    layer_in = in_list
    for layer in range(layers):
        for d in range(dirs):
            i = (layer * dirs + d) * per
            w_ih, w_hh = params[i], params[i + 1]
            w.b.unify(w.b.param_axis(w_ih.name, 1, w_ih.shape[1], None), layer_in)
            w.b.unify(w.b.param_axis(w_hh.name, 1, hidden, None), hid)
            w.b.add_slice(ParamSlice(w_ih.name, 0, gate_rows, role="out"), module)
            w.b.add_slice(ParamSlice(w_ih.name, 1, layer_in, role="in"), module)
            w.b.add_slice(ParamSlice(w_hh.name, 0, gate_rows, role="out"), module)
            w.b.add_slice(ParamSlice(w_hh.name, 1, hid, role="in"), module)
            for b in params[i + 2:i + per]:  # the biases, when there are any
                w.b.add_slice(ParamSlice(b.name, 0, gate_rows, role="bias"), module)
        out_rows = np.tile(hid, gates * dirs)
        w.b.mac_ops.append(MacOp(module, dirs * rows * gates * hidden * len(layer_in),
                                 layer_in, out_rows))
        w.b.mac_ops.append(MacOp(module, dirs * rows * gates * hidden * hidden, hid, out_rows))
        layer_in = np.tile(hid, dirs)
    w.fix_if_excluded(module, in_list, hid)
    val = node.meta.get("val")
    out = [Val(tuple(val[0].shape), layer_in.reshape([1] * (val[0].ndim - 1) + [-1]))]
    for t in val[1:]:
        out.append(Val(tuple(t.shape), hid.reshape([1] * (t.ndim - 1) + [-1])))
    return tuple(out)


def _recurrent_sizes(m: nn.RNNBase, kept_in: int, kept_out: int) -> None:
    m.input_size = m.weight_ih_l0.shape[1]
    m.hidden_size = m.weight_hh_l0.shape[1]


register_builtin(nn.RNNBase, LayerRule("producer", {"weight_hh_l0": 1}, {"weight_ih_l0": 1},
                                       _recurrent_sizes, traced=True))

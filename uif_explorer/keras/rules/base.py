"""The Keras layer-rule contract and the registry every rule, built-in or registered, is in.

One entry per layer type says how the layer's channels tie to its inputs and outputs (a
*producer* makes channels of its own, a *channel-wise* layer carries its input's), which weight
axes follow them (``out_dims`` / ``in_dims``: the :class:`ParamSlice` records that
``keras/apply.py`` slices by) and how its config is rebuilt for the slim model
(``update(config, kept_in, kept_out)``, applied inside ``keras.models.clone_model``). This is
the framework-neutral :class:`~uif_explorer.core.rules.LayerRule`; a Keras rule may add its own
``walk`` for layers whose channel flow is not a plain producer / channel-wise one (merges,
reshapes, pooling, grouped convolutions) and a ``macs`` count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from uif_explorer.core.rules import LayerRegistry, LayerRule

if TYPE_CHECKING:
    from uif_explorer.core.channels import Val
    from uif_explorer.keras.graph import Walker
    from uif_explorer.keras.structure import Node

Walk = Callable[["Walker", "Node", "list[Val]"], "list[Val]"]
Update = Callable[[dict, int, int], Any]

SPANNING_ACTIVATIONS = {"softmax", "log_softmax"}


@dataclass
class KerasLayerRule(LayerRule):
    """A :class:`LayerRule` for Keras layers (weights named as ``layer.weights`` name them).

    ``walk(walker, node, inputs) -> outputs`` replaces the generic producer / channel-wise walk
    when set (then ``kind`` is ``"channelwise"``: the rule creates no channels by itself unless
    its walk calls the generic one). ``roles`` overrides the importance role of a weight
    (defaults: ``"out"`` / ``"in"`` for producers, ``"dw"`` / ``"other"`` for channel-wise
    layers, ``"bias"`` for a weight named ``bias``). ``macs(node)`` counts the layer's MACs.
    """

    walk: Walk | None = None
    roles: dict[str, str] = field(default_factory=dict)
    macs: Callable[[Node], int] | None = None


#: Layer class (or class name) -> rule. Built-in rules are keyed by class name, so a Keras
#: config's ``class_name`` finds them too; ``register_layer`` adds classes or names.
LAYER_RULES = LayerRegistry()
#: Keras op class name (``x + 3`` is an ``Add`` op) -> walk; ops share names with layers.
OP_RULES: dict[str, Walk] = {}
#: The built-in entries, so that unregistering an override brings the built-in rule back.
BUILTIN_RULES: dict[str, KerasLayerRule] = {}


def register_builtins(rules: dict[str, KerasLayerRule]) -> None:
    for name, rule in rules.items():
        BUILTIN_RULES[name] = rule
        LAYER_RULES.register(name, rule)


def rule_for(node: Node) -> KerasLayerRule | None:
    """The layer rule of one call (``None`` for Keras ops and for layers without a rule)."""
    if node.is_op:
        return None
    return LAYER_RULES.lookup(node.layer if node.layer is not None else node.class_name)


def channel_axis(config: dict, ndim: int) -> int:
    """The channel axis of a layer's tensors from its ``data_format`` (NHWC by default)."""
    return 1 if config.get("data_format") == "channels_first" else ndim - 1


def along(lst: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A 1-D class list as a class array that varies along ``axis`` of an ``ndim`` tensor."""
    axis %= ndim
    return lst.reshape([-1 if d == axis else 1 for d in range(ndim)])


def activation_name(config: dict) -> str:
    act = config.get("activation")
    if isinstance(act, dict):
        act = act.get("config", {}).get("name") or act.get("class_name")
    return str(act or "linear").lower()


def set_config(key: str, config: dict, kept_in: int, kept_out: int) -> None:
    """``update`` that writes the kept output channels to one config entry (with partial)."""
    config[key] = kept_out

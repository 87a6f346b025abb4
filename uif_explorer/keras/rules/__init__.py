"""The registry of Keras layer rules: every built-in layer is an entry, custom layers are
added with :func:`register_layer` (see ``base.py`` for the contract)."""

from __future__ import annotations

from uif_explorer.keras.rules import structural as _structural  # noqa: F401  (registers)
from uif_explorer.keras.rules.base import (
    LAYER_RULES,
    OP_RULES,
    KerasLayerRule,
    rule_for,
)
from uif_explorer.keras.rules.structural import op_unknown
from uif_explorer.keras.rules.weighted import (
    apply_rule,
    register_channelwise_layer,
    register_layer,
    unregister_layer,
    weighted,
)

__all__ = [
    "LAYER_RULES", "OP_RULES", "KerasLayerRule", "apply_rule", "op_unknown",
    "register_channelwise_layer", "register_layer", "rule_for", "unregister_layer", "weighted",
]

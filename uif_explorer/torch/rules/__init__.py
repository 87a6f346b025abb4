"""The PyTorch backend's layer and op rules (see :mod:`.base` for the registries).

Importing this package registers every built-in rule: op handlers from :mod:`.weighted`,
:mod:`.shape`, :mod:`.attention` and :mod:`.recurrent`, module rules from :mod:`.modules`.
"""

from uif_explorer.torch.rules import (  # noqa: F401 - registers rules
    attention,
    modules,
    recurrent,
    shape,
    weighted,
)
from uif_explorer.torch.rules.base import (
    BUILTIN_RULES,
    LAYERS,
    OP_RULES,
    ParamVal,
    ParamView,
    SizeAttr,
    SpanningNorm,
    flat_vals,
    module_path,
    op_name,
    op_rule,
    register_layer,
    register_op,
    unregister_layer,
)
from uif_explorer.torch.rules.custom import custom_node
from uif_explorer.torch.rules.modules import update_module

__all__ = [
    "BUILTIN_RULES", "LAYERS", "OP_RULES", "ParamVal", "ParamView", "SizeAttr", "SpanningNorm",
    "custom_node", "flat_vals", "module_path", "op_name", "op_rule", "register_layer",
    "register_op", "unregister_layer", "update_module",
]

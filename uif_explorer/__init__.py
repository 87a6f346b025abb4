"""UIF Explorer: channel pruning for PyTorch and Keras CNNs, with a workbench app.

The public API is loaded lazily so ``import uif_explorer`` stays light: PyTorch is imported on
first use of a PyTorch name, TensorFlow only through ``uif_explorer.keras``.

    from uif_explorer import get_pruning_runner
    runner = get_pruning_runner(model, torch.randn(1, 3, 224, 224), "iterative")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "get_pruning_runner": "uif_explorer.torch.runners",
    "IterativePruningRunner": "uif_explorer.torch.runners",
    "OneStepPruningRunner": "uif_explorer.torch.runners",
    "ChannelPruner": "uif_explorer.torch.pruner",
    "register_layer": "uif_explorer.torch.capture",
    "top1_accuracy": "uif_explorer.torch.evaluation",
    "adaptive_bn_calibration": "uif_explorer.torch.evaluation",
    "make_label_free_eval": "uif_explorer.torch.evaluation",
    "fine_tune": "uif_explorer.torch.finetune",
    "OFAPruner": "uif_explorer.torch.ofa",
    "Refinement": "uif_explorer.core.refinement",
    "within_noise": "uif_explorer.core.uncertainty",
    "wilson_interval": "uif_explorer.core.uncertainty",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'uif_explorer' has no attribute {name!r}")

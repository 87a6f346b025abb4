"""The PyTorch backend: graph capture, pruning, runners (the guide's ``pytorch_nndct``)."""

from uif_explorer.torch.capture import (
    CaptureError,
    UnsupportedLayerError,
    register_layer,
    unregister_layer,
)
from uif_explorer.torch.evaluation import (
    adaptive_bn_calibration,
    label_free_score,
    make_label_free_eval,
    top1_accuracy,
)
from uif_explorer.torch.finetune import fine_tune
from uif_explorer.torch.macs import count_macs, count_params, model_cost
from uif_explorer.torch.pruner import ChannelPruner
from uif_explorer.torch.runners import (
    IterativePruningRunner,
    OneStepPruningRunner,
    get_pruning_runner,
)

__all__ = [
    "CaptureError",
    "ChannelPruner",
    "IterativePruningRunner",
    "OneStepPruningRunner",
    "UnsupportedLayerError",
    "adaptive_bn_calibration",
    "count_macs",
    "count_params",
    "fine_tune",
    "get_pruning_runner",
    "label_free_score",
    "make_label_free_eval",
    "model_cost",
    "register_layer",
    "top1_accuracy",
    "unregister_layer",
]

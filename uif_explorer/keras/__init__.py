"""Channel pruning for Keras 3 Functional and Sequential models (the guide's ``tf_nndct`` API).

Importing this package imports Keras (and TensorFlow); ``import uif_explorer`` and the PyTorch
paths never do. Nothing here imports torch.

    from uif_explorer.keras import IterativePruningRunner
    runner = IterativePruningRunner(model, tf.TensorSpec((1, 28, 28, 1), tf.float32))
    runner.ana(evaluate)
    sparse_model = runner.prune(ratio=0.2)
"""

from __future__ import annotations

from uif_explorer.keras.apply import MaskConstraint, make_slim, make_sparse
from uif_explorer.keras.evaluation import adaptive_bn_calibration, check_score, top1_accuracy
from uif_explorer.keras.export import export_keras
from uif_explorer.keras.graph import (
    KerasCapture,
    KerasGraphError,
    UnsupportedLayerError,
    capture,
    register_channelwise_layer,
    register_layer,
    unregister_layer,
)
from uif_explorer.keras.macs import count_macs, count_params, macs_table
from uif_explorer.keras.runner import AnalysisError, IterativePruningRunner, KerasPruner

__all__ = [
    "AnalysisError",
    "IterativePruningRunner",
    "KerasCapture",
    "KerasGraphError",
    "KerasPruner",
    "MaskConstraint",
    "UnsupportedLayerError",
    "adaptive_bn_calibration",
    "capture",
    "check_score",
    "count_macs",
    "count_params",
    "export_keras",
    "macs_table",
    "make_slim",
    "make_sparse",
    "register_channelwise_layer",
    "register_layer",
    "top1_accuracy",
    "unregister_layer",
]

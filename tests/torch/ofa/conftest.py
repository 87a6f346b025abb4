"""The sample MobileNetV2's supernet, built once per test module."""

from __future__ import annotations

import pytest
import torch
from ofa_models import sample_model

from uif_explorer.torch.ofa import OFAPruner


@pytest.fixture(scope="module")
def mbv2():
    model = sample_model("mobilenetv2_small")
    pruner = OFAPruner(model, torch.randn(1, 1, 28, 28))
    return model, pruner, pruner.ofa_model()

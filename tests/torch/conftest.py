"""Fixtures the PyTorch backend's tests share."""

from __future__ import annotations

import pytest
import torch

from uif_explorer.zoo import load_torch_sample


@pytest.fixture(scope="module")
def resnet20() -> torch.nn.Module:
    """The trained sample ResNet-20, loaded once per test module: no module sees a model
    another module's runs have touched."""
    return load_torch_sample("resnet20")

"""Shared test setup.

torch is imported first so that TensorFlow never loads before it in the test process
(environment.md: loading ``torch._dynamo`` after TensorFlow can crash).
"""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skipped with a reason where PyTorch sees no GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

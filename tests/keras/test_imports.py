"""Import hygiene of the Keras backend (runs without importing TensorFlow in this process).

``import uif_explorer`` and the PyTorch paths never load TensorFlow / Keras; the Keras package
never loads torch. Each check runs in a fresh interpreter, so test order cannot hide an import.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_uif_explorer_and_torch_paths_never_import_tensorflow() -> None:
    code = ("import sys, uif_explorer, uif_explorer.torch, uif_explorer.torch.runners; "
            "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=ENV)


@pytest.mark.tf
@pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="Keras not installed")
def test_keras_package_never_imports_torch() -> None:
    code = "import sys, uif_explorer.keras; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=ENV)

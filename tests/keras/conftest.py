"""The Keras tests as a folder: skipped whole where Keras or TensorFlow is missing, so each
test file imports them at the top like any other module (one check here instead of an
``importorskip`` header and ``noqa: E402`` imports in every file)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

HAVE_KERAS = all(importlib.util.find_spec(m) is not None for m in ("keras", "tensorflow"))
# test_imports.py also checks that the torch paths never load TensorFlow: it runs without it
collect_ignore = [] if HAVE_KERAS else [
    p.name for p in Path(__file__).parent.glob("test_*.py") if p.name != "test_imports.py"]

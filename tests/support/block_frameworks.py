"""A pytest plugin (``-p block_frameworks``) that makes torch, TensorFlow, Keras and streamlit
unimportable, so ``tests/core`` proves the engine's core runs without any of them."""

from __future__ import annotations

import importlib.abc
import sys

BLOCKED = ("torch", "torchvision", "tensorflow", "keras", "streamlit")


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):  # noqa: ANN001 - importlib's signature
        if fullname.split(".")[0] in BLOCKED:
            raise ImportError(f"{fullname} is blocked: core tests must not need it")
        return None


sys.meta_path.insert(0, _Blocker())

"""Fixtures shared by the app's AppTests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.delta_generator import DeltaGenerator


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """What each download button offered in the last run, by its label (AppTest keeps no
    file contents): ``data`` (bytes, str or the deferred callable) and ``file_name``."""
    seen: dict[str, dict[str, Any]] = {}
    original = DeltaGenerator.download_button

    def recording(self: DeltaGenerator, label: str, data: Any, *args: Any, **kwargs: Any):
        seen[label] = {"data": data, "file_name": kwargs.get("file_name")}
        return original(self, label, data, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", recording)
    return seen


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh workspaces folder for the app, the default upload limit, and no cached models
    or data from an earlier test (the caches are process-wide)."""
    ws = tmp_path / "workspaces"
    monkeypatch.setenv("UIF_WORKSPACES", str(ws))
    monkeypatch.delenv("UIF_MAX_UPLOAD_MB", raising=False)
    st.cache_resource.clear()
    st.cache_data.clear()
    return ws

"""Fixtures shared by the app's AppTests."""

from __future__ import annotations

from typing import Any

import pytest
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

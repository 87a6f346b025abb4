"""Open a page of the app in Streamlit's AppTest as a freshly started server would, and check
that a run ended without an exception or an error box (shared by the AppTest files)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import streamlit as st
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def open_page(page: str, token: str | None, timeout: float,
              state: Mapping[str, Any] | None = None) -> AppTest:
    """``page`` of the app in the workspace ``token`` (None: a new one), ``state`` set first."""
    st.cache_resource.clear()  # a fresh job registry: what a restarted server has
    at = AppTest.from_file(APP, default_timeout=timeout)
    if token is not None:
        at.query_params["ws"] = token
    at.run()
    for key, value in (state or {}).items():
        at.session_state[key] = value
    at.switch_page(page)
    return at.run()


def assert_no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]

"""Session-state keys of the app and their defaults, in one place.

``init()`` runs at the top of every rerun (from ``app.py``) and fills in only what is missing,
so each browser session gets its own values and nothing is computed at import time.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

MODEL_NAME = "model_name"
"""Key of the selected sample model (a key of ``uif_explorer.zoo.SAMPLE_MODELS``)."""

DEFAULT_MODEL = "resnet20"

DEFAULTS: dict[str, Any] = {
    MODEL_NAME: DEFAULT_MODEL,
}


def init() -> None:
    """Set every key that this session does not hold yet to its default."""
    for key, value in DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = value


def get(key: str) -> Any:
    """The session's value of ``key`` (its default when unset)."""
    return st.session_state.get(key, DEFAULTS[key])


def model_name() -> str:
    """The sample model this session works on."""
    return str(get(MODEL_NAME))


def set_model_name(name: str) -> None:
    st.session_state[MODEL_NAME] = name

"""Session-state keys of the app and their defaults, in one place.

``init()`` runs at the top of every rerun (from ``app.py``) and fills in only what is missing,
so each browser session gets its own values and nothing is computed at import time.

The current model is a :class:`services.model_source.ModelSource` kept as a plain dict under
``MODEL_SOURCE``; ``MODEL_NAME`` mirrors its name (for samples, the sample's key), so code and
tests that set ``model_name`` to a sample key switch the model. The source is also written to the
session's workspace folder, so a reload (same ``?ws=`` token) finds an uploaded model again.
"""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from uif_explorer import zoo
from uif_explorer.services import model_source
from uif_explorer.services.eval_data import DataSource
from uif_explorer.services.model_source import ModelSource

MODEL_NAME = "model_name"
"""Name of the current model (a key of ``uif_explorer.zoo.SAMPLE_MODELS`` for samples)."""
MODEL_SOURCE = "model_source"
"""The current model's source, as ``ModelSource.to_dict()``."""
DATA_SOURCE = "data_source"
"""Uploaded evaluation data (``DataSource.to_dict()``), or None for the bundled subset."""

DEFAULT_MODEL = "resnet20"

DEFAULTS: dict[str, Any] = {
    MODEL_NAME: DEFAULT_MODEL,
    MODEL_SOURCE: None,
    DATA_SOURCE: None,
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
    """The name of the model this session works on (workspace file stem)."""
    return current_source().name


def set_model_name(name: str) -> None:
    """Switch to the sample model ``name``."""
    set_source(model_source.sample_source(name))


def _stored(value: object) -> ModelSource | None:
    if not isinstance(value, dict):
        return None
    try:
        return ModelSource.from_dict(value)
    except Exception:  # noqa: BLE001 - a stale or hand-edited entry: fall back
        return None


def current_source() -> ModelSource:
    """The session's current model: its stored source when it matches ``model_name``, else the
    sample named by ``model_name``, else the workspace's last model, else the default sample."""
    from uif_explorer.ui import workspace

    name = st.session_state.get(MODEL_NAME)
    src = _stored(st.session_state.get(MODEL_SOURCE))
    if src is not None and src.name == name:
        return src
    if src is None and name in (None, DEFAULT_MODEL):  # a new session: reloaded page?
        saved = model_source.read_current(workspace.current_folder())
        if saved is not None and saved.name != DEFAULT_MODEL:
            _remember(saved, persist=False)
            return saved
    if isinstance(name, str) and name in zoo.SAMPLE_MODELS:
        fresh = model_source.sample_source(name)
    else:
        fresh = model_source.sample_source(DEFAULT_MODEL)
    _remember(fresh, persist=False)
    return fresh


def _remember(src: ModelSource, persist: bool) -> None:
    st.session_state[MODEL_SOURCE] = src.to_dict()
    st.session_state[MODEL_NAME] = src.name
    if persist:
        from uif_explorer.ui import workspace

        model_source.save_current(workspace.current_folder(), src)


def set_source(src: ModelSource) -> None:
    """Make ``src`` the current model (and forget uploaded data checked for another model)."""
    _remember(src, persist=True)
    data = current_data()
    if data is not None and data.for_model != src.key:
        set_data(None)


DATA_FILE = "app_data.json"  # the session's uploaded evaluation data, for a reload
DATA_CHECKED = "data_source_checked"


def current_data() -> DataSource | None:
    """Uploaded evaluation data of the current model, or None (the bundled subset). A new
    session (a reload) picks up the data its workspace used last."""
    value = st.session_state.get(DATA_SOURCE)
    if value is None and not st.session_state.get(DATA_CHECKED):
        st.session_state[DATA_CHECKED] = True
        from uif_explorer.ui import workspace

        try:
            value = json.loads((workspace.current_folder() / DATA_FILE).read_text())
        except (OSError, ValueError):
            value = None
        st.session_state[DATA_SOURCE] = value if isinstance(value, dict) else None
    if not isinstance(value, dict):
        return None
    try:
        data = DataSource.from_dict(value)
    except TypeError:
        return None
    if not data.stored_safely:
        return None  # never a path other than uploads/<sha256>.npz or datasets/<sha>
    return data


def set_data(data: DataSource | None) -> None:
    """Use ``data`` (None: the bundled subset) for this session and its workspace."""
    from uif_explorer.io.workspace import atomic_write_json
    from uif_explorer.ui import workspace

    st.session_state[DATA_SOURCE] = data.to_dict() if data is not None else None
    st.session_state[DATA_CHECKED] = True
    path = workspace.current_folder() / DATA_FILE
    if data is None:
        path.unlink(missing_ok=True)
    else:
        atomic_write_json(path, {"format_version": 1, **data.to_dict()})

"""The session's workspace: an unguessable token in the page URL (``?ws=...``) and its folder.

The token comes from ``secrets.token_urlsafe`` and is the only key to the folder
``workspaces/<token>/`` at the repository root (``UIF_WORKSPACES`` overrides the root, for tests).
A token from the URL is used only when it matches ``^[A-Za-z0-9_-]{16,64}$``, so it can never be
a path. Reloading the page keeps the token, hence the job registry entry and the files.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any

import streamlit as st

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
QUERY_KEY = "ws"
STATE_KEY = "workspace_token"
REPO_ROOT = Path(__file__).resolve().parents[2]


def workspaces_root() -> Path:
    return Path(os.environ.get("UIF_WORKSPACES") or REPO_ROOT / "workspaces")


def is_valid_token(token: object) -> bool:
    return isinstance(token, str) and TOKEN_RE.fullmatch(token) is not None


def new_token() -> str:
    return secrets.token_urlsafe(24)  # 32 characters of [A-Za-z0-9_-]


def folder_of(token: str) -> Path:
    """``<root>/<token>``, created; refuses anything but a valid token."""
    if not is_valid_token(token):
        raise ValueError("Expected a workspace token of 16-64 characters [A-Za-z0-9_-].")
    path = workspaces_root() / token
    path.mkdir(parents=True, exist_ok=True)
    return path


def current_token() -> str:
    """This session's token: the URL's when valid, else the session's, else a new one.

    The token is written back to the URL, so a reload (or a bookmark) returns to the workspace.
    """
    token = st.query_params.get(QUERY_KEY)
    if not is_valid_token(token):
        token = st.session_state.get(STATE_KEY)
        if not is_valid_token(token):
            token = new_token()
    st.session_state[STATE_KEY] = token
    if st.query_params.get(QUERY_KEY) != token:
        st.query_params[QUERY_KEY] = token
    return token


def current_folder() -> Path:
    return folder_of(current_token())


# -- the session's runners and pruned model ------------------------------------------------
PRUNED_KEY = "pruned_model"
"""Session key of the current pruned model (a ``services.pruned.PrunedModel``)."""


@st.cache_resource(show_spinner="Tracing the model's channel groups...", max_entries=16)
def cached_runner(token: str, key: str, method: str, _loaded: Any) -> Any:
    """The workspace's runner for a model (``method``: 'iterative' or 'one_step'; Keras has
    one runner for both). ``key`` is the model's cache key (``loaders.cache_key``).

    Shared by the page and its background job; PyTorch runners work on a private copy of the
    cached model, Keras runners on masked copies (the shared model is never changed).
    """
    from uif_explorer.services import model_source

    return model_source.make_runner(_loaded.source, _loaded.model, method, folder_of(token))


def runner(token: str, loaded: Any, method: str) -> Any:
    """The runner of a loaded model (``loaders.LoadedModel``) in the workspace ``token``."""
    from uif_explorer.ui import loaders

    return cached_runner(token, loaders.cache_key(loaded.source, token), method, loaded)


def page_model() -> tuple[str, Any]:
    """(token, loaded model) for a pruning page, or a message and ``st.stop()``: a model that
    cannot be loaded is sent back to the Model page."""
    from uif_explorer.ui import errors, loaders

    token = current_token()
    try:
        return token, loaders.current()
    except Exception as exc:  # noqa: BLE001 - the Model page explains loading problems
        errors.show(f"The current model cannot be loaded ({exc}); open the **Model** page to "
                    "pick or upload another one.", exc)
        st.stop()
    raise AssertionError("unreachable: st.stop() ends the script run")


def page_runner(method: str, token: str, loaded: Any) -> Any:
    """The runner of a pruning page, or a message saying why the model cannot be pruned and
    ``st.stop()``. Pages lay out their settings first: capturing a model takes seconds."""
    from uif_explorer.services.analysis import first_line
    from uif_explorer.ui import errors

    try:
        return runner(token, loaded, method)
    except Exception as exc:  # noqa: BLE001 - an unprunable model: say why
        errors.show(f"**{loaded.title}** cannot be pruned: {type(exc).__name__}: "
                    f"{first_line(exc)}. The Model page still shows its params and "
                    "MACs.", exc)
        st.stop()
    raise AssertionError("unreachable: st.stop() ends the script run")


def pruned() -> Any:
    """The session's ``PrunedModel``, or None."""
    from uif_explorer.services.pruned import PrunedModel

    value = st.session_state.get(PRUNED_KEY)
    return value if isinstance(value, PrunedModel) else None


def set_pruned(value: Any) -> None:
    st.session_state[PRUNED_KEY] = value

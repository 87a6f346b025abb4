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
"""Session key of the current pruned model: a dict with ``model`` (nn.Module), ``kind``
('sparse' or 'slim'), ``model_name``, ``source`` (how it was made), ``spec_path``,
``accuracy`` (%) and ``images`` (bundled test images the accuracy is on); the Export page adds
the ``DERIVED`` entries, which belong to that one model."""
DERIVED = ("slim", "onnx", "latency")


@st.cache_resource(show_spinner="Tracing the model's channel groups...", max_entries=16)
def runner(token: str, model_name: str, method: str, stamp: tuple[int, int]):
    """The workspace's runner for a sample model (``method``: 'iterative' or 'one_step').

    Shared by the page and its background job; works on a private copy of the cached model.
    """
    import copy

    from uif_explorer import zoo
    from uif_explorer.torch.runners import get_pruning_runner
    from uif_explorer.ui import loaders

    model = copy.deepcopy(loaders.torch_sample(model_name, stamp))
    return get_pruning_runner(model, zoo.example_input(model_name), method,
                              workdir=folder_of(token), name=model_name)


def pruned() -> dict | None:
    value = st.session_state.get(PRUNED_KEY)
    return value if isinstance(value, dict) else None


def set_pruned(value: dict) -> None:
    st.session_state[PRUNED_KEY] = value

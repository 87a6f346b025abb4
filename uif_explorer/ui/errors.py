"""Errors reach the page as ``st.error`` with a how-to-fix message, never as a traceback.

The traceback still goes to the server log (the terminal that ran ``./run.sh``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

log = logging.getLogger("uif_explorer.app")


def show(message: str, exc: BaseException | None = None) -> None:
    """Show ``message`` as an error box; log ``exc`` with its traceback for the developer."""
    if exc is not None:
        log.error("%s", message, exc_info=exc)
    st.error(message, icon=":material/error:")


@contextmanager
def guard(what: str) -> Iterator[None]:
    """Run a page section; an unexpected exception becomes an error box instead of a traceback.

    Streamlit's own control flow (``st.rerun``, ``st.stop``, ``st.switch_page``) derives from
    ``BaseException`` and passes through untouched.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the page must never show a traceback
        first = (str(exc).strip().splitlines() or ["no details"])[0][:300]
        show(
            f"Something went wrong while {what}: {type(exc).__name__}: {first}. "
            "The full traceback is in the terminal that runs the app; reloading the page "
            "or picking another model usually helps.",
            exc,
        )


def nothing_to_prune(loaded: Any) -> bool:
    """Show the engine's one line when no channel group of the loaded model
    (``loaders.LoadedModel``) can be pruned, naming the frozen layers and why, and return True:
    saying so up front beats an analysis or a search that fails later. Uses the workspace's
    cached runner, the capture the groups table shows."""
    from uif_explorer.core.rules import nothing_prunable
    from uif_explorer.ui import workspace

    graph = workspace.runner(workspace.current_token(), loaded, "iterative").pruner.graph
    if graph.prunable_groups:
        return False
    show(nothing_prunable(graph).replace(
        "See groups_table() for every group.",
        "The channel groups table on the **Model** page lists every group."))
    return True

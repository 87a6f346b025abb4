"""The MACs-or-latency choice of the Sensitivity, One-step and OFA pages, written once.

:func:`choose` is the radio (MACs by default) and says what a latency target means;
:func:`latency_ready` measures this machine's latency table in a background job (like the
pages' other long steps) so that a page's plan preview never times layers in its own script
run. The words and the job itself live in ``services.latency_target``.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from uif_explorer.services import latency_target
from uif_explorer.ui import jobs

LABEL = "Measuring this machine's latency table"


def choose(key: str) -> str:
    """The radio 'Prune to a fraction of'; returns the engine's target ('macs'/'latency')."""
    label = st.radio("Prune to a fraction of", list(latency_target.TARGET_CHOICES), index=0,
                     key=key, horizontal=True,
                     help="MACs: the multiply-accumulates counted on the graph (the same on "
                     "every machine). Latency: the time this machine is predicted to take, "
                     "from a table of its layers measured once; widths are rounded to the "
                     "counts that table says are fast.")
    target = latency_target.TARGET_CHOICES[label]
    if target == "latency":
        st.caption(latency_target.TABLE_NOTE)
    return target


def predicted_column() -> Any:
    """The column of a table's predicted latencies (``latency_target.with_predicted_latency``)."""
    return st.column_config.NumberColumn(
        "Predicted latency (ms)", format="%.2f",
        help="From this machine's latency table (batch 1), not timed on the built model.")


def latency_ready(token: str, runner: Any) -> bool:
    """Whether ``runner``'s latency table is ready; else its measuring job is started (or
    watched) with progress and Cancel, and the page reruns when it ends. Once it has ended,
    a button measures it afresh (a table timed while other jobs ran can be far off)."""
    registry = jobs.registry()
    name = f"latency:{runner.name}"
    job = registry.get(token, name)
    if job is None:
        job = registry.start(token, name, latency_target.table_job(runner), label=LABEL)
    if not job.running and st.button("Measure the latency table again", key=f"{name}_again",
                                     icon=":material/timer:"):
        registry.forget(token, name)
        registry.start(token, name, latency_target.table_job(runner, remeasure=True),
                       label=LABEL)
        st.rerun()
    if job.status == jobs.DONE:
        return True

    def live() -> None:
        current = registry.get(token, name)
        jobs.progress_block(current, LABEL)
        if current is not None and current.running:
            st.caption(":material/hourglass_top: Timing each layer at a few channel counts "
                       "on this machine (once per model and machine): the plan appears here "
                       "when it is done.")
        jobs.rerun_when_finished(current)

    jobs.poll(job, live)
    return False

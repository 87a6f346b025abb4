"""Background jobs: an engine call in a thread, its progress kept in a plain object.

The registry lives in ``st.cache_resource`` (one per server process), keyed by workspace token
and job name, so a reloaded page (same token in its URL) finds its running job again. A job's
thread never calls ``st.*``: it only updates the :class:`Job`'s fields; pages read them from a
``@st.fragment(run_every=...)``. Cancelling sets a flag that the progress callback checks; it
raises :class:`Cancelled` inside the engine call, which keeps what it already saved on disk.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

log = logging.getLogger("uif_explorer.app")

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"


class Cancelled(Exception):
    """Raised from a job's progress callback after the user pressed Cancel."""


@dataclass
class Job:
    """One background engine call; the thread writes, pages read."""

    workspace: str
    name: str
    label: str = ""
    status: str = RUNNING
    done: int = 0
    total: int | None = None
    info: dict = field(default_factory=dict)
    result: Any = None
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    first_step_at: float | None = None
    cancel_requested: bool = False
    serial: int = 0
    queued: bool = False  # waiting for a free job slot (see JobRegistry)

    # -- called by the engine (in the job's thread) --------------------------------------
    def progress(self, done: int, total: int | None, info: dict | None = None) -> None:
        """The engine's ``progress(done, total, info)`` callback; raises after a cancel."""
        if self.cancel_requested:
            raise Cancelled(f"{self.label or self.name} cancelled")
        if self.first_step_at is None:
            self.first_step_at = time.monotonic()
            self._first_done = done
        self.done, self.total = int(done), total
        self.info = dict(info or {})
        self._info_at = time.monotonic()

    # -- read by pages ---------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def fraction(self) -> float:
        if not self.total:
            return 0.0
        return max(0.0, min(1.0, self.done / self.total))

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def eta_s(self) -> float | None:
        """Seconds left: the engine's estimate (core/eta.py) counted down since it came, else
        the mean time per step since the first (None until two steps)."""
        if not self.total or self.first_step_at is None or not self.running:
            return None
        if isinstance(self.info.get("eta_s"), (int, float)):  # the engine's, cost-weighted
            return max(0.0, self.info["eta_s"] - (time.monotonic() - self._info_at))
        steps = self.done - getattr(self, "_first_done", 0)
        if steps <= 0:
            return None
        per_step = (time.monotonic() - self.first_step_at) / steps
        return per_step * max(0, self.total - self.done)

    def cancel(self) -> None:
        self.cancel_requested = True


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "estimating..."
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"


def describe(job: Job) -> str:
    """'12 / 25 evaluations · 14 s elapsed · about 16 s left'."""
    if job.queued:
        return (f"queued for {format_seconds(job.elapsed_s)}: other jobs use this server's "
                "CPU cores; it starts when one ends")
    total = "?" if job.total is None else f"{job.total:,}"
    return (f"{job.done:,} / {total} steps · {format_seconds(job.elapsed_s)} elapsed · "
            f"about {format_seconds(job.eta_s)} left")


def max_parallel_jobs() -> int:
    """Jobs that run at once (``UIF_MAX_JOBS``; default: one per CPU core).

    More jobs than cores only slow each other down and starve the server's own thread, which
    answers health checks and serves pages (bench/load_test.py); the rest wait in a queue.
    """
    try:
        return max(1, int(os.environ.get("UIF_MAX_JOBS", "")))
    except ValueError:
        return max(1, os.cpu_count() or 1)


class JobRegistry:
    """All jobs of the server process, by (workspace token, job name)."""

    def __init__(self, slots: int | None = None) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, str], Job] = {}
        self._serial = 0
        self._slots = threading.Semaphore(slots or max_parallel_jobs())

    def get(self, workspace: str, name: str) -> Job | None:
        with self._lock:
            return self._jobs.get((workspace, name))

    def start(self, workspace: str, name: str, fn: Callable[[Job], Any],
              label: str = "") -> Job:
        """Run ``fn(job)`` in a daemon thread; a job of that name still running is returned."""
        with self._lock:
            old = self._jobs.get((workspace, name))
            if old is not None and old.running:
                return old
            self._serial += 1
            job = Job(workspace=workspace, name=name, label=label or name, serial=self._serial)
            self._jobs[(workspace, name)] = job
        thread = threading.Thread(target=self._run, args=(job, fn), daemon=True,
                                  name=f"uif-job-{name}")
        thread.start()
        return job

    def _run(self, job: Job, fn: Callable[[Job], Any]) -> None:
        job.queued = True
        while not self._slots.acquire(timeout=0.2):
            if job.cancel_requested:
                job.queued = False
                job.status, job.finished = CANCELLED, time.monotonic()
                return
        job.queued = False
        try:
            job.result = fn(job)
            job.status = DONE
        except Cancelled:
            job.status = CANCELLED
        except Exception as exc:  # noqa: BLE001 - reported on the page, traceback to the log
            log.error("job %s failed", job.name, exc_info=exc)
            first = (str(exc).strip().splitlines() or ["no details"])[0][:300]
            job.error = f"{type(exc).__name__}: {first}"
            job.status = FAILED
        finally:
            job.finished = time.monotonic()
            self._slots.release()

    def forget(self, workspace: str, name: str) -> None:
        with self._lock:
            job = self._jobs.get((workspace, name))
            if job is not None and not job.running:
                del self._jobs[(workspace, name)]

    def wait(self, workspace: str, name: str, timeout: float = 600.0) -> Job | None:
        """Block until the job ends (tests and scripts; pages never wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(workspace, name)
            if job is None or not job.running:
                return job
            time.sleep(0.1)
        return self.get(workspace, name)


@st.cache_resource
def registry() -> JobRegistry:
    """The server's one job registry (shared by all sessions; keyed by workspace token)."""
    return JobRegistry()


# -- widgets shared by the pages ---------------------------------------------------------------
def progress_block(job: Job | None, what: str) -> None:
    """A running job's progress bar (steps, elapsed, time left) and Cancel button; a failed
    or cancelled job's message. Nothing for no job or a finished one (the page shows results).
    """
    from uif_explorer.ui import errors

    if job is None:
        return
    if job.running:
        st.progress(job.fraction, text=f"{what}: {describe(job)}")
        if st.button("Cancel", key=f"cancel_{job.name}", icon=":material/stop:"):
            job.cancel()
            st.toast("Cancelling after the current step...")
    elif job.status == FAILED:
        errors.show(f"{what} stopped: {job.error}. What was saved is kept; fix the cause "
                    "(see the message) and start it again to resume.")
    elif job.status == CANCELLED:
        st.info(f"{what} cancelled after {job.done} steps; saved steps are kept, start it "
                "again to resume.", icon=":material/info:")


SEEN_KEY = "jobs_seen"
"""Session key: job name -> serial of the run whose end this session has already drawn."""


def rerun_when_finished(job: Job | None) -> None:
    """Called from a polling fragment: when its job has ended, redraw the whole page once
    (so buttons, sliders and results outside the fragment catch up)."""
    if job is not None and not job.running:
        seen = st.session_state.setdefault(SEEN_KEY, {})
        if seen.get(job.name) != job.serial:
            seen[job.name] = job.serial
            st.rerun()


def poll(job: Job | None, body: Callable[[], None], every: float = 1.5) -> None:
    """Run ``body`` (which should call :func:`rerun_when_finished`) in a fragment refreshed
    every ``every`` seconds while ``job`` runs; else once, marking a finished job as seen."""
    if job is not None and job.running:
        st.fragment(body, run_every=every)()
    else:
        if job is not None:
            st.session_state.setdefault(SEEN_KEY, {})[job.name] = job.serial
        body()

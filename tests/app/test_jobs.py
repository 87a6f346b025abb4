"""Background jobs beyond the CPU count wait in a queue, and a queued job can be cancelled."""

from __future__ import annotations

import threading

from uif_explorer.ui import jobs


def test_jobs_beyond_the_slots_queue_and_run_in_turn() -> None:
    reg = jobs.JobRegistry(slots=1)
    release = threading.Event()
    order: list[str] = []

    def first(job: jobs.Job) -> str:
        order.append("first")
        release.wait(10)
        return "a"

    def second(job: jobs.Job) -> str:
        order.append("second")
        return "b"

    reg.start("ws", "a", first)
    b = reg.start("ws", "b", second)
    deadline = threading.Event()
    deadline.wait(0.5)
    assert order == ["first"] and b.queued and b.running
    assert "queued" in jobs.describe(b)
    release.set()
    assert reg.wait("ws", "a", 10).result == "a"
    assert reg.wait("ws", "b", 10).result == "b"
    assert order == ["first", "second"] and not b.queued


def test_a_queued_job_can_be_cancelled_and_frees_nothing() -> None:
    reg = jobs.JobRegistry(slots=1)
    release = threading.Event()
    reg.start("ws", "busy", lambda job: release.wait(10))
    ran: list[int] = []
    waiting = reg.start("ws", "waiting", lambda job: ran.append(1))
    waiting.cancel()
    assert reg.wait("ws", "waiting", 10).status == jobs.CANCELLED
    release.set()
    reg.wait("ws", "busy", 10)
    reg.start("ws", "after", lambda job: "ok")  # the slot came back
    assert reg.wait("ws", "after", 10).result == "ok" and ran == []


def test_max_parallel_jobs_reads_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("UIF_MAX_JOBS", "3")
    assert jobs.max_parallel_jobs() == 3
    monkeypatch.setenv("UIF_MAX_JOBS", "nonsense")
    assert jobs.max_parallel_jobs() >= 1

"""Start the app exactly as the README does (``./run.sh``) and drive Debian's Chromium at it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import apprun
import pytest
from apprun import CHROMIUM, CHROMIUM_ARGS, REPO_ROOT, health

ARTIFACTS = REPO_ROOT / "test-artifacts"
STARTUP_TIMEOUT_S = 120


def _log_tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "<no log>"


@pytest.fixture(scope="session")
def app_url() -> Iterator[str]:
    """URL of a running app started by ``./run.sh`` on a free port; stopped after the session."""
    ARTIFACTS.mkdir(exist_ok=True)
    # one log per pytest-xdist worker ("gw0", ...): parallel workers each start their own app
    log_path = ARTIFACTS / f"app-server-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.log"
    proc, url = apprun.start(log_path)
    try:
        problem = apprun.wait_ready(proc, url, STARTUP_TIMEOUT_S)
        if problem:
            pytest.fail(f"{problem}.\nServer log ({log_path}):\n{_log_tail(log_path)}")
        yield url
    finally:
        apprun.stop(proc)


@pytest.fixture
def app_health(app_url: str) -> Callable[[], str]:
    """Ask the running app's health endpoint: ``app_health() == "ok"`` while it is up."""
    return lambda: health(app_url)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Debian's Chromium is not at {CHROMIUM} (apt-get install chromium)")
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "headless": True,
        "args": CHROMIUM_ARGS,
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    return {**browser_context_args, "viewport": {"width": 1440, "height": 1100}}

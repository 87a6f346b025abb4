"""Start the app exactly as the README does (``./run.sh``) and drive Debian's Chromium at it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STARTUP_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def health(url: str) -> str:
    """The body of ``/_stcore/health`` (``"ok"`` when the server is ready), or the error."""
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=3) as resp:
            return resp.read().decode().strip()
    except OSError as exc:
        return f"<{type(exc).__name__}: {exc}>"


def _log_tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "<no log>"


@pytest.fixture(scope="session")
def app_url() -> Iterator[str]:
    """URL of a running app started by ``./run.sh`` on a free port; stopped after the session."""
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / "app-server.log"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "UIF_PORT": str(port)}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            ["./run.sh"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while health(url) != "ok":
            if proc.poll() is not None:
                pytest.fail(
                    f"./run.sh exited with code {proc.returncode} before the app answered.\n"
                    f"Server log ({log_path}):\n{_log_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"The app did not answer {url}/_stcore/health within {STARTUP_TIMEOUT_S} s.\n"
                    f"Server log ({log_path}):\n{_log_tail(log_path)}"
                )
            time.sleep(0.5)
        yield url
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """Terminate run.sh's whole process group (the server and anything it started)."""
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


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

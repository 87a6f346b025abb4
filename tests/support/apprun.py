"""Start and stop the app exactly as the README does (``./run.sh``), for tests and benchmarks.

The browser tests, ``bench/load_test.py`` and ``bench/app_timing.py`` all need a real server
on a free port, its health endpoint and a clean stop of ``run.sh``'s process group, and the
headless Chromium settings that work in this environment; they live here once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def health(url: str, timeout: float = 3.0) -> str:
    """The body of ``/_stcore/health`` (``"ok"`` when the server is ready), or the error."""
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=timeout) as resp:
            return resp.read().decode().strip()
    except OSError as exc:
        return f"<{type(exc).__name__}: {exc}>"


def start(log: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``./run.sh`` on a free port in its own process group; (process, url). Not waited for."""
    port = free_port()
    full_env = {**os.environ, "UIF_PORT": str(port), **(env or {})}
    with Path(log).open("w") as fh:
        proc = subprocess.Popen(["./run.sh"], cwd=REPO_ROOT, env=full_env, stdout=fh,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 180.0) -> str | None:
    """None once health says ok; else why not (the server exited, or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while health(url) != "ok":
        if proc.poll() is not None:
            return f"./run.sh exited with code {proc.returncode} before the app answered"
        if time.monotonic() > deadline:
            return f"the app did not answer {url}/_stcore/health within {timeout:.0f} s"
        time.sleep(0.2)
    return None


def stop(proc: subprocess.Popen) -> None:
    """Stop run.sh's own process group (the server it started), nothing else."""
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

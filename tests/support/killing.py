"""Start a test's child script and SIGKILL it at a chosen point.

The crash-safety tests check what a hard kill (no ``finally``, no cleanup) leaves in a
workspace: the child counts its evaluations or fine-tunes in a file, one character each, and
the test kills it once that count is reached.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def start_child(workdir: Path, code: str, *args: str,
                env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Write ``code`` to ``workdir/child.py`` and run it with ``args`` in a fresh interpreter
    that imports this checkout (plus ``env``); its output is discarded."""
    script = workdir / "child.py"
    script.write_text(code)
    return subprocess.Popen([sys.executable, str(script), *args],
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_when_counted(proc: subprocess.Popen, counter: Path, count: int | None,
                      timeout: float) -> None:
    """SIGKILL ``proc`` once ``counter`` holds ``count`` marks (``None``: the child kills
    itself), then check that it died by that signal. Never leaves the child running."""
    try:
        deadline = time.time() + timeout
        while count is not None and time.time() < deadline and proc.poll() is None:
            if counter.exists() and len(counter.read_text()) >= count:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, (
        f"Expected the child to die by SIGKILL. Received: returncode={proc.returncode}")

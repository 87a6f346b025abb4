"""The workspace folder (``.vai/`` by default): file names and atomic, crash-safe writes.

The API, the CLI and the app read and write the same files here (see ``docs/file-formats.md``).
Every write goes to a temporary file in the same folder, is fsynced and renamed over the
target, so a crash at any instant leaves either the old file or the new one, never half.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
_NAME_OK = re.compile(r"[^A-Za-z0-9_.-]+")


class WorkspaceError(RuntimeError):
    """A workspace file is missing, corrupt or made for something else."""


def sanitize_name(name: str) -> str:
    """Keep ``[A-Za-z0-9_.-]``; never an empty name or one that walks up folders."""
    clean = _NAME_OK.sub("_", str(name)).strip("._") or "model"
    return clean[:120]


def format_ratio(ratio: float) -> str:
    """0.5 -> '0.5', 0.25 -> '0.25', 0.3333 -> '0.333' (3 decimals, no trailing zeros)."""
    if not isinstance(ratio, (int, float)) or math.isnan(ratio):
        raise ValueError(f"Expected a number. Received: ratio={ratio!r}")
    text = f"{round(float(ratio), 3):.3f}".rstrip("0").rstrip(".")
    return text or "0"


KILL_AFTER_TMP_ENV = "UIF_TEST_KILL_AFTER_TMP"
"""Test-only hook: ``UIF_TEST_KILL_AFTER_TMP=n`` SIGKILLs the process right after the n-th
temporary file of this process is written and fsynced, before its rename, so tests can prove
that a crash at the worst instant leaves the old file (``tests/security/test_interruptions.py``).
Unset (always, outside tests) it costs one environment lookup per write."""
_tmp_files_written = 0


def _kill_hook() -> None:
    global _tmp_files_written
    value = os.environ.get(KILL_AFTER_TMP_ENV)
    if not value:
        return
    _tmp_files_written += 1
    if _tmp_files_written == int(value):
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (the folder entry), not only the file's bytes."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_with(path: str | os.PathLike, write_fn: Callable[[str], object],
                      suffix: str = ".tmp") -> Path:
    """Let ``write_fn(tmp)`` write a temporary file next to ``path``, then fsync it, rename it
    over ``path`` and fsync the folder: a crash at any instant leaves the old file or the new.

    ``suffix`` is the temporary file's ending (exporters that pick the format from the file
    name need the real one, e.g. ``.keras``). The temporary file starts with ``.<name>.`` and is
    removed when ``write_fn`` fails; only a killed process can leave one behind (never read).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _kill_hook()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write_with`)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    atomic_write_with(path, write)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """JSON (no NaN: strict readers must parse it) written atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode())


def read_json(path: Path, kind: str | None = None) -> Any:
    """Read a workspace JSON file; a corrupt file or one of another kind is a clear error."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise WorkspaceError(
            f"{path} is not a readable JSON file ({exc}); delete it or rerun with forced=True."
        ) from exc
    if kind is not None and (not isinstance(data, dict) or data.get("kind") != kind):
        raise WorkspaceError(f"{path} is not a {kind} file.")
    return data


class Workspace:
    """Names of the files of one workspace folder."""

    def __init__(self, root: str | os.PathLike = ".vai") -> None:
        self.root = Path(root)

    def sens(self, model: str) -> Path:
        return self.root / f"{sanitize_name(model)}.sens"

    def search(self, model: str, ratio: float, target: str = "macs") -> Path:
        """A latency-targeted search (``target='latency'``) gets its own ``_latency`` file."""
        tag = "_latency" if target == "latency" else ""
        return self.root / f"{sanitize_name(model)}_ratio_{format_ratio(ratio)}{tag}.search"

    def spec(self, model: str, ratio: float | None = None, threshold: float | None = None,
             candidate: str | None = None, target: str = "macs") -> Path:
        base = sanitize_name(model)
        if threshold is not None:
            return self.root / f"{base}_threshold_{format_ratio(threshold)}.spec"
        suffix = ("_latency" if target == "latency" else "") + (
            f"_{candidate}" if candidate is not None else "")
        return self.root / f"{base}_ratio_{format_ratio(ratio)}{suffix}.spec"

    def latency(self, model: str, runtime: str = "eager") -> Path:
        """The model's latency table on this machine (rebuilt when machine or graph change)."""
        return self.root / f"{sanitize_name(model)}_{sanitize_name(runtime)}.latency"

    def evolution(self, model: str) -> Path:
        return self.root / f"{sanitize_name(model)}_evolution.json"

    @property
    def latest_spec_file(self) -> Path:
        return self.root / "latest_spec"

    def write_latest_spec(self, spec_path: Path) -> None:
        """``latest_spec`` holds the newest spec's path as a bare JSON string (the guide's)."""
        rel = os.path.relpath(Path(spec_path).resolve(), self.root.resolve())
        atomic_write_json(self.latest_spec_file, str(Path(self.root.name) / rel)
                          if not os.path.isabs(rel) else rel)

    def latest_spec(self) -> Path:
        if not self.latest_spec_file.exists():
            raise WorkspaceError(
                f"No {self.latest_spec_file}: prune a model first, or pass spec_path explicitly."
            )
        value = read_json(self.latest_spec_file)
        if not isinstance(value, str):
            raise WorkspaceError(f"{self.latest_spec_file} must hold a path string.")
        candidate = self.root.parent / value
        return candidate if candidate.exists() else self.root / Path(value).name

"""Interruptions: a real process SIGKILLed mid-search leaves old-or-new files and resumes.

The analysis and the one-step search are killed the same way in ``tests/torch/test_runners.py``
(``test_sigkill_then_resume``); here the OFA evolutionary search on the bundled ResNet-20
supernet is killed (a) by the parent after some evaluations and (b) by itself right after a
temporary file was written and fsynced but before its rename (``UIF_TEST_KILL_AFTER_TMP``, the
workspace writer's test hook). The rerun evaluates only the candidates not saved, and its file
equals an uninterrupted run's. The atomic writer itself is checked to fsync and to clean up.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from killing import kill_when_counted, start_child

from uif_explorer.io import workspace as ws
from uif_explorer.io.workspace import KILL_AFTER_TMP_ENV, atomic_write_bytes, atomic_write_with

REPO = Path(__file__).resolve().parents[2]
SEARCH_ARGS = dict(metric="acc1", mode="max", macs_step=2, parent_popu_size=3, iteration=1,
                   mutate_size=2, crossover_size=1, name="r20")
TOTAL = 3 + 1 * (2 + 1)  # initial population + one generation
VOLATILE = ("seconds",)

CHILD = textwrap.dedent("""
    import json, os, sys
    from uif_explorer.data import torch_loader
    from uif_explorer.torch.evaluation import top1_accuracy
    from uif_explorer.torch.ofa import load_bundled_supernet, run_evolutionary_search

    workdir, args = sys.argv[1], json.loads(sys.argv[2])
    counter = os.path.join(workdir, "evals.count")
    loader = torch_loader("test", limit=32, batch_size=32)
    _, ofa = load_bundled_supernet("resnet20")

    def counted(model, dl):
        with open(counter, "a") as fh:
            fh.write("x")
        return top1_accuracy(model, dl)

    run_evolutionary_search(ofa, None, (), counted, (loader,), workdir=workdir, **args)
""")


def _stable(data: dict) -> dict:
    """The file without what legitimately differs between runs (timing, worker pids)."""
    data = {k: v for k, v in data.items() if k not in VOLATILE}
    data["history"] = [{k: v for k, v in r.items() if k != "worker_pid"}
                       for r in data["history"]]
    return data


def _child(workdir: Path, kill_after_evals: int | None = None,
           kill_after_tmp: int | None = None) -> None:
    """Run the search in a fresh Python process and SIGKILL it."""
    env = {} if kill_after_tmp is None else {KILL_AFTER_TMP_ENV: str(kill_after_tmp)}
    proc = start_child(workdir, CHILD, str(workdir), json.dumps(SEARCH_ARGS), env=env)
    kill_when_counted(proc, workdir / "evals.count", kill_after_evals, timeout=300)


@pytest.fixture(scope="module")
def supernet():
    from uif_explorer.data import torch_loader
    from uif_explorer.torch.ofa import load_bundled_supernet

    _, ofa = load_bundled_supernet("resnet20")
    return ofa, torch_loader("test", limit=32, batch_size=32)


def _search(supernet, workdir: Path, calls: list[int]) -> dict:
    from uif_explorer.torch.evaluation import top1_accuracy
    from uif_explorer.torch.ofa import run_evolutionary_search

    ofa, loader = supernet

    def counted(model, dl):
        calls.append(1)
        return top1_accuracy(model, dl)

    result = run_evolutionary_search(ofa, None, (), counted, (loader,), workdir=workdir,
                                     **SEARCH_ARGS)
    return json.loads(Path(result.path).read_text())


@pytest.fixture(scope="module")
def clean_run(supernet, tmp_path_factory) -> dict:
    calls: list[int] = []
    data = _search(supernet, tmp_path_factory.mktemp("clean"), calls)
    assert len(calls) == TOTAL == len(data["history"])
    return data


@pytest.mark.slow
@pytest.mark.parametrize("how", ["evals", "before_rename"])
def test_evolutionary_search_sigkill_then_resume(tmp_path, supernet, clean_run, how):
    if how == "evals":
        _child(tmp_path, kill_after_evals=2)
    else:
        _child(tmp_path, kill_after_tmp=3)  # the 3rd write: fsynced, never renamed
    path = tmp_path / "r20_evolution.json"
    saved = json.loads(path.read_text())  # old or new, never half-written
    assert saved["kind"] == "uif-explorer-evolution" and not saved["complete"]
    done = len(saved["history"])
    assert 0 < done < TOTAL
    if how == "before_rename":
        tmps = sorted(tmp_path.glob(".r20_evolution.json.*.tmp"))
        assert len(tmps) == 1  # the killed write: complete and fsynced, but never renamed
        newer = json.loads(tmps[0].read_text())
        assert len(newer["history"]) == done + 1
        assert len((tmp_path / "evals.count").read_text()) == done + 1
    calls: list[int] = []
    resumed = _search(supernet, tmp_path, calls)
    assert len(calls) == TOTAL - done  # only the candidates not saved are evaluated
    assert _stable(resumed) == _stable(clean_run)


# -- the writer itself ----------------------------------------------------------------------
def test_atomic_writer_fsyncs_file_then_renames_then_fsyncs_folder(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        events.append(("fsync", "dir" if os.path.isdir(target) else Path(target).name))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = tmp_path / "a.sens"
    atomic_write_bytes(path, b"old")
    assert path.read_bytes() == b"old"
    kinds = [e[0] for e in events]
    assert kinds == ["fsync", "replace", "fsync"], events
    assert events[0][1].startswith(".a.sens.") and events[0][1].endswith(".tmp")
    assert events[2] == ("fsync", "dir")


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "model.pt2"
    atomic_write_bytes(path, b"old")

    def broken(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write_with(path, broken, suffix=".pt2")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2"]


def test_exporters_use_the_one_atomic_writer(tmp_path, monkeypatch):
    """``export._via_tmp`` and ``keras.export`` write through ``atomic_write_with``."""
    import inspect

    from uif_explorer.torch import export

    used: list[str] = []
    real = ws.atomic_write_with

    def spy(path, write_fn, suffix=".tmp"):
        used.append(suffix)
        return real(path, write_fn, suffix)

    monkeypatch.setattr(export, "atomic_write_with", spy)
    out = export._via_tmp(tmp_path / "m.onnx", lambda p: Path(p).write_bytes(b"onnx"))
    assert out.read_bytes() == b"onnx" and used == [".onnx"]
    keras_src = (REPO / "uif_explorer" / "keras" / "export.py").read_text()
    assert "atomic_write_with(" in keras_src and "mkstemp" not in keras_src
    assert "mkstemp" not in inspect.getsource(export)


def test_kill_hook_is_inert_unless_set(tmp_path, monkeypatch):
    monkeypatch.delenv(KILL_AFTER_TMP_ENV, raising=False)
    for i in range(3):
        atomic_write_bytes(tmp_path / "x", str(i).encode())
    assert (tmp_path / "x").read_bytes() == b"2"

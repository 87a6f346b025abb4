"""The example notebooks run top to bottom (nbclient, a kernel on this very interpreter).

The kernelspec is written into a temporary prefix that points at ``sys.executable``, so the
notebooks run in the project's environment from a fresh clone (no ``jupyter kernelspec
install`` needed, whatever ``python3`` kernel the machine has). Each runs in a temporary working
directory with ``UIF_NOTEBOOK_WORKDIR`` there, and must leave no file in the repository. A
failing cell raises ``CellExecutionError`` and fails the test. The notebooks must also be what
``examples/make_notebooks.py`` writes (no hand edits, no committed outputs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
KERNEL = "uif-explorer-tests"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernelspec for this interpreter in a temporary JUPYTER_PATH entry."""
    from ipykernel.kernelspec import install

    prefix = tmp_path_factory.mktemp("jupyter")
    install(kernel_name=KERNEL, prefix=str(prefix), display_name="UIF Explorer (tests)")
    spec = prefix / "share" / "jupyter" / "kernels" / KERNEL / "kernel.json"
    argv = json.loads(spec.read_text())["argv"]
    assert argv[0] == sys.executable
    return prefix / "share" / "jupyter"


def _repo_files() -> set[str]:
    """Where a notebook could litter: examples/, the repository root and its ``.vai``.

    (Not ``git status``: other work in the same checkout may change it meanwhile.)
    """
    # other tests' own outputs (app servers' workspaces, browser artifacts) may appear meanwhile
    # when the suite runs in parallel: they are not the notebook's
    others = {"workspaces", "test-artifacts", ".pytest_cache", ".ruff_cache"}
    files = {str(p) for p in EXAMPLES.iterdir()} | {
        str(p) for p in REPO.iterdir() if p.name not in others}
    if (REPO / ".vai").is_dir():
        files |= {str(p) for p in (REPO / ".vai").rglob("*")}
    return files


def run_notebook(name: str, kernel_path: Path, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch, timeout: int = 600) -> object:
    import nbformat
    from nbclient import NotebookClient

    work = tmp_path / "run"
    work.mkdir()
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_path))
    monkeypatch.setenv("UIF_NOTEBOOK_WORKDIR", str(tmp_path / "workspace"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=timeout,
                            resources={"metadata": {"path": str(work)}})
    before = _repo_files()
    client.execute()
    assert _repo_files() == before, "the notebook wrote files into the repository"
    assert not list(work.iterdir()), "the notebook wrote into its working directory"
    return nb


def _outputs(nb: object) -> str:
    texts = []
    for cell in nb.cells:  # type: ignore[attr-defined]
        for out in cell.get("outputs", []):
            texts.append(str(out.get("text", "")))
            texts.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(texts)


def test_notebooks_are_generated_and_have_no_outputs() -> None:
    out = subprocess.run([sys.executable, str(EXAMPLES / "make_notebooks.py"), "--check"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in ("pytorch_iterative_one_step.ipynb", "ofa_mobilenetv2.ipynb",
                 "keras_iterative.ipynb"):
        nb = json.loads((EXAMPLES / name).read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


@pytest.mark.slow
def test_pytorch_notebook_runs(kernel_env: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    nb = run_notebook("pytorch_iterative_one_step.ipynb", kernel_env, tmp_path, monkeypatch)
    text = _outputs(nb)
    assert "after fine-tuning" in text and "best candidate" in text
    assert _figures(nb) == 4  # sensitivity, widths, candidates, candidate ratios
    ws = tmp_path / "workspace"
    assert list(ws.glob("*.sens")) and list(ws.glob("*_ratio_0.3.search"))
    assert (ws / "latest_spec").exists()


def _figures(nb: object) -> int:
    return sum(1 for cell in nb.cells  # type: ignore[attr-defined]
               for out in cell.get("outputs", [])
               if "application/vnd.plotly.v1+json" in out.get("data", {}))


@pytest.mark.slow
def test_ofa_notebook_runs(kernel_env: Path, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    nb = run_notebook("ofa_mobilenetv2.ipynb", kernel_env, tmp_path, monkeypatch)
    text = _outputs(nb)
    assert "static vs dynamic relative error" in text and "subnets evaluated" in text
    assert _figures(nb) == 3  # the bundled search, the same with the entry, the new search
    assert list((tmp_path / "workspace").glob("*_evolution.json"))


@pytest.mark.slow
@pytest.mark.tf
def test_keras_notebook_runs(kernel_env: Path, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    nb = run_notebook("keras_iterative.ipynb", kernel_env, tmp_path, monkeypatch)
    text = _outputs(nb)
    assert "slim vs sparse" in text and "after a few fit() steps" in text
    assert _figures(nb) == 3  # sensitivity, widths, candidates
    ws = tmp_path / "workspace"
    assert list(ws.glob("*.sens")) and list(ws.glob("*_ratio_0.2.spec"))

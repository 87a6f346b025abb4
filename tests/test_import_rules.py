"""The layout's import rules (docs/architecture.md), checked on the source and at runtime:

- ``uif_explorer/core`` imports no framework (torch, TensorFlow, Keras) and no streamlit, and no
  backend or app package of this project: it must import in a process where those are absent;
- the PyTorch backend and the Keras backend never import each other;
- nothing but ``pages/``, ``app.py`` and ``uif_explorer/ui/`` imports streamlit;
- TensorFlow / Keras are imported at module level only by the Keras backend, the Keras sample
  models and the Keras service backend, so a PyTorch session never loads them by importing.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "uif_explorer"
FRAMEWORKS = ("torch", "torchvision", "tensorflow", "keras", "tf_keras")
STREAMLIT_OK = ("pages/", "app.py", "uif_explorer/ui/")
KERAS_AT_TOP_OK = ("uif_explorer/keras/", "uif_explorer/models/keras_models.py",
                   "uif_explorer/services/keras_backend.py")


def _imports(path: Path, top_only: bool = False) -> Iterator[tuple[int, str]]:
    """(line, module) of every absolute import in ``path`` (relative ones resolved inside the
    package); ``top_only``: only those run when the module is imported (not in functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])

    def visit(nodes: list[ast.stmt]) -> Iterator[ast.stmt]:
        for node in nodes:
            yield node
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and top_only:
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                yield from visit([n for n in getattr(node, field, []) or []
                                  if isinstance(n, (ast.stmt, ast.excepthandler))])

    for node in visit(tree.body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield node.lineno, ".".join([*base, node.module or ""]).rstrip(".")
            elif node.module:
                yield node.lineno, node.module


def _sources(folder: str) -> list[Path]:
    files = sorted((REPO / folder).rglob("*.py")) if (REPO / folder).is_dir() else []
    return [f for f in files if "__pycache__" not in f.parts]


def _offenders(files: list[Path], banned: tuple[str, ...], top_only: bool = False) -> list[str]:
    found = []
    for path in files:
        for line, module in _imports(path, top_only):
            if any(module == b or module.startswith(b + ".") for b in banned):
                found.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return found


def test_the_checker_sees_imports_inside_functions() -> None:
    found = {m for _, m in _imports(PACKAGE / "services" / "backends.py")}
    assert "uif_explorer.services.torch_backend" in found  # imported inside backend_for
    top = {m for _, m in _imports(PACKAGE / "services" / "backends.py", top_only=True)}
    assert "uif_explorer.services.torch_backend" not in top


def test_core_imports_no_framework_no_streamlit_and_no_backend() -> None:
    banned = (*FRAMEWORKS, "streamlit", "uif_explorer.torch", "uif_explorer.keras",
              "uif_explorer.ui", "uif_explorer.services", "uif_explorer.cli")
    files = _sources("uif_explorer/core")
    assert len(files) > 5
    assert _offenders(files, banned) == []


def test_core_modules_import_with_frameworks_and_streamlit_blocked() -> None:
    """The import-time proof: a finder refuses torch, TensorFlow, Keras and streamlit, then
    every ``uif_explorer.core`` module is imported."""
    modules = sorted("uif_explorer.core." + p.stem for p in _sources("uif_explorer/core")
                     if p.stem != "__init__")
    code = f"""
import importlib, importlib.abc, sys

BLOCKED = {(*FRAMEWORKS, "streamlit")!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked for this test: {{name}}")
        return None

sys.meta_path.insert(0, Block())
for name in {modules!r}:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
print("imported", len({modules!r}))
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == f"imported {len(modules)}"


def test_the_finder_really_blocks() -> None:
    code = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("blocked")
sys.meta_path.insert(0, Block())
import uif_explorer.torch.apply
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode != 0 and "blocked" in res.stderr


@pytest.mark.parametrize(("backend", "other"), [
    ("uif_explorer/torch", ("uif_explorer.keras", "keras", "tensorflow", "tf_keras")),
    ("uif_explorer/keras", ("uif_explorer.torch", "torch", "torchvision")),
])
def test_the_torch_and_keras_backends_never_import_each_other(backend: str,
                                                               other: tuple[str, ...]) -> None:
    files = _sources(backend)
    assert files
    assert _offenders(files, other) == []


def test_services_backends_do_not_import_each_other() -> None:
    services = PACKAGE / "services"
    assert _offenders([services / "torch_backend.py"],
                      ("keras", "tensorflow", "uif_explorer.keras",
                       "uif_explorer.services.keras_backend")) == []
    assert _offenders([services / "keras_backend.py"],
                      ("torch", "uif_explorer.torch",
                       "uif_explorer.services.torch_backend")) == []


def test_only_pages_app_and_ui_import_streamlit() -> None:
    files = [p for p in _sources("uif_explorer") + _sources("pages") + [REPO / "app.py"]
             if not str(p.relative_to(REPO)).startswith(STREAMLIT_OK)]
    assert any("services" in p.parts for p in files) and any("cli" in p.parts for p in files)
    assert _offenders(files, ("streamlit",)) == []
    ui = _sources("uif_explorer/ui")
    assert _offenders(ui, ("streamlit",))  # the rule is not vacuous: ui/ does import it


def test_tensorflow_is_imported_at_module_level_only_by_keras_modules() -> None:
    files = [p for p in _sources("uif_explorer")
             if not str(p.relative_to(REPO)).startswith(KERAS_AT_TOP_OK)]
    assert _offenders(files, ("keras", "tensorflow", "tf_keras", "uif_explorer.keras",
                              "uif_explorer.services.keras_backend"), top_only=True) == []


def test_core_tests_run_with_frameworks_blocked():
    """The whole tests/core suite passes in a process where torch, TensorFlow, Keras and
    streamlit cannot be imported (no conftest: the root one imports torch on purpose)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests" / "support")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "block_frameworks", "--noconftest",
         "-p", "no:cacheprovider", "-m", "not slow", str(REPO / "tests" / "core")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout

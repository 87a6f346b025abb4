"""The corpus's hostile and broken image-folder zips (issue 17) through the API.

Each one is refused with one clear message (``ImageFolderError``, a ``ValueError``) that names
the problem, and leaves the workspace exactly as it was: no destination folder, no temporary
folder, the files already there unchanged byte for byte, nothing written outside it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from make_corpus import Case, build_corpus
from test_corpus_api import refuse_all, snapshot

from uif_explorer.io.image_data import load_image_data
from uif_explorer.io.image_folder import ImageFolderError, extract_image_zip


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    found = [c for c in build_corpus(tmp_path_factory.mktemp("corpus"))
             if c.target == "image_folder"]
    assert len(found) >= 20
    return found


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A workspace with files of its own and an earlier dataset, under a folder whose
    siblings a traversal would reach."""
    ws = tmp_path / "outer" / "ws"
    (ws / "datasets" / "earlier" / "cats").mkdir(parents=True)
    (ws / "datasets" / "earlier" / "cats" / "a.png").write_bytes(b"\x89PNG kept")
    (ws / "r20.sens").write_text('{"kept": true}')
    return ws


def test_every_broken_archive_is_refused_and_changes_nothing(cases, workspace):
    before = snapshot(workspace.parent.parent)
    dest = workspace / "datasets" / "new"
    refuse_all(cases, lambda c: extract_image_zip(c.data, dest, c.args.get("num_outputs")),
               (ImageFolderError,))
    assert snapshot(workspace.parent.parent) == before
    assert sorted(p.name for p in (workspace / "datasets").iterdir()) == ["earlier"]


def test_the_one_call_api_refuses_them_before_writing(cases, workspace):
    """``load_image_data`` (what the app and the CLI call) gives the same refusals."""
    before = snapshot(workspace)
    refuse_all(cases, lambda c: load_image_data(
        c.data, (1, 3, 16, 16), "NCHW", "imagenet", dest=workspace / "datasets" / "new",
        num_outputs=c.args.get("num_outputs")), (ImageFolderError,))
    assert snapshot(workspace) == before


def test_positive_control(cases, workspace):
    """The class-count case's archive is otherwise good: with the right count it extracts,
    so the refusals above come from the checks, not from a broken pipeline."""
    case = next(c for c in cases if c.args.get("num_outputs") == 10)
    data = load_image_data(case.data, (1, 3, 16, 16), "NCHW", "imagenet",
                           dest=workspace / "datasets" / "new", num_outputs=2)
    assert data.classes == ("cats", "dogs") and len(data.folder) == 4
    assert data.arrays("evaluation")[0].shape[1:] == (3, 16, 16)

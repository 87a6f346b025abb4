"""Workspace tokens: the only key to a session's folder, never a path a user can steer."""

from __future__ import annotations

from pathlib import Path

import pytest

from uif_explorer.io.workspace import Workspace, sanitize_name
from uif_explorer.ui import workspace

BAD_TOKENS = [
    "", "short", "../../etc/passwd", "..", "../" + "a" * 20, "a" * 20 + "/..",
    "a" * 20 + "\\..\\x", "/" + "a" * 20, "a" * 65, "a" * 15, "a" * 20 + "%2e%2e",
    "a" * 20 + "\x00", "a" * 20 + "\n", "a" * 20 + " ", "ａ" * 20, None, 123, ["a" * 20],
    "a" * 20 + ".", "." + "a" * 20, "~" + "a" * 20,
]


@pytest.mark.parametrize("token", BAD_TOKENS, ids=repr)
def test_malformed_tokens_are_refused(token, tmp_path, monkeypatch):
    monkeypatch.setenv("UIF_WORKSPACES", str(tmp_path))
    assert not workspace.is_valid_token(token)
    with pytest.raises(ValueError, match="workspace token"):
        workspace.folder_of(token)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_new_tokens_are_unguessable_and_stay_inside_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv("UIF_WORKSPACES", str(tmp_path))
    tokens = {workspace.new_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in list(tokens)[:20]:
        assert workspace.is_valid_token(token) and len(token) >= 32
        folder = workspace.folder_of(token)
        assert folder.resolve().parent == tmp_path.resolve()


@pytest.mark.parametrize("name", ["../../x", "..", "/etc/passwd", "a/../../b", "..\\..\\c",
                                  "", ".hidden", "x\x00y", "ok-name_1.2"])
def test_file_names_in_a_workspace_never_leave_it(name, tmp_path):
    ws = Workspace(tmp_path / "ws")
    for path in (ws.sens(name), ws.search(name, 0.5), ws.spec(name, ratio=0.5),
                 ws.spec(name, threshold=0.1), ws.evolution(name)):
        assert path.parent == tmp_path / "ws", path
        assert not path.name.startswith("."), path
    clean = sanitize_name(name)
    assert clean and "/" not in clean and "\\" not in clean and not clean.startswith(".")
    assert Path(clean).name == clean

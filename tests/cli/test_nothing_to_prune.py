"""A model with nothing to prune gets the engine's one line on the command line (issue 18
item 5): no traceback, exit status 2, the frozen layers and why, and the command that lists
every group instead of the API's ``groups_table()``. ``ana`` says it before scoring anything.

The model is the resnet20 sample with every top-level block excluded (``--exclude``), the way a
person freezes a whole model by mistake.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from uif_explorer.cli import main

EVERYTHING = ["--exclude", "conv1", "--exclude", "layer1", "--exclude", "layer2",
              "--exclude", "layer3", "--exclude", "fc"]


@pytest.mark.parametrize("sub", [["ana", "--limit", "20"], ["search", "--ratio", "0.5"]])
def test_nothing_to_prune_is_one_line_naming_the_frozen_layers(tmp_path: Path, capsys,
                                                               sub: list[str]) -> None:
    ws = tmp_path / "ws"
    argv = [sub[0], "--model", "resnet20", *EVERYTHING, *sub[1:], "--workdir", str(ws)]
    assert main(argv) == 2
    captured = capsys.readouterr().err
    assert "Traceback" not in captured
    ours = [line for line in captured.splitlines() if line.startswith("uif-explorer")]
    assert len(ours) == 1  # (torch may log its own warnings above it)
    err = ours[0]
    assert err.startswith(f"uif-explorer {sub[0]}: error: No channel group of this model can "
                          "be pruned; frozen: conv1 (excluded module conv1)")
    assert "groups_table()" not in err
    assert err.endswith(f"`uif-explorer inspect --model resnet20 --workdir {ws} "
                        f"{' '.join(EVERYTHING)}` lists every group.")
    assert not (ws / "resnet20.sens").exists()  # nothing was scored

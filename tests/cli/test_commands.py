"""The uif-explorer CLI on the sample ResNet-20: inspect, ana, prune, search, export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from uif_explorer.cli import main
from uif_explorer.io.loading import load_state_dict
from uif_explorer.zoo import load_torch_sample

REPO = Path(__file__).resolve().parents[2]


def test_inspect_lists_groups(capsys, tmp_path):
    assert main(["inspect", "--model", "resnet20", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "M MACs at input 1x1x28x28" in out and "layer1.0.conv1" in out
    info = json.loads((tmp_path / "workspace.json").read_text())
    assert info["model_id"] == "resnet20" and info["input_shape"] == [1, 1, 28, 28]


@pytest.mark.slow
def test_ana_prune_search_export(tmp_path, capsys):
    ws = str(tmp_path / "ws")
    common = ["--model", "resnet20", "--workdir", ws, "--name", "r20"]
    assert main(["ana", *common, "--limit", "128", "--ratios", "0.5"]) == 0
    assert main(["prune", *common, "--ratio", "0.3", "--out", str(tmp_path / "s.safetensors")]) == 0
    state = load_state_dict((tmp_path / "s.safetensors").read_bytes())
    original = load_torch_sample("resnet20").state_dict()
    assert state.keys() == original.keys()
    assert sum(v.numel() for v in state.values()) < 0.8 * sum(v.numel() for v in original.values())
    capsys.readouterr()
    assert main(["search", *common, "--limit", "128", "--ratio", "0.5", "--num-subnet", "2",
                 "--refine", "2", "--refine-steps", "1"]) == 0
    out = capsys.readouterr().out
    saved = json.loads((Path(ws) / "r20_ratio_0.5.search").read_text())
    refined = saved["refinement"]
    assert refined["complete"] and [len(s["scores"]) for s in refined["stages"]] == [2]
    assert f"best candidate {refined['winner']}:" in out and "Stage 1 (1 fine-tuning" in out
    spec = Path(ws) / "r20_ratio_0.3.spec"
    out = tmp_path / "m.onnx"
    assert main(["export", *common, "--spec", str(spec), "--format", "onnx",
                 "--out", str(out)]) == 0
    assert out.exists()
    capsys.readouterr()


def test_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["inspect", "--model", "nonsense", "--workdir", str(tmp_path)]) == 2
    assert "Unknown model 'nonsense'" in capsys.readouterr().err
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(3)}, bad)
    assert main(["inspect", "--model", "resnet20", "--weights", str(bad),
                 "--workdir", str(tmp_path)]) == 2
    assert "do not fit" in capsys.readouterr().err
    assert main(["prune", "--model", "resnet20", "--workdir", str(tmp_path / "x"),
                 "--ratio", "1.5"]) == 2


def test_python_dash_m_entry_point():
    res = subprocess.run([sys.executable, "-m", "uif_explorer", "--help"], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0 and "inspect" in res.stdout

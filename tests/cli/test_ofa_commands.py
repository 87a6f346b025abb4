"""The ofa-train and ofa-search CLI commands: real runs with tiny budgets (one training step of
64 images, searches of 2 subnets scored on 64 test images), written in the app's formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uif_explorer.cli import main
from uif_explorer.services import ofa_app
from uif_explorer.torch.ofa import load_search, load_subnet_config
from uif_explorer.torch.ofa.bundled import supernet_path

TINY_SEARCH = ["--population", "2", "--iterations", "0", "--images", "64",
               "--calib-batches", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with one supernet trained by ``ofa-train`` (one step)."""
    ws = tmp_path_factory.mktemp("ofa_cli")
    assert main(["ofa-train", "--model", "mobilenetv2_small", "--expand-ratio", "0.5", "0.75",
                 "1", "--epochs", "1", "--images", "64", "--batch-size", "64",
                 "--eval-images", "64", "--workdir", str(ws)]) == 0
    return ws


@pytest.mark.slow
def test_ofa_train_writes_a_supernet_the_app_lists(trained: Path, capsys) -> None:
    path = trained / "mobilenetv2_small_supernet.json"
    assert path.exists() and path.with_suffix(".safetensors").exists()
    info = json.loads(path.read_text())
    assert info["kind"] == "uif-explorer-supernet" and info["sample"] == "mobilenetv2_small"
    assert info["ofa_args"]["expand_ratio"] == [0.5, 0.75, 1.0]
    assert info["training"]["epochs"] == 1 and info["training"]["images"] == 64
    assert info["macs"]["min_subnet"] < info["macs"]["max_subnet"]
    assert [r.path for r in ofa_app.workspace_supernets(trained)] == [path]


@pytest.mark.slow
def test_ofa_search_on_a_workspace_supernet(trained: Path, capsys) -> None:
    capsys.readouterr()
    sup = str(trained / "mobilenetv2_small_supernet.json")
    assert main(["ofa-search", "--supernet", sup, "--min-macs", "3", "--max-macs", "5",
                 "--macs-step", "0.5", "--workdir", str(trained), "--name", "mine",
                 *TINY_SEARCH]) == 0
    out = capsys.readouterr().out
    assert "2 subnets evaluated" in out and "M MACs bin" in out
    evo = load_search(trained / "mine_evolution.json")
    assert evo["complete"] and len(evo["history"]) == 2
    assert evo["settings"]["min_macs"] == 3.0 and evo["settings"]["macs_step"] == 0.5
    assert all(3 <= r["macs"] <= 5 for r in evo["history"])
    pareto = load_subnet_config(trained / "mine_pareto.json")
    assert pareto == evo["pareto_set"] and all(k.count(".") <= 1 for k in pareto)
    assert ofa_app.read_search_meta(trained / "mine_evolution.json")["images"] == 64
    # the app sees the CLI's search of this supernet
    ref = ofa_app.workspace_supernets(trained)[0]
    assert [s.path.name for s in ofa_app.list_searches(ref, trained)] == ["mine_evolution.json"]


def test_ofa_search_bundled_with_the_guides_flops_names(tmp_path: Path, capsys) -> None:
    if not supernet_path("mobilenetv2_small").exists():
        pytest.skip("the bundled supernet is not trained")
    pareto = tmp_path / "pareto_global.txt"
    assert main(["ofa-search", "--supernet", "mobilenetv2_small", "--min-flops", "3",
                 "--max-flops", "4", "--workdir", str(tmp_path), "--pareto", str(pareto),
                 *TINY_SEARCH]) == 0
    capsys.readouterr()
    [evo_path] = list(tmp_path.glob("*_evolution.json"))
    assert load_search(evo_path)["range"]["max_macs"] == 4.0
    entries = list(load_subnet_config(pareto).values())
    assert entries and {"net_id", "acc1", "macs", "params", "subnet_setting"} <= set(entries[0])


@pytest.mark.parametrize("args, message", [
    (["--min-macs", "50", "--max-macs", "60"], "No subnet has between 50 and 60 M MACs"),
    (["--min-macs", "5", "--max-macs", "3"], "min MACs <= max MACs"),
    (["--min-macs", "3", "--min-flops", "4"], "not both"),
    (["--supernet", "nowhere/nothing"], "bundled supernet"),
])
def test_bad_ranges_and_supernets_are_clear_errors(args: list[str], message: str,
                                                   tmp_path: Path, capsys) -> None:
    if not supernet_path("mobilenetv2_small").exists():
        pytest.skip("the bundled supernet is not trained")
    assert main(["ofa-search", "--workdir", str(tmp_path), *TINY_SEARCH, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("uif-explorer ofa-search: error:") and message in err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("*_evolution*.json"))  # nothing written


def test_ofa_train_rejects_bad_arguments(tmp_path: Path, capsys) -> None:
    assert main(["ofa-train", "--model", "keras_convnet", "--workdir", str(tmp_path)]) == 2
    assert "PyTorch sample model" in capsys.readouterr().err
    assert main(["ofa-train", "--expand-ratio", "0.5", "1.5", "--workdir", str(tmp_path)]) == 2
    assert "(0, 1]" in capsys.readouterr().err
    assert main(["ofa-train", "--images", "0", "--workdir", str(tmp_path)]) == 2
    assert "Expected --images to be a positive whole number. Received: --images 0" \
        in capsys.readouterr().err
    assert not list(tmp_path.iterdir())

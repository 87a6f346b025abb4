"""The CLI speaks the CLI (issue 15 item 9): arguments are checked before anything is loaded,
and a missing or unfinished analysis names the ``uif-explorer ana`` command to type, with the
same model flags, never the API's ``runner.ana(...)``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from uif_explorer.cli import main
from uif_explorer.cli.errors import command, translate
from uif_explorer.core.scores import AnalysisError
from uif_explorer.services import eval_data
from uif_explorer.torch.evaluation import top1_accuracy
from uif_explorer.torch.runners import get_pruning_runner
from uif_explorer.zoo import example_input, load_torch_sample


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("ratio", ["1.4", "0", "-0.2", "1"])
def test_a_bad_ratio_is_reported_before_anything_is_loaded(tmp_path: Path, capsys,
                                                           ratio: str) -> None:
    ws = tmp_path / "ws"
    assert main(["prune", "--model", "resnet20", "--ratio", ratio, "--workdir", str(ws)]) == 2
    err = _err(capsys)
    assert err.startswith("uif-explorer prune: error: Expected --ratio to be the fraction of "
                          "MACs to remove")
    assert f"Received: --ratio {float(ratio)}" in err and "analysis" not in err
    assert not ws.exists()  # the model was not even built (no workspace.json written)


def test_other_arguments_are_checked_first_too(tmp_path: Path, capsys) -> None:
    ws = str(tmp_path / "ws")
    assert main(["search", "--model", "resnet20", "--ratio", "0.5", "--num-subnet", "0",
                 "--workdir", ws]) == 2
    assert "Expected --num-subnet to be a positive whole number" in _err(capsys)
    assert main(["ana", "--model", "resnet20", "--ratios", "0.3,1.5", "--workdir", ws]) == 2
    assert "Received: --ratios 0.3,1.5" in _err(capsys)
    assert main(["ana", "--model", "resnet20", "--data", str(tmp_path / "none.npz"),
                 "--workdir", ws]) == 2
    assert "Expected --data to be 'bundled' or an .npz file" in _err(capsys)
    assert main(["prune", "--model", "resnet20", "--ratio", "0.4", "--weights",
                 str(tmp_path / "w.pth"), "--workdir", ws]) == 2
    assert "Expected --weights" in _err(capsys)
    assert not Path(ws).exists()


def test_prune_before_any_analysis_names_the_ana_command(tmp_path: Path, capsys,
                                                         monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default workdir .vai, as typed in the issue
    assert main(["prune", "--model", "resnet20", "--ratio", "0.4"]) == 2
    err = _err(capsys)
    assert "run `uif-explorer ana --model resnet20` first" in err
    assert "runner." not in err and "eval_fn" not in err
    ws = str(tmp_path / "run1")
    assert main(["prune", "--model", "resnet20", "--ratio", "0.4", "--workdir", ws,
                 "--name", "r20"]) == 2
    assert f"run `uif-explorer ana --model resnet20 --workdir {ws} --name r20` first" \
        in _err(capsys)


def test_an_unfinished_analysis_names_the_command_that_resumes_it(tmp_path: Path,
                                                                  capsys) -> None:
    calls = []

    def failing_eval(model, loader):  # a real analysis that stops after two evaluations
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("the evaluation machine went away")
        return top1_accuracy(model, loader)

    runner = get_pruning_runner(load_torch_sample("resnet20"), example_input("resnet20"),
                                workdir=tmp_path, name="resnet20")
    with pytest.raises(AnalysisError):
        runner.ana(failing_eval, args=(eval_data.test_loader(32),), ratios=(0.5,))
    assert main(["prune", "--model", "resnet20", "--ratio", "0.4", "--workdir",
                 str(tmp_path)]) == 2
    err = _err(capsys)
    assert "unfinished" in err and f"`uif-explorer ana --model resnet20 --workdir {tmp_path}`" \
        in err and "runner." not in err


def test_engine_hints_become_commands_and_flags() -> None:
    args = argparse.Namespace(model="torchvision:resnet18", weights=None, num_classes=12,
                              input_shape=(1, 3, 64, 64), workdir="run1", name=None,
                              exclude=["fc"], ratio=0.5)
    assert command(args, "ana") == ("uif-explorer ana --model torchvision:resnet18 "
                                    "--num-classes 12 --input-shape 1,3,64,64 --workdir run1 "
                                    "--exclude fc")
    missing = translate(ValueError("No search at run1/x.search: run runner.search(..., "
                                   "removal_ratio=0.5) first."), args)
    assert missing.endswith("run `uif-explorer search --model torchvision:resnet18 "
                            "--num-classes 12 --input-shape 1,3,64,64 --workdir run1 "
                            "--exclude fc --ratio 0.5` first.")
    stale = translate(ValueError("x.sens was made for another architecture; run ana again "
                                 "with forced=True."), args)
    assert "run `uif-explorer ana" in stale and "--forced`" in stale
    assert "forced=True" not in stale
    hint = translate(ValueError("Try a nearby ratio or channel_divisible=1 (it is 2)."), args)
    assert hint == "Try a nearby ratio or --divisible 1 (it is 2)."

"""``--device`` (cli/common.py): where a command's PyTorch jobs run; a device that is not
there is refused in CLI words before the model is built."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from uif_explorer.cli import main
from uif_explorer.torch import device as dev


@pytest.fixture(autouse=True)
def _reset():
    yield
    dev.set_job_device(None)


def test_inspect_runs_with_device_cpu(tmp_path: Path, capsys) -> None:
    assert main(["inspect", "--model", "resnet20", "--device", "cpu",
                 "--workdir", str(tmp_path / "ws")]) == 0
    assert dev.job_device() == torch.device("cpu")


@pytest.mark.parametrize("flag, message", [
    ("tpu", "Expected a device in ('auto', 'cpu', 'cuda') (or cuda:N). Received: --device 'tpu'"),
    pytest.param("cuda", "PyTorch sees none", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="CUDA is present here")),
])
def test_a_device_that_is_not_there_is_refused(tmp_path: Path, capsys, flag, message) -> None:
    ws = tmp_path / "ws"
    assert main(["ana", "--model", "resnet20", "--device", flag, "--workdir", str(ws)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not ws.exists()  # refused before the model was built


def test_ofa_search_takes_the_flag_too(tmp_path: Path, capsys) -> None:
    ws = tmp_path / "ws"
    assert main(["ofa-search", "--device", "tpu", "--workdir", str(ws)]) == 2
    assert "Received: --device 'tpu'" in capsys.readouterr().err and not ws.exists()

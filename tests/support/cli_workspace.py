"""A workspace as the CLI leaves it on another machine, zipped for upload: the app's Model page
and ``model_source.import_workspace`` both have to open it with its analysis."""

from __future__ import annotations

import copy
import io
import zipfile
from pathlib import Path

import torch

from uif_explorer import zoo
from uif_explorer.data import torch_loader
from uif_explorer.services.workspace_info import ModelChoice, write_workspace_info
from uif_explorer.torch.capture import digest_weights
from uif_explorer.torch.evaluation import top1_accuracy
from uif_explorer.torch.runners import get_pruning_runner


def zipped_cli_workspace(model: torch.nn.Module, made: Path, images: int) -> tuple[str, bytes]:
    """Analyse (a copy of) the sample ResNet-20 ``model`` at one ratio on ``images`` test
    images in ``made`` (a ``.vai`` folder, the runner's default name) with its
    ``workspace.json``; return the runner's name and the folder zipped under ``.vai/``."""
    runner = get_pruning_runner(copy.deepcopy(model), zoo.example_input("resnet20"),
                                "iterative", workdir=made)  # default name: class + digest
    runner.ana(top1_accuracy, args=(torch_loader("test", limit=images),), ratios=(0.5,))
    write_workspace_info(made, ModelChoice("resnet20"), digest_weights(model))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in made.iterdir():
            zf.write(path, f".vai/{path.name}")
    return runner.name, buf.getvalue()

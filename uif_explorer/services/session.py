"""What the CLI (and the app) prune: a model source, its input signature and evaluation data.

A *model id* names an architecture the registry can build: ``resnet20`` (a sample model, with
its trained weights) or ``torchvision:resnet50``; user weights come from a file (state dict or
safetensors, loaded without unpickling). ``workspace.json`` in the workspace folder records the
model id, weights digest and input signature, so a folder made by the CLI on another machine
can be reopened (conventions.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from uif_explorer import data as bundled
from uif_explorer import zoo
from uif_explorer.io.loading import LoadError, apply_state_dict, load_npz_dataset, load_state_dict
from uif_explorer.io.workspace import atomic_write_json


@dataclass
class ModelChoice:
    """How to rebuild a model: registry id, optional weights file, classes, input shape."""

    model_id: str = "resnet20"
    weights: str | None = None
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        """The model in eval mode; raises LoadError with a fix for a bad id or weights."""
        if self.model_id.startswith("torchvision:"):
            arch = self.model_id.split(":", 1)[1]
            if arch not in zoo.torchvision_architectures():
                raise LoadError(f"Unknown torchvision architecture {arch!r}; see "
                                "torchvision.models.list_models().")
            model = zoo.build_torchvision(arch, num_classes=self.num_classes or 1000)
        elif self.model_id in zoo.SAMPLE_MODELS:
            sample = zoo.SAMPLE_MODELS[self.model_id]
            if sample.framework != "torch":
                raise LoadError(f"{self.model_id} is a Keras model; use uif_explorer.keras.")
            model = zoo.build_torch(self.model_id) if self.weights else \
                zoo.load_torch_sample(self.model_id)
        else:
            known = ", ".join(n for n, s in zoo.SAMPLE_MODELS.items() if s.framework == "torch")
            raise LoadError(f"Unknown model {self.model_id!r}. Use a sample ({known}) or "
                            "'torchvision:<name>'.")
        if self.weights:
            apply_state_dict(model, load_state_dict(Path(self.weights).read_bytes()))
        return model.eval()

    def example_input(self) -> torch.Tensor:
        if self.input_shape:
            return torch.randn(*self.input_shape)
        if self.model_id in zoo.SAMPLE_MODELS:
            return zoo.example_input(self.model_id)
        return torch.randn(1, 3, 224, 224)


def evaluation_loader(source: str = "bundled", limit: int | None = 500, batch_size: int = 250,
                      num_classes: int | None = None,
                      input_shape: tuple[int, ...] | None = None) -> tuple[DataLoader, bool]:
    """(loader, has_labels) from the bundled test subset or a user ``.npz``."""
    if source == "bundled":
        return bundled.torch_loader("test", limit=limit, batch_size=batch_size), True
    x, y = load_npz_dataset(Path(source).read_bytes(), "NCHW", num_classes, input_shape)
    if limit:
        x = x[:limit]
        y = y[:limit] if y is not None else None
    tensors = [torch.from_numpy(x)] + ([torch.from_numpy(y)] if y is not None else [])
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size), y is not None


def write_workspace_info(workdir: str | Path, choice: ModelChoice, weights_digest: str,
                         name: str | None = None) -> None:
    """Record which model a workspace folder is about, so the app can reopen it elsewhere
    (``name``: the runner's file stem, when it was given one)."""
    info = {"format_version": 1, "kind": "uif-explorer-workspace", "framework": "torch",
            **asdict(choice), "weights_digest": weights_digest}
    if name:
        info["name"] = str(name)
    info["input_shape"] = list(choice.example_input().shape)
    atomic_write_json(Path(workdir) / "workspace.json", info)


def read_workspace_info(workdir: str | Path) -> ModelChoice:
    path = Path(workdir) / "workspace.json"
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise LoadError(f"No {path}: this folder was not made by UIF Explorer.") from exc
    except ValueError as exc:
        raise LoadError(f"{path} is not valid JSON.") from exc
    return ModelChoice(info.get("model_id", "resnet20"), info.get("weights"),
                       info.get("num_classes"), tuple(info["input_shape"])
                       if info.get("input_shape") else None)

"""Models and helpers the OFA tests share (tests/torch/ofa/)."""

from __future__ import annotations

import hashlib
import json

import torch
import torch.nn.functional as F
from torch import nn

from uif_explorer.zoo import build_torch, get_sample, load_torch_sample

GUIDE_KEYS = {"net_id", "mode", "acc1", "macs", "flops", "params", "subnet_setting"}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def state_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode() + v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def sample_model(name: str) -> nn.Module:
    """The trained sample when its weights exist, else the architecture (same graph)."""
    if get_sample(name).weights_path.exists():
        return load_torch_sample(name)
    torch.manual_seed(0)
    return build_torch(name).eval()


class Kernels(nn.Module):
    """5x5 conv, a 7x7 depthwise with stride 2 and a padding='same' 5x5 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.c5 = nn.Conv2d(16, 24, 5, padding=2)
        self.bn = nn.BatchNorm2d(24)
        self.dw7 = nn.Conv2d(24, 24, 7, stride=2, padding=3, groups=24)
        self.same = nn.Conv2d(24, 16, 5, padding="same", bias=False)
        self.odd = nn.Conv2d(16, 16, (5, 3), padding=(2, 1))  # not square: fixed kernel
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.c5(F.relu(self.stem(x)))))
        x = self.odd(self.same(F.relu(self.dw7(x))))
        return self.fc(x.mean((2, 3)))


def kernels_model() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = Kernels().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 1.5)
    return model, torch.randn(2, 3, 16, 16)


class Counter:
    """eval_fn / calibration_fn that count their calls and remember what they scored."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self.calls: list[str] = []
        self.calibrations = 0

    def calibrate(self, model: nn.Module) -> None:
        self.calibrations += 1

    def __call__(self, model: nn.Module) -> float:
        shapes = [tuple(p.shape) for p in model.parameters()]
        self.calls.append(json.dumps(shapes))
        with torch.no_grad():
            return float(model(self.x).float().mean())

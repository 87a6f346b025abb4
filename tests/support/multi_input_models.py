"""Small models with several inputs and several outputs, shared by the app's and the services'
tests of multi-input evaluation data (issue 18 item 4)."""

from __future__ import annotations

import io

import numpy as np
import torch
from torch import nn

SAMPLES = 40
RGB, DEPTH = (1, 3, 16, 16), (1, 1, 16, 16)


class TwoInputs(nn.Module):
    """An image and a depth map, fused, with a dict of outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.rgb = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.depth = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU())
        self.fuse = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.ReLU())
        self.cls = nn.Linear(24, 5)
        self.seg = nn.Conv2d(24, 2, 1)

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.fuse(self.rgb(rgb) + self.depth(depth))
        return {"logits": self.cls(y.mean((2, 3))), "mask": self.seg(y)}


def two_inputs() -> TwoInputs:
    torch.manual_seed(0)
    return TwoInputs().eval()


def program_bytes(model: nn.Module) -> bytes:
    """``torch.export.save`` of ``model`` exported at batch 1 (zeros of RGB and DEPTH)."""
    buf = io.BytesIO()
    torch.export.save(torch.export.export(model, (torch.randn(*RGB), torch.randn(*DEPTH))), buf)
    return buf.getvalue()


def npz_bytes(model: nn.Module, names: tuple[str, str] = ("rgb", "depth"),
              **arrays: np.ndarray) -> bytes:
    """40 random samples under ``names`` with ``labels`` = the model's own predictions (so the
    unpruned model scores 100 %), replaced or added by ``arrays``."""
    rng = np.random.default_rng(0)
    rgb = rng.standard_normal((SAMPLES, *RGB[1:])).astype(np.float32)
    depth = rng.standard_normal((SAMPLES, *DEPTH[1:])).astype(np.float32)
    with torch.no_grad():
        labels = model(torch.from_numpy(rgb), torch.from_numpy(depth))["logits"].argmax(1)
    data = {names[0]: rgb, names[1]: depth, "labels": labels.numpy(), **arrays}
    buf = io.BytesIO()
    np.savez(buf, **data)
    return buf.getvalue()

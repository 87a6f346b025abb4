"""Models with several inputs or a dict input, and a dict output (issue 18 item 4), through
``ChannelPruner`` and the guide's ``get_pruning_runner``: the plan lands on its MACs target,
slim == sparse on every output, and the slim model's counted MACs equal the plan's.

The input signature is a tuple of example tensors (``model(*signature)``); a model taking a dict
gets a one-element tuple holding it (``model(batch)``).
"""

from __future__ import annotations

import torch
from torch import nn

from uif_explorer.torch.macs import count_macs
from uif_explorer.torch.pruner import ChannelPruner
from uif_explorer.torch.runners import get_pruning_runner


def cbr(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class TwoInputs(nn.Module):
    """An image branch and a depth branch, fused, with a dict of outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.rgb = nn.Sequential(cbr(3, 16), cbr(16, 16))
        self.depth = nn.Sequential(cbr(1, 8), cbr(8, 16))
        self.fuse = cbr(16, 24)
        self.cls = nn.Linear(24, 5)
        self.seg = nn.Conv2d(24, 2, 1)

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.fuse(self.rgb(rgb) + self.depth(depth))
        return {"logits": self.cls(y.mean((2, 3))), "mask": self.seg(y)}


class DictInput(TwoInputs):
    """The same network taking one dict (as many data pipelines hand batches over)."""

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return super().forward(batch["rgb"], batch["depth"])


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(2, 3, 16, 16), torch.randn(2, 1, 16, 16)


def _check(model: nn.Module, signature: tuple, ratio: float = 0.5) -> None:
    pr = ChannelPruner(model, signature)
    assert len(pr.graph.prunable_groups) >= 3  # rgb, depth, the shared sum and fuse
    plan = pr.plan_for_removal(ratio, channel_divisible=1)
    assert abs(pr.removal(plan) - ratio) <= 0.01
    sparse, slim = pr.sparse_model(plan).eval(), pr.slim_model(plan).eval()
    with torch.no_grad():
        ys, yl, yo = sparse(*signature), slim(*signature), model(*signature)
    assert set(yl) == {"logits", "mask"}
    for key in yl:
        assert yl[key].shape == yo[key].shape
        assert torch.allclose(ys[key], yl[key], atol=1e-5, rtol=1e-4)
    assert count_macs(slim, signature) == pr.macs(plan)


def test_two_inputs_and_a_dict_output_prune_exactly() -> None:
    _check(TwoInputs().eval(), _inputs())


def test_a_dict_input_prunes_exactly() -> None:
    rgb, depth = _inputs()
    _check(DictInput().eval(), ({"rgb": rgb, "depth": depth},))


def _score(model: nn.Module, rgb: torch.Tensor, depth: torch.Tensor) -> float:
    """A stand-in metric for the guide's eval_fn: agreement of the logits with fixed labels."""
    with torch.no_grad():
        logits = model(rgb, depth)["logits"]
    return float((logits.argmax(1) == torch.arange(len(rgb)) % 5).float().mean() * 100)


def test_the_guide_runner_takes_several_inputs(tmp_path) -> None:
    rgb, depth = _inputs()
    model = TwoInputs().eval()
    runner = get_pruning_runner(model, (rgb, depth), "iterative", workdir=tmp_path)
    runner.ana(_score, args=(rgb, depth), ratios=(0.5,))
    slim = runner.prune(removal_ratio=0.4, mode="slim", channel_divisible=1)
    with torch.no_grad():
        out = slim(rgb, depth)
    assert out["logits"].shape == (2, 5) and out["mask"].shape == (2, 2, 16, 16)
    macs = count_macs(slim, (rgb, depth))
    assert abs(1 - macs / count_macs(model, (rgb, depth)) - 0.4) <= 0.01

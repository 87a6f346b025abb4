"""The guide's PyTorch one-step pruning (4.1.3.1), call for call, on the sample ResNet-20.

Same calls, same order, same argument names as the guide: ``get_pruning_runner(model,
input_signature, 'one_step')``, ``runner.search(gpus=['0'], calibration_fn=...,
calib_args=(val_loader,), eval_fn=..., eval_args=(val_loader,), num_subnet=...,
removal_ratio=0.7)``, ``runner.prune(removal_ratio=0.7, index=None)``, then the retraining
loop. ``num_subnet`` is scaled from 1000 to 5 and the data to 64 images; ``gpus=['0']`` is
passed as the guide does (this machine has no GPU: the search runs on the CPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from uif_explorer import get_pruning_runner
from uif_explorer.torch.macs import count_macs, count_params
from uif_explorer.zoo import load_torch_sample

pytestmark = pytest.mark.slow
NUM_SUBNET = 5


@pytest.fixture(scope="module")
def searched(guide_dir, eval_fn, calibration_fn, val_loader):
    """The baseline model, a one-step runner and the guide's ``search`` call."""
    model = load_torch_sample("resnet20")  # the guide: resnet18(pretrained=True)
    # The input signature should have the same shape and dtype as the model input.
    input_signature = torch.randn([1, 1, 28, 28], dtype=torch.float32)
    runner = get_pruning_runner(model, input_signature, "one_step")

    # Adaptive-BN-based searching for pruning strategy.
    runner.search(gpus=["0"], calibration_fn=calibration_fn, calib_args=(val_loader,),
                  eval_fn=eval_fn, eval_args=(val_loader,), num_subnet=NUM_SUBNET,
                  removal_ratio=0.7)
    return model, input_signature, runner


def test_search_writes_the_search_file(searched):
    """The guide: "a file named .vai/your_model_name.search is generated in which the search result
    (pruning strategies and corresponding evaluation scores) is stored" (ours carries the
    ratio in its name: one search per ratio)."""
    _model, _sig, runner = searched
    path = Path(".vai") / f"{runner.name}_ratio_0.7.search"
    assert list(Path(".vai").glob("*.search")) == [path]
    result = json.loads(path.read_text())
    assert result["complete"] and result["baseline"]["score"] > 50
    candidates = result["candidates"]
    assert len(candidates) == NUM_SUBNET  # num_subnet candidates satisfying the sparsity
    assert all(abs(c["removal"] - 0.7) <= 0.01 for c in candidates)
    assert all(isinstance(c["score"], float) and c["ratios"] for c in candidates)


def test_prune_builds_the_best_candidate_as_a_slim_model(searched):
    """``model = runner.prune(removal_ratio=0.7, index=None)``: the best subnetwork, slim."""
    original, input_signature, runner = searched

    model = runner.prune(removal_ratio=0.7, index=None)

    removed = 1 - count_macs(model, input_signature) / count_macs(original, input_signature)
    assert abs(removed - 0.7) <= 0.01
    assert count_params(model) < count_params(original)
    with torch.no_grad():
        assert model.eval()(input_signature).shape == original(input_signature).shape
    result = json.loads((Path(".vai") / f"{runner.name}_ratio_0.7.search").read_text())
    best = max(result["candidates"], key=lambda c: c["score"])
    spec = json.loads((Path(".vai") / f"{runner.name}_ratio_0.7_best.spec").read_text())
    assert spec["candidate"] == best["id"]


def test_retraining_the_slim_model(searched, retraining, train_loader, val_loader):
    """The guide's retraining loop on the one-step model: "Retraining a slim model is faster
    than a sparse model"; the saved state dict loads into the slim model of the spec."""
    _original, input_signature, runner = searched
    model = runner.prune(removal_ratio=0.7, index=None)
    retraining(model, train_loader, val_loader)  # the guide's loop, one epoch

    assert Path("model_pruned.pth").exists()
    rebuilt = runner.prune(spec_path=Path(".vai") / f"{runner.name}_ratio_0.7_best.spec")
    rebuilt.load_state_dict(torch.load("model_pruned.pth", weights_only=True), strict=True)
    assert count_macs(rebuilt, input_signature) == count_macs(model, input_signature)

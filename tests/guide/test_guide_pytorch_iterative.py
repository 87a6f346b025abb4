"""The guide's PyTorch iterative pruning (4.1.3.1), call for call, on the sample ResNet-20.

Same calls, same order, same argument names and styles as the guide; imports adapted
(``pytorch_nndct`` -> ``uif_explorer``), ``resnet18(pretrained=True)`` replaced by the bundled
trained ResNet-20 (no download here) and the input signature by its 1x28x28 shape, data scaled
to 32 images. The guide's ``pruning_runner.prune(...)`` is its typo for ``runner.prune(...)``.
The guide does not show the second round in code; its text says to prune again from the same
analysis after fine-tuning, which is what the last test does (issue 15, item 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from uif_explorer import get_pruning_runner
from uif_explorer.data import torch_loader
from uif_explorer.torch.macs import count_macs
from uif_explorer.zoo import load_torch_sample

pytestmark = pytest.mark.slow


def _zero_rows(model: torch.nn.Module, name: str) -> set[int]:
    """Output channels of conv ``name`` whose weights are all exactly zero."""
    w = dict(model.named_parameters())[f"{name}.weight"].detach()
    return set(torch.nonzero(w.flatten(1).abs().sum(1) == 0).flatten().tolist())


def _zeroed_channels(model: torch.nn.Module) -> int:
    """How many conv output channels are exactly zero, over the whole model."""
    return sum(len(_zero_rows(model, n)) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Conv2d))


@pytest.fixture(scope="module")
def val_loader():
    """32 test images: ``ana`` evaluates 109 models (12 groups x 9 ratios + baseline)."""
    return torch_loader("test", limit=32, batch_size=32)


@pytest.fixture(scope="module")
def analysed(guide_dir, eval_fn, val_loader):
    """Create the baseline model and the runner, then ``ana`` exactly as the guide does."""
    # Create the Baseline Model
    model = load_torch_sample("resnet20")  # the guide: resnet18(pretrained=True)

    # Create a Pruning Runner
    # The input signature should have the same shape and dtype as the model input.
    input_signature = torch.randn([1, 1, 28, 28], dtype=torch.float32)
    runner = get_pruning_runner(model, input_signature, "iterative")

    # Iterative Pruning, step 2: run model analysis
    runner.ana(eval_fn, args=(val_loader,))
    return model, input_signature, runner


def test_ana_saves_the_analysis_under_vai(analysed):
    """The guide: "the analysis result is saved in the file named .vai/your_model_name.sens"."""
    _model, _sig, runner = analysed
    sens_files = list(Path(".vai").glob("*.sens"))
    assert sens_files == [Path(".vai") / f"{runner.name}.sens"]
    sens = json.loads(sens_files[0].read_text())
    assert sens["complete"] is True
    assert sens["baseline"] > 50  # the guide's eval_fn (a tensor, in percent) was accepted
    ratios = [round(0.1 * i, 1) for i in range(1, 10)]
    assert all([r for r, _ in g["curve"]] == ratios for g in sens["groups"] if g["prunable"])


def test_prune_returns_a_sparse_model_at_the_ratio(analysed):
    """``model = runner.prune(removal_ratio=0.2)``: a sparse model, 20% of the MACs gone."""
    original, input_signature, runner = analysed
    before = {k: v.clone() for k, v in original.state_dict().items()}

    model = runner.prune(removal_ratio=0.2)

    # sparse: the original keys and shapes, some output channels exactly zero
    assert {k: v.shape for k, v in model.state_dict().items()} == \
        {k: v.shape for k, v in original.state_dict().items()}
    assert _zeroed_channels(model) > 0 and _zeroed_channels(original) == 0
    # a spec for this ratio, and latest_spec naming it (the guide's Keras section shows it)
    spec = Path(".vai") / f"{runner.name}_ratio_0.2.spec"
    assert spec.exists()
    assert json.loads(Path(".vai/latest_spec").read_text()) == f".vai/{spec.name}"
    # the slim model of that spec has 20% fewer MACs (within 1 point)
    slim = runner.prune(spec_path=spec, mode="slim")
    removed = 1 - count_macs(slim, input_signature) / count_macs(original, input_signature)
    assert abs(removed - 0.2) <= 0.01
    # the user's model is untouched
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items())


def test_retraining_saves_sparse_and_slim_state_dicts(analysed, retraining, train_loader,
                                                     val_loader):
    """The guide's "Retraining the Pruned Model" loop, ``slim_state_dict`` included."""
    original, input_signature, runner = analysed
    model = runner.prune(removal_ratio=0.2)
    zeroed = _zero_rows(model, "layer1.0.conv1")
    retraining(model, train_loader, val_loader)  # the guide's loop, one epoch

    assert Path("model_pruned.pth").exists() and Path("model_slim.pth").exists()
    assert _zero_rows(model, "layer1.0.conv1") == zeroed  # training kept the pruned rows zero
    # the sparse state dict loads into the original architecture
    dense = load_torch_sample("resnet20")
    dense.load_state_dict(torch.load("model_pruned.pth", weights_only=True), strict=True)
    # the slim state dict loads into the slim model of the same spec and computes the same
    slim = runner.prune(spec_path=Path(".vai") / f"{runner.name}_ratio_0.2.spec", mode="slim")
    slim.load_state_dict(torch.load("model_slim.pth", weights_only=True), strict=True)
    x = torch.randn(4, *input_signature.shape[1:])
    model.eval()
    slim.eval()
    with torch.no_grad():
        a, b = slim(x), model(x)
    assert float((a - b).norm() / b.norm()) <= 1e-4


def test_prune_again_without_rerunning_analysis(analysed, retraining, train_loader,
                                               val_loader):
    """The guide: "Run analysis only once for the same model. You can prune the model iteratively
    without re-running analysis": a runner on the fine-tuned sparse model, ``prune(0.5)``."""
    original, input_signature, runner = analysed
    model = runner.prune(removal_ratio=0.2)
    retraining(model, train_loader, val_loader)  # saves model_pruned.pth
    zeroed = _zero_rows(model, "layer1.0.conv1")
    sens_before = Path(".vai", f"{runner.name}.sens").read_bytes()

    # a runner made on the model that prune() returned
    runner = get_pruning_runner(model, input_signature, "iterative")
    model = runner.prune(removal_ratio=0.5)
    assert zeroed <= _zero_rows(model, "layer1.0.conv1")  # zeroed channels are chosen again
    slim = runner.prune(removal_ratio=0.5, mode="slim")
    removed = 1 - count_macs(slim, input_signature) / count_macs(original, input_signature)
    assert abs(removed - 0.5) <= 0.01  # of the original dense architecture's MACs

    # a runner made on the original architecture with the fine-tuned weights loaded
    fine_tuned = load_torch_sample("resnet20")
    fine_tuned.load_state_dict(torch.load("model_pruned.pth", weights_only=True))
    runner = get_pruning_runner(fine_tuned, input_signature, "iterative")
    model = runner.prune(removal_ratio=0.5)
    assert zeroed <= _zero_rows(model, "layer1.0.conv1")
    assert Path(".vai", f"{runner.name}.sens").read_bytes() == sens_before  # no new analysis
    assert len(list(Path(".vai").glob("*.sens"))) == 1

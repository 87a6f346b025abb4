"""The PyTorch runners on the shared loop: the guide's iterative loop through the sparse model,
scoring protocols in the files, the ratio as an approximate target and early argument errors.

Sample ResNet-20 on a few bundled Fashion-MNIST images, one analysed ratio; a small two-conv
network where channel rounding cannot land within a point.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from uif_explorer import get_pruning_runner
from uif_explorer.core.plan import PlanError
from uif_explorer.data import torch_loader
from uif_explorer.io.workspace import WorkspaceError, read_json
from uif_explorer.torch.evaluation import adaptive_bn_calibration, top1_accuracy
from uif_explorer.torch.runners import AnalysisError
from uif_explorer.zoo import load_torch_sample

SHAPE = (1, 1, 28, 28)


@pytest.fixture(scope="module")
def loader():
    return torch_loader("test", limit=64, batch_size=64)


def test_guide_loop_prunes_again_from_the_sparse_model_without_a_new_analysis(
        resnet20, loader, tmp_path, capsys) -> None:
    runner = get_pruning_runner(resnet20, torch.randn(*SHAPE), "iterative", workdir=tmp_path)
    runner.ana(top1_accuracy, args=(loader,), ratios=(0.5,))
    sparse = runner.prune(removal_ratio=0.2)
    optimizer = torch.optim.SGD(sparse.parameters(), 0.01, momentum=0.9)
    sparse.train()
    for images, target in torch_loader("train", limit=128, batch_size=64):
        optimizer.zero_grad()
        nn.functional.cross_entropy(sparse(images), target).backward()
        optimizer.step()
    sens_before = (tmp_path / f"{runner.name}.sens").read_bytes()

    # a runner on the returned sparse model (masks and hooks included) finds the analysis
    on_sparse = get_pruning_runner(sparse, torch.randn(*SHAPE), "iterative", workdir=tmp_path)
    assert on_sparse.name == runner.name
    capsys.readouterr()
    half = on_sparse.prune(removal_ratio=0.5)
    note = capsys.readouterr().err
    assert "reusing the finished analysis" in note and "other weights" in note
    assert abs(on_sparse.pruner.removal(half.uif_plan) - 0.5) <= 0.01
    for gid, kept in half.uif_plan.kept.items():  # channels zeroed at 0.2 go first
        if gid in sparse.uif_plan.kept:
            assert set(kept.tolist()) <= set(sparse.uif_plan.kept[gid].tolist())
    slim = on_sparse.prune(removal_ratio=0.5, mode="slim")
    x = torch.randn(4, *SHAPE[1:])
    half.eval(), slim.eval()
    assert torch.allclose(half(x), slim(x), atol=1e-4)

    # the original architecture with the fine-tuned weights loaded: the same files
    tuned = load_torch_sample("resnet20")
    tuned.load_state_dict(sparse.state_dict())
    on_tuned = get_pruning_runner(tuned, torch.randn(*SHAPE), "iterative", workdir=tmp_path)
    assert on_tuned.name == runner.name
    on_tuned.prune(removal_ratio=0.5)
    assert (tmp_path / f"{runner.name}.sens").read_bytes() == sens_before  # no new analysis


def test_protocols_are_recorded_and_an_unfinished_file_of_another_is_refused(
        resnet20, loader, tmp_path, capsys) -> None:
    runner = get_pruning_runner(resnet20, torch.randn(*SHAPE), "iterative", workdir=tmp_path,
                                name="r20")
    seen: list[int] = []

    def calibrate_twice_then_stop(model, dl, number_forward):
        seen.append(number_forward)
        if len(seen) > 2:  # a Ctrl-C during the third evaluation
            raise KeyboardInterrupt
        adaptive_bn_calibration(model, dl, number_forward)

    with pytest.raises(KeyboardInterrupt):
        runner.ana(top1_accuracy, args=(loader,), ratios=(0.5,),
                   calibration_fn=calibrate_twice_then_stop, calib_args=(loader, 1))
    sens = read_json(tmp_path / "r20.sens")
    assert sens["protocol"] == {"calibration": "calibrate_twice_then_stop",
                                "score": "top1_accuracy", "bn_reestimation": True}
    assert not sens["complete"] and sens["baseline"] is not None
    with pytest.raises(WorkspaceError, match="unfinished analysis of another scoring protocol"):
        runner.ana(top1_accuracy, args=(loader,), ratios=(0.5,))  # no calibration this time
    done = runner.ana(top1_accuracy, args=(loader,), ratios=(0.5,), forced=True)
    assert done["complete"] and done["protocol"]["bn_reestimation"] is False
    capsys.readouterr()
    again = runner.ana(top1_accuracy, args=(loader,), ratios=(0.5,),
                       calibration_fn=adaptive_bn_calibration, calib_args=(loader, 1))
    assert again == done  # finished: reused, not mixed, and said so
    assert "another scoring protocol" in capsys.readouterr().err


def test_arguments_fail_before_any_work(resnet20, loader, tmp_path) -> None:
    runner = get_pruning_runner(resnet20, SHAPE, "iterative", workdir=tmp_path)  # a shape
    assert runner.input_signature.shape == SHAPE
    with pytest.raises(TypeError, match=r"Expected args to be a tuple.*args=\(val_loader,\)"):
        runner.ana(top1_accuracy, args=loader)
    with pytest.raises(PlanError, match="removal_ratio"):
        runner.prune(removal_ratio=1.4)  # the bad ratio, not the missing analysis
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="shape of positive sizes"):
        get_pruning_runner(resnet20, (1, 0, 28, 28), "iterative", workdir=tmp_path)

    def broken_calibration(model, dl):
        raise RuntimeError("no GPU here")

    one = get_pruning_runner(resnet20, SHAPE, "one_step", workdir=tmp_path)
    with pytest.raises(AnalysisError, match="calibration_fn raised RuntimeError.*no GPU here"
                                            ".*run again to resume"):
        one.search(calibration_fn=broken_calibration, calib_args=(loader,),
                   eval_fn=top1_accuracy, eval_args=(loader,), num_subnet=2,
                   removal_ratio=0.3)


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def test_an_unreachable_exact_ratio_gives_the_closest_plan_with_a_warning(
        loader, tmp_path) -> None:
    runner = get_pruning_runner(_small_net(), SHAPE, "iterative", workdir=tmp_path)
    runner.ana(top1_accuracy, args=(loader,), ratios=(0.3, 0.6))
    with pytest.warns(UserWarning, match=r"removal_ratio=0.3 is an approximate target") as rec:
        model = runner.prune(removal_ratio=0.3)
    achieved = runner.pruner.removal(model.uif_plan)
    assert abs(achieved - 0.3) > 0.01
    assert f"{achieved:.1%}" in str(rec.pop(UserWarning).message)
    spec = read_json(tmp_path / f"{runner.name}_ratio_0.3.spec")
    assert spec["macs"]["pruned"] == pytest.approx(runner.pruner.macs(model.uif_plan) / 1e6)
    with pytest.raises(PlanError, match="channel_divisible=1"):
        runner.prune(removal_ratio=0.3, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            runner.prune(removal_ratio=0.3, channel_divisible=1, strict=True)
        except PlanError as exc:  # the hint never suggests what is already set
            assert "channel_divisible=1" not in str(exc)

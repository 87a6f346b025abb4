"""Measured previews and the corrected estimate on the sample ResNet-20 (issue 13).

``runner.plan(r).measure(...)`` scores the actual plan (what ``prune(r)`` returns) with the
given protocol, knows its image count and 95 % interval, and is cached per ratio, plan,
weights and protocol. The analysis measures whole-model plans itself; the estimate corrected
by them is closer to the measured score at a held-out ratio than the sum of single drops.
"""

from __future__ import annotations

import pytest
import torch

from uif_explorer import get_pruning_runner
from uif_explorer.core.measure import measured_path
from uif_explorer.data import torch_loader
from uif_explorer.io.workspace import read_json
from uif_explorer.torch.evaluation import adaptive_bn_calibration, top1_accuracy
from uif_explorer.zoo import load_torch_sample

IMAGES = 128


@pytest.fixture(scope="module")
def loader():
    return torch_loader("test", limit=IMAGES, batch_size=64)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, loader):
    """One analysis (two ratios per group plus the whole-model plans), shared by the tests."""
    workdir = tmp_path_factory.mktemp("ws")
    model = load_torch_sample("resnet20")
    runner = get_pruning_runner(model, torch.randn(1, 1, 28, 28), "iterative", workdir=workdir)
    sens = runner.ana(top1_accuracy, args=(loader,), ratios=(0.3, 0.6))
    return runner, sens


def test_analysis_measures_whole_model_plans_with_their_image_count(analysed):
    runner, sens = analysed
    points = sens["whole_model"]["points"]
    assert [p["ratio"] for p in points] == [0.2, 0.4, 0.6]
    assert all(p["images"] == IMAGES and p["score"] is not None for p in points)
    assert sens["images"] == IMAGES  # the baseline's count
    assert abs(points[1]["achieved_removal"] - 0.4) < 0.02


def test_measure_scores_the_plan_prune_builds_and_caches_it(analysed, loader):
    runner, _ = analysed
    calls = []

    def counted(model, dl):
        calls.append(1)
        return top1_accuracy(model, dl)

    preview = runner.plan(0.5)
    first = preview.measure(counted, args=(loader,))
    assert not first.cached and first.images == IMAGES and len(calls) == 1
    low, high = first.interval
    assert low <= first.score <= high and high - low > 5  # 128 images: a wide interval
    pruned = runner.prune(removal_ratio=0.5)
    assert top1_accuracy(pruned, loader) == pytest.approx(first.score, abs=0.01)

    again = runner.plan(0.5).measure(counted, args=(loader,))
    assert again.cached and again.score == first.score and len(calls) == 1
    calibrated = runner.plan(0.5).measure(counted, args=(loader,),
                                          calibration_fn=adaptive_bn_calibration,
                                          calib_args=(loader, 2))
    assert not calibrated.cached and len(calls) == 2  # another protocol: measured anew
    saved = read_json(measured_path(runner.workspace, runner.name))["points"]
    assert {p["protocol"]["bn_reestimation"] for p in saved} == {False, True}
    assert all(p["images"] == IMAGES and p["interval"] for p in saved)


def test_corrected_estimate_beats_the_additive_one_at_a_held_out_ratio(analysed, loader):
    runner, sens = analysed
    preview = runner.plan(0.5)  # 0.5 is not among the whole-model ratios
    measured = preview.measure(top1_accuracy, args=(loader,)).score
    assert preview.estimate is not None and preview.estimate_error is not None
    assert preview.estimate_label.startswith("estimate, typically within")
    additive_error = abs(preview.predicted_score - measured)
    corrected_error = abs(preview.estimate - measured)
    assert corrected_error < additive_error, (preview.predicted_score, preview.estimate,
                                              measured)

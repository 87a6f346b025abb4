"""Numbers with their noise and the corrected estimate (framework-neutral, no torch)."""

from __future__ import annotations

import pytest

from uif_explorer.core.estimate import (
    corrected,
    estimate,
    leave_one_out_error,
    new_whole_model,
    pending_whole_model,
    record_whole_model,
    sens_points,
)
from uif_explorer.core.measure import data_key, point_protocol
from uif_explorer.core.refinement import Refinement
from uif_explorer.core.scores import ScoreJob, score_model
from uif_explorer.core.uncertainty import (
    Measured,
    note_images,
    take_images,
    versus,
    wilson_interval,
    within_noise,
)


def test_wilson_interval_matches_the_textbook_values():
    # 90 correct of 100: Wilson 95 % interval (0.8256, 0.9448), e.g. Newcombe (1998)
    low, high = wilson_interval(90.0, 100)
    assert low == pytest.approx(82.56, abs=0.01) and high == pytest.approx(94.48, abs=0.01)
    assert wilson_interval(1.0, 10, percent=False)[1] == pytest.approx(1.0)  # inside [0, 1]
    assert wilson_interval(0.0, 10, percent=False)[0] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="n, the number of images"):
        wilson_interval(50.0, 0)
    with pytest.raises(ValueError, match="accuracy in"):
        wilson_interval(150.0, 10)


def test_within_noise_is_interval_overlap_and_needs_image_counts():
    a, b = Measured.of(90.0, 128), Measured.of(87.5, 128)
    assert within_noise(a, b)  # 2.5 points on 128 images is noise
    assert not within_noise(Measured.of(90.0, 10_000), Measured.of(87.5, 10_000))
    assert not within_noise(Measured.of(90.0, None), b)  # unknown count: nothing is claimed
    assert "on 128 images" in a.text() and "95 % interval" in a.text()


def test_scorers_report_their_image_count_through_score_model():
    def eval_fn(model, n):
        note_images(n)
        return 50.0

    assert score_model(None, eval_fn, (64,)) == 50.0
    assert take_images() == 64
    assert take_images() is None  # read once
    note_images(3)  # a stale count is not attributed to a scorer that says nothing
    score_model(None, lambda m: 1.0)
    assert take_images() is None


def test_whole_model_points_are_resumable_records():
    sens = {"whole_model": new_whole_model((0.2, 0.4))}
    assert pending_whole_model(sens) == [0.2, 0.4]
    record_whole_model(sens, 0.2, 0.21, 90.0, 80.0, 128)
    assert pending_whole_model(sens) == [0.4]
    record_whole_model(sens, 0.4, 0.40, None, None, None, error="unreachable")
    assert pending_whole_model(sens) == [] and sens_points(sens) == [(0.21, 90.0, 80.0)]
    assert pending_whole_model({"groups": []}) == []  # files from before: nothing to do


def test_correction_interpolates_the_residual_and_reports_its_error():
    # the additive prediction is too optimistic, more so the more is removed
    pts = [(0.2, 90.0, 85.0), (0.4, 85.0, 60.0), (0.6, 80.0, 30.0)]
    assert corrected(pts, 0.0, 92.0) == 92.0  # nothing removed: no correction
    assert corrected(pts, 0.3, 88.0) == pytest.approx(88.0 - 15.0)  # halfway -5 .. -25
    assert corrected(pts, 0.8, 70.0) == pytest.approx(70.0 - 50.0)  # held past the last
    assert corrected(pts, 0.9, 20.0) == 0.0  # an accuracy is never estimated below 0
    losses = [(0.2, -1.0, -2.0)]  # a score that can be negative is left unbounded
    assert corrected(losses, 0.9, -5.0) == pytest.approx(-6.0)
    err = leave_one_out_error(pts)
    assert err is not None and err > 0
    est = estimate(88.0, 0.3, pts)
    assert est.value == pytest.approx(73.0) and est.error == pytest.approx(err)
    assert "estimate, typically within" in est.label and "3 measured plans" in est.label
    bare = estimate(88.0, 0.3, [])
    assert bare.value == 88.0 and bare.error is None and "estimate" in bare.label


def test_refinement_halves_and_doubles_the_budget():
    assert Refinement(steps=10, keep=4).stages(20) == [(4, 10), (2, 20)]
    assert Refinement(steps=5, keep=8).stages(6) == [(6, 5), (3, 10), (2, 20)]
    assert Refinement(keep=1).stages(5) == [(1, 20)]
    with pytest.raises(ValueError, match="keep to be an integer >= 1"):
        Refinement(keep=0)
    with pytest.raises(TypeError, match="finetune_args"):
        Refinement(finetune_args="loader")


def test_the_interval_follows_the_score_scale_0_1_or_0_100():
    pct, frac = Measured.of(90.0, 100), Measured.of(0.9, 100)
    assert pct.percent and not frac.percent
    assert frac.low == pytest.approx(pct.low / 100) and frac.high == pytest.approx(pct.high / 100)
    assert "0.900 on 100 images" in frac.text() and "90.00 % on 100 images" in pct.text()
    assert Measured.of(0.9, 100, percent=True).percent  # the caller's word wins
    assert "within noise" in versus(pct, Measured.of(88.0, 100), "the original")
    assert "beyond noise" in versus(Measured.of(90.0, 10_000), Measured.of(80.0, 10_000), "x")


def test_measured_points_are_keyed_on_the_images_not_only_the_function_names():
    import numpy as np

    def top1(model, x):
        return 50.0

    x = np.zeros((8, 1, 4, 4), np.float32)
    same = point_protocol(ScoreJob.of(top1, (x,)))
    assert same == point_protocol(ScoreJob.of(top1, (x.copy(),)))
    assert same != point_protocol(ScoreJob.of(top1, (x[:4],)))  # fewer images
    assert same != point_protocol(ScoreJob.of(top1, (x + 1,)))  # other images
    assert data_key([1, 2]) != data_key([1, 3])

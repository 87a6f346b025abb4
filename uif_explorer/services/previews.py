"""The Sensitivity page's numbers with what they mean, without streamlit: the instant estimate
labelled as one, the measured preview of a plan scored with the Prune button's protocol, and
the one line (images, 95 % interval, BatchNorm re-estimation or not) shown beside each score.

The Prune button scores the sparse model with ``ev.score`` and no BatchNorm re-estimation
(``pruning_jobs.prune_from_analysis``); :func:`measure` uses the same evaluator and no
calibration, so a measured preview and the score after Prune at the same ratio are equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from uif_explorer.core.measure import MeasuredPreview, matching_points, measured_path
from uif_explorer.core.scores import ScoreJob
from uif_explorer.core.uncertainty import Measured

PRUNE_CALIBRATES = False  # what prune_from_analysis does: score without BN re-estimation


def _batches(calib_args: tuple) -> int | None:
    try:
        return len(calib_args[0])
    except (IndexError, TypeError):
        return None


def protocol_text(calibrated: bool, batches: int | None = None) -> str:
    """``'after BN re-estimation on 4 batches'`` or ``'without BN re-estimation'``."""
    if not calibrated:
        return "without BN re-estimation"
    return "after BN re-estimation" + (f" on {batches} batches" if batches else "")


def page_job(ev: Any) -> ScoreJob:
    """The page's scoring protocol: the Prune button's evaluator, calibrated as it is."""
    if PRUNE_CALIBRATES and ev.calib_fn is not None:
        return ScoreJob.of(ev.eval_fn, ev.eval_args, ev.calib_fn, ev.calib_args)
    return ScoreJob.of(ev.eval_fn, ev.eval_args, None, ())


def measure(preview: Any, ev: Any) -> MeasuredPreview:
    """Score ``preview``'s plan on a private sparse copy with the page's protocol (cached in
    ``<model>.measured.json`` per ratio)."""
    job = page_job(ev)
    return preview.measure(job.eval_fn, args=tuple(job.eval_args),
                           calibration_fn=job.calibration_fn, calib_args=tuple(job.calib_args))


def score_line(word: str, score: float, images: int | None, ev: Any,
               label_free: bool = False) -> str:
    """One line: ``'Measured 62.50 % on 200 images (95 % interval 55.6-68.9), without BN
    re-estimation'`` (a label-free score has no interval: it is not a proportion)."""
    measured = Measured.of(score, None if label_free else images)
    text = measured.text() if not label_free else f"{score:.2f} on {images} images"
    calibrated = PRUNE_CALIBRATES and ev is not None and ev.calib_fn is not None
    batches = _batches(ev.calib_args) if calibrated else None
    return f"{word} {text}, {protocol_text(calibrated, batches)}"


def measured_line(mp: MeasuredPreview, ev: Any) -> str:
    """The measured preview's line (image count from the scorer, else the evaluator's)."""
    return score_line("Measured", mp.score, mp.images or ev.images, ev,
                      label_free=ev.label_free)


def estimate_line(preview: Any, label_free: bool = False) -> str:
    """``'Estimated accuracy 87.2 % — estimate, typically within k points here (...)'``."""
    value = preview.estimate if preview.estimate is not None else preview.predicted_score
    word = "Estimated label-free score" if label_free else "Estimated accuracy"
    if value is None:
        return f"{word}: none (no finished analysis)"
    return f"{word} {value:.1f} % — {preview.estimate_label}"


def page_points(runner: Any, sens: Mapping[str, Any], ev: Any) -> list[dict[str, Any]]:
    """The measured points of this model made on the analysed weights with the page's
    protocol, for the "MACs removed vs score" chart."""
    path = measured_path(runner.workspace, runner.name)
    weights = sens.get("weights_digest")
    points = matching_points(path, weights, page_job(ev).protocol) if weights else []
    return sorted(points, key=lambda p: float(p["achieved_removal"]))

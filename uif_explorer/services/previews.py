"""The app's scoring protocol and the Sensitivity page's numbers with what they mean, without
streamlit: the instant estimate labelled as one, the measured preview of a plan, and the one
line (images, 95 % interval, BatchNorm re-estimation or not) shown beside each score.

One protocol (:class:`Protocol`) scores the analysis, the measured previews, the model made by
Prune and the Export page's rows: BatchNorm statistics re-estimated on the evaluator's
calibration batches (on by default when the model has BatchNorm and calibration images exist;
the page can turn it off), then the evaluator's score function on its images. So a measured
preview at ratio r and the score after Prune at r are the same number.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uif_explorer.core.measure import (
    MeasuredPreview,
    find_point,
    matching_points,
    measured_path,
    plan_digest,
    point_protocol,
)
from uif_explorer.core.scores import ScoreJob, score_model
from uif_explorer.core.uncertainty import Measured, versus


def calibration_batches(calib_args: tuple) -> int | None:
    """Calibration batches: a loader's (or list's) length; None for an array of images."""
    try:
        first = calib_args[0]
        return None if hasattr(first, "shape") else len(first)
    except (IndexError, TypeError):
        return None


def calibration_images(calib_args: tuple) -> int | None:
    """Images of a calibration array (Keras calibrates on one array), else None."""
    shape = getattr(calib_args[0], "shape", None) if calib_args else None
    return int(shape[0]) if shape else None


def protocol_text(calibrated: bool, batches: int | None = None) -> str:
    """``'after BN re-estimation on 4 batches'`` or ``'without BN re-estimation'``."""
    if not calibrated:
        return "without BN re-estimation"
    if not batches:
        return "after BN re-estimation"
    return f"after BN re-estimation on {batches} batch{'es' if batches != 1 else ''}"


def has_batchnorm(model: Any) -> bool:
    """Whether a PyTorch module or Keras model holds a BatchNorm layer (by class name: no
    framework import here), i.e. whether re-estimating its statistics can change a score."""
    if hasattr(model, "modules"):  # torch.nn.Module
        layers = model.modules()
    else:  # keras.Model: nested layers too
        flat = getattr(model, "_flatten_layers", None)
        layers = flat() if callable(flat) else getattr(model, "layers", [])
    return any("BatchNorm" in type(m).__name__ for m in layers)


@dataclass(frozen=True)
class Protocol:
    """How the app scores a pruned model: BN re-estimation (on ``batches``) or not, then the
    evaluator's score function on its images."""

    calibrate: bool
    batches: int | None = None
    images: int | None = None  # calibration images, when they come as one array (Keras)

    def text(self) -> str:
        text = protocol_text(self.calibrate, self.batches)
        return f"{text} on {self.images} images" if self.calibrate and self.images else text


def app_protocol(model: Any, ev: Any, enabled: bool = True) -> Protocol:
    """The app's default: BN re-estimation when ``enabled``, the model has BatchNorm and the
    evaluator has calibration images (it needs no labels)."""
    calibrate = bool(enabled and ev is not None and ev.calib_fn is not None
                     and has_batchnorm(model))
    if not calibrate:
        return Protocol(False)
    batches = calibration_batches(ev.calib_args)
    return Protocol(True, batches, None if batches else calibration_images(ev.calib_args))


def page_job(ev: Any, proto: Protocol) -> ScoreJob:
    """``proto`` with ``ev``'s functions, as the engine takes it (``ana``, ``measure``)."""
    if proto.calibrate:
        return ScoreJob.of(ev.eval_fn, ev.eval_args, ev.calib_fn, ev.calib_args)
    return ScoreJob.of(ev.eval_fn, ev.eval_args, None, ())


def score(model: Any, ev: Any, proto: Protocol, what: str = "the pruned model") -> float:
    """Score ``model`` (a private one: re-estimation changes its BN statistics in place,
    which is what the user then gets) with ``proto``."""
    job = page_job(ev, proto)
    return score_model(model, job.eval_fn, job.eval_args, calibration_fn=job.calibration_fn,
                       calib_args=job.calib_args, what=what)


def score_original(runner: Any, ev: Any, proto: Protocol) -> float:
    """The unpruned model scored with ``proto``, as the analysis scores its baseline: on the
    runner's private copy (a Keras model is never copied by the app, so never calibrated in
    place here)."""
    job = page_job(ev, proto)
    items = [(None, "the original model")]
    return next(s for _, s, _ in runner._score_plans(runner.pruner, items, job))


def measure(preview: Any, ev: Any, proto: Protocol) -> MeasuredPreview:
    """Score ``preview``'s plan on a private sparse copy with ``proto`` (cached in
    ``<model>.measured.json`` per ratio, plan, weights, protocol and images)."""
    job = page_job(ev, proto)
    return preview.measure(job.eval_fn, args=tuple(job.eval_args),
                           calibration_fn=job.calibration_fn, calib_args=tuple(job.calib_args))


def score_line(word: str, value: float, images: int | None, proto_text: str,
               label_free: bool = False) -> str:
    """One line: ``'Measured 62.50 % on 200 images (95 % interval 55.6-68.9), after BN
    re-estimation on 4 batches'`` (a label-free score has no interval: not a proportion)."""
    if label_free:
        text = f"{value:.2f} on {images} images"
    else:
        text = Measured.of(value, images, percent=True).text()
    return f"{word} {text}, {proto_text}"


def versus_line(score: float, images: int | None, other: float, other_images: int | None,
                what: str) -> str:
    """``'-2.31 points vs the unpruned model, within noise (the 95 % intervals overlap)'``."""
    return versus(Measured.of(score, images, percent=True),
                  Measured.of(other, other_images, percent=True), what)


def measured_line(point: Mapping[str, Any], ev: Any, proto: Protocol) -> str:
    """A measured point's line (image count from the scorer, else the evaluator's)."""
    return score_line("Measured", float(point["score"]), point.get("images") or ev.images,
                      proto.text(), label_free=ev.label_free)


def estimate_line(preview: Any, label_free: bool = False) -> str:
    """``'Estimated accuracy 87.2 % — estimate, typically within k points here (...)'``."""
    value = preview.estimate if preview.estimate is not None else preview.predicted_score
    word = "Estimated label-free score" if label_free else "Estimated accuracy"
    if value is None:
        return f"{word}: none (no finished analysis)"
    return f"{word} {value:.1f} % — {preview.estimate_label}"


def page_points(runner: Any, sens: Mapping[str, Any], ev: Any, proto: Protocol
                ) -> list[dict[str, Any]]:
    """The measured points of this model made on the analysed weights with ``proto`` on
    ``ev``'s images, for the "MACs removed vs score" chart."""
    path = measured_path(runner.workspace, runner.name)
    weights = sens.get("weights_digest")
    points = matching_points(path, weights, point_protocol(page_job(ev, proto))) if weights else []
    return sorted(points, key=lambda p: float(p["achieved_removal"]))


def cached_point(runner: Any, sens: Mapping[str, Any], preview: Any, ev: Any, proto: Protocol
                 ) -> dict[str, Any] | None:
    """The saved measurement of ``preview``'s very plan with ``proto``, or None (measure it)."""
    weights = sens.get("weights_digest")
    if not weights:
        return None
    return find_point(measured_path(runner.workspace, runner.name), weights,
                      point_protocol(page_job(ev, proto)), preview.removal_ratio,
                      plan_digest(preview.plan))

"""The words beside a score on the One-step and OFA pages, without streamlit: the one-line
scoring protocol (BatchNorm re-estimation or not, the score function, the images), a score
with its image count and 95 % interval, and a comparison that says "within noise" when two
intervals overlap.

Why one module: a number read on one page must mean the same as on the other, so both build
their captions here (the Sensitivity page's lines live in ``services/previews.py``, whose
``protocol_text`` this module reuses for the BatchNorm part).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from uif_explorer.core.uncertainty import Measured, within_noise
from uif_explorer.services.previews import calibration_batches, calibration_images, protocol_text


def protocol_line(*, score_fn: str | None, images: int | None, data: str | None,
                  calibrated: bool, batches: int | None = None,
                  calib_images: int | None = None) -> str:
    """``'Protocol: top1_accuracy on 64 images of the bundled ..., after BN re-estimation on
    4 batches'``: what every score next to it means, in one line."""
    what = score_fn or "the score function"
    on = f" on {images:,} images" if images else " (image count not recorded)"
    where = f" of {data}" if data else ""
    bn = protocol_text(calibrated, batches)
    if calibrated and batches is None and calib_images:
        bn += f" on {calib_images:,} images"
    return f"Protocol: {what}{on}{where}, {bn}"


def evaluator_protocol(ev: Any, protocol: Mapping[str, Any] | None = None,
                       images: int | None = None) -> str:
    """The protocol line of scores made with the page's evaluator ``ev`` (a ``.search``'s
    recorded ``protocol`` names the functions when given; ``images`` overrides ev's count)."""
    protocol = protocol or {}
    calibrated = bool(protocol.get("bn_reestimation", ev is not None and ev.calib_fn is not None))
    calib_args = ev.calib_args if ev is not None else ()
    return protocol_line(
        score_fn=protocol.get("score") or (getattr(ev.eval_fn, "__name__", None)
                                           if ev is not None else None),
        images=images or (ev.images if ev is not None else None),
        data=ev.data_title if ev is not None else None, calibrated=calibrated,
        batches=calibration_batches(calib_args) if calibrated else None,
        calib_images=calibration_images(calib_args) if calibrated else None)


def measured(score: float | None, images: int | None, label_free: bool = False) -> Measured:
    """A score as :class:`Measured` (no interval for a label-free score: not a proportion)."""
    if label_free:
        return Measured(float(score or 0.0), int(images) if images else None)
    return Measured.of(float(score or 0.0), int(images) if images else None)


def score_text(score: float | None, images: int | None, label_free: bool = False) -> str:
    """``'88.28 % on 64 images (95 % interval 78.2-94.0)'``; 'not scored' for None."""
    if score is None:
        return "not scored"
    if label_free:
        return f"{score:.2f} on {images:,} images" if images else f"{score:.2f}"
    return measured(score, images).text()


def noise_verdict(a: Measured, b: Measured) -> str:
    """'within noise' when the 95 % intervals overlap, else 'beyond noise' (or 'interval
    unknown' when either lacks an image count)."""
    if a.interval is None or b.interval is None:
        return "interval unknown"
    return "within noise" if within_noise(a, b) else "beyond noise"


def compare_line(a_name: str, a: Measured, b_name: str, b: Measured) -> str:
    """``'candidate 3 vs candidate 1: 87.50 % vs 89.06 % (64 and 64 images): within noise,
    the 95 % intervals overlap'``."""
    verdict = noise_verdict(a, b)
    why = {"within noise": ", the 95 % intervals overlap: the difference may be chance",
           "beyond noise": ", the 95 % intervals do not overlap"}.get(verdict, "")
    counts = f"{a.images or '?'} and {b.images or '?'} images"
    return (f"{a_name} vs {b_name}: {a.score:.2f} vs {b.score:.2f} ({counts}): "
            f"{verdict}{why}")


def candidate_measured(search: Mapping[str, Any], cid: int, label_free: bool = False
                       ) -> Measured:
    """Candidate ``cid``'s adaptive-BN score of a ``.search`` file with its image count."""
    cand = next(c for c in search.get("candidates", []) if int(c["id"]) == int(cid))
    images = cand.get("images") or (search.get("baseline") or {}).get("images")
    return measured(cand.get("score"), images, label_free)


def candidates_line(search: Mapping[str, Any], chosen: int, best: int,
                    label_free: bool = False) -> str:
    """The One-step page's comparison of the chosen candidate with the best: both scores
    with their image counts and whether the gap is within noise."""
    a = candidate_measured(search, chosen, label_free)
    if int(chosen) == int(best):
        return f"Candidate {chosen}: {a.text()}; the best by adaptive-BN score."
    b = candidate_measured(search, best, label_free)
    return compare_line(f"Candidate {chosen}", a, f"the best (candidate {best})", b)

"""How sure a score is: the images it was measured on and a 95 % interval.

An accuracy measured on 128 images moves by several points from one image set to the next, so
two candidates 2 points apart may be the same. Scorers report how many images they saw with
:func:`note_images` (the built-in ``top1_accuracy`` and label-free scores do; a user's
``eval_fn`` may call it too and still returns a plain number); the runner reads it with
:func:`take_images` right after the call. Framework-neutral: no torch or TensorFlow here.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

Z95 = 1.959963984540054  # two-sided 95 % normal quantile

_seen = threading.local()


def note_images(n: int) -> None:
    """Say how many images the score being computed was measured on (call inside eval_fn)."""
    _seen.count = int(n)


def take_images() -> int | None:
    """The count noted since the last call (None when the scorer did not say), then forget it."""
    n = getattr(_seen, "count", None)
    _seen.count = None
    return n


def wilson_interval(accuracy: float, n: int, *, percent: bool = True) -> tuple[float, float]:
    """Wilson 95 % interval of an accuracy measured on ``n`` images, in the accuracy's units.

    ``percent=True``: ``accuracy`` is in 0..100 (what ``top1_accuracy`` returns); else 0..1.
    Wilson rather than the normal approximation because it stays inside [0, 100] and is
    honest near 0 % and 100 %, where small image sets put pruned models.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"Expected n, the number of images, an integer >= 1. Received: n={n!r}")
    scale = 100.0 if percent else 1.0
    p = float(accuracy) / scale
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"Expected an accuracy in [0, {scale:g}]. Received: accuracy={accuracy!r}")
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half) * scale, min(1.0, centre + half) * scale


def is_percent(score: float, percent: bool | None = None) -> bool:
    """Whether ``score`` is on the 0..100 scale: as the caller says, else read from the value
    (above 1: percent; 0..1: a fraction, the scale of Keras' ``evaluate`` and sklearn).

    The guess is wrong only for a percent accuracy at or below 1 %, which the built-in scorers
    and the app avoid by saying ``percent=True``.
    """
    return bool(percent) if percent is not None else float(score) > 1.0


@dataclass(frozen=True)
class Measured:
    """A score with what is known of its noise: the image count and a 95 % interval."""

    score: float
    images: int | None = None
    low: float | None = None
    high: float | None = None
    percent: bool = True  # the score's scale: 0..100 (True) or 0..1

    @classmethod
    def of(cls, score: float, images: int | None, *, percent: bool | None = None) -> Measured:
        """The interval is filled in when the image count is known and the score is an
        accuracy inside its scale (``percent``: 0..100, else 0..1; None reads it from the
        value, :func:`is_percent`); other scores carry no interval."""
        pct = is_percent(score, percent)
        n = int(images) if images else None
        if n and 0.0 <= score <= (100.0 if pct else 1.0):
            low, high = wilson_interval(score, n, percent=pct)
            return cls(float(score), n, low, high, pct)
        return cls(float(score), n, percent=pct)

    @property
    def interval(self) -> tuple[float, float] | None:
        return None if self.low is None or self.high is None else (self.low, self.high)

    def text(self) -> str:
        """``'91.41 % on 128 images (95 % interval 85.3-95.2)'`` (a 0..1 score: ``'0.914 on
        128 images (95 % interval 0.853-0.952)'``): the number with its noise."""
        if self.images is None:
            return f"{self.score:.2f} (image count unknown)"
        if self.interval is None:
            return f"{self.score:.4g} on {self.images} images"
        if not self.percent:
            return (f"{self.score:.3f} on {self.images} images "
                    f"(95 % interval {self.low:.3f}-{self.high:.3f})")
        return (f"{self.score:.2f} % on {self.images} images "
                f"(95 % interval {self.low:.1f}-{self.high:.1f})")


def within_noise(a: Measured, b: Measured) -> bool:
    """True when the 95 % intervals of ``a`` and ``b`` overlap: the difference may be noise.

    Scores without an interval are never said to be within noise (nothing is known).
    """
    if a.interval is None or b.interval is None:
        return False
    return a.low <= b.high and b.low <= a.high  # type: ignore[operator]


def versus(a: Measured, b: Measured, what: str) -> str:
    """``'-2.31 points vs unpruned, within noise (the 95 % intervals overlap)'``: a difference
    with what the noise says of it (nothing when an image count is unknown)."""
    if a.interval is None or b.interval is None:
        verdict = ""
    elif within_noise(a, b):
        verdict = ", within noise (the 95 % intervals overlap)"
    else:
        verdict = ", beyond noise (the 95 % intervals do not overlap)"
    unit = " points" if a.percent else ""
    return f"{a.score - b.score:+.2f}{unit} vs {what}{verdict}"

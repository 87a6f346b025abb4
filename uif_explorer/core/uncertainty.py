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


@dataclass(frozen=True)
class Measured:
    """A score with what is known of its noise: the image count and a 95 % interval."""

    score: float
    images: int | None = None
    low: float | None = None
    high: float | None = None

    @classmethod
    def of(cls, score: float, images: int | None, *, percent: bool = True) -> Measured:
        """The interval is filled in when the image count is known and the score is an
        accuracy (0..100 with ``percent``); other scores carry no interval."""
        scale = 100.0 if percent else 1.0
        if images and 0.0 <= score <= scale:
            low, high = wilson_interval(score, int(images), percent=percent)
            return cls(float(score), int(images), low, high)
        return cls(float(score), int(images) if images else None)

    @property
    def interval(self) -> tuple[float, float] | None:
        return None if self.low is None or self.high is None else (self.low, self.high)

    def text(self) -> str:
        """``'91.41 % on 128 images (95 % interval 85.3-95.2)'``: the number with its noise."""
        if self.images is None:
            return f"{self.score:.2f} (image count unknown)"
        if self.interval is None:
            return f"{self.score:.4g} on {self.images} images"
        return (f"{self.score:.2f} % on {self.images} images "
                f"(95 % interval {self.low:.1f}-{self.high:.1f})")


def within_noise(a: Measured, b: Measured) -> bool:
    """True when the 95 % intervals of ``a`` and ``b`` overlap: the difference may be noise.

    Scores without an interval are never said to be within noise (nothing is known).
    """
    if a.interval is None or b.interval is None:
        return False
    return a.low <= b.high and b.low <= a.high  # type: ignore[operator]

"""Preprocessing presets: a decoded image -> the float32 tensor a model expects.

Three presets, all "resize the shorter side, centre crop to the model's input size, scale to
[0, 1], subtract the mean, divide by the std":

- ``imagenet``: resize to ``size / 0.875`` (256 for 224), ImageNet mean/std, RGB. The numbers
  are those of torchvision's ``Resize(256) + CenterCrop(224) + ToTensor() + Normalize(...)`` on
  the same Pillow image (tests/io/test_image_folder.py checks it to 1e-5).
- ``samples``: as the bundled sample models were trained: no extra crop margin, Fashion-MNIST
  mean/std (:data:`uif_explorer.data.MEAN`, ``STD``), grayscale for 1-channel models.
- ``custom``: the caller's mean, std and resize size (the shorter side before the crop).

The channel count (1: grayscale, 3: RGB) and the crop size come from the model's input shape;
``layout`` is ``NCHW`` (PyTorch) or ``NHWC`` (Keras), the same numbers transposed. Pure numpy
and Pillow: no torch or TensorFlow import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_CROP = 0.875  # 224 / 256
PRESETS = ("imagenet", "samples", "custom")
LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class Preprocessing:
    """One way from a Pillow image to a model input; ``__call__`` gives (C, H, W) float32."""

    preset: str
    size: tuple[int, int]  # (H, W) of the crop: the model's input
    channels: int  # 1 (grayscale) or 3 (RGB)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | tuple[int, int]  # shorter side (int) or exact (H, W) before the crop

    def __call__(self, img: Image.Image) -> np.ndarray:
        img = img.convert("L" if self.channels == 1 else "RGB")
        img = _center_crop(img.resize(_resized(img.size, self.resize), Image.BILINEAR), self.size)
        x = np.asarray(img, dtype=np.uint8).astype(np.float32) / np.float32(255)
        x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return (x - mean) / std

    def describe(self) -> str:
        h, w = self.size
        resize = self.resize if isinstance(self.resize, int) else "x".join(map(str, self.resize))
        colour = "grayscale" if self.channels == 1 else "RGB"
        return (f"{self.preset} (resize {resize}, centre crop {h}x{w}, {colour}, "
                f"mean {_fmt(self.mean)}, std {_fmt(self.std)})")

    def to_dict(self) -> dict:
        return asdict(self)


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _resized(image_wh: tuple[int, int], resize: int | tuple[int, int]) -> tuple[int, int]:
    """(W, H) after resizing, as torchvision's ``Resize`` computes it (shorter side to
    ``resize``, the longer one scaled and truncated; or exactly (H, W))."""
    if not isinstance(resize, int):
        return resize[1], resize[0]
    w, h = image_wh
    if w <= h:
        return resize, int(resize * h / w)
    return int(resize * w / h), resize


def _center_crop(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """torchvision's ``CenterCrop`` (same rounding); the image is never smaller than ``size``."""
    h, w = size
    top = int(round((img.height - h) / 2.0))
    left = int(round((img.width - w) / 2.0))
    return img.crop((left, top, left + w, top + h))


def input_size(input_shape: Sequence[int], layout: str) -> tuple[int, tuple[int, int]]:
    """(channels, (H, W)) from a model's input shape, with or without the batch axis."""
    if layout not in LAYOUTS:
        raise ValueError(f"Expected layout 'NCHW' (PyTorch) or 'NHWC' (Keras). Received: "
                         f"layout={layout!r}")
    shape = tuple(int(s) for s in input_shape)
    shape = shape[1:] if len(shape) == 4 else shape
    if len(shape) != 3:
        raise ValueError(f"Expected an image input shape (C, H, W) or (H, W, C), with or without "
                         f"the batch axis. Received: input_shape={tuple(input_shape)}")
    c, h, w = shape if layout == "NCHW" else (shape[2], shape[0], shape[1])
    if c not in (1, 3) or h < 1 or w < 1:
        raise ValueError(f"Expected 1 (grayscale) or 3 (RGB) channels and a positive size "
                         f"({layout}). Received: input_shape={tuple(input_shape)}")
    return c, (h, w)


def _per_channel(values: Sequence[float] | float, channels: int, what: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in np.atleast_1d(np.asarray(values, dtype=np.float64)))
    if len(out) == 1:
        out = out * channels
    if len(out) != channels or not all(np.isfinite(out)):
        raise ValueError(f"Expected {what} as one finite number or {channels} (one per channel). "
                         f"Received: {what}={values!r}")
    if what == "std" and min(out) <= 0:
        raise ValueError(f"Expected std > 0. Received: std={values!r}")
    return out


def preprocessing(preset: str, input_shape: Sequence[int], layout: str = "NCHW", *,
                  mean: Sequence[float] | float | None = None,
                  std: Sequence[float] | float | None = None,
                  resize: int | None = None) -> Preprocessing:
    """The :class:`Preprocessing` of a preset for a model's input shape.

    ``custom`` needs ``mean`` and ``std`` (one value, or one per channel) and takes ``resize``
    (the shorter side before the centre crop; default: the crop size, i.e. no margin)."""
    from uif_explorer.data import MEAN, STD

    channels, size = input_size(input_shape, layout)
    if preset == "imagenet":
        if channels == 1:
            mean, std = (float(np.mean(IMAGENET_MEAN)),), (float(np.mean(IMAGENET_STD)),)
        else:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        margin = IMAGENET_CROP
    elif preset == "samples":
        mean, std, margin = (MEAN,) * channels, (STD,) * channels, 1.0
    elif preset == "custom":
        if mean is None or std is None:
            raise ValueError("Expected mean= and std= for the custom preset (e.g. mean=0.5, "
                             f"std=0.5). Received: mean={mean!r}, std={std!r}")
        mean, std = _per_channel(mean, channels, "mean"), _per_channel(std, channels, "std")
        margin = 1.0
    else:
        raise ValueError(f"Expected preset in {PRESETS}. Received: preset={preset!r}")
    if resize is None:
        resize = (int(size[0] / margin) if size[0] == size[1]
                  else (int(size[0] / margin), int(size[1] / margin)))
    elif int(resize) < min(size):
        raise ValueError(f"Expected resize >= the model's input size {size}. Received: "
                         f"resize={resize}")
    elif size[0] != size[1]:
        raise ValueError(f"Expected no resize= for a non-square input {size}: the image is "
                         f"resized to it exactly. Received: resize={resize}")
    return Preprocessing(preset, size, channels, tuple(mean), tuple(std),
                         resize if isinstance(resize, tuple) else int(resize))

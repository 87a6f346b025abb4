"""Small Pillow-drawn images and class-folder zips for the image-folder tests and the security
corpus (no downloads). Every image is a deterministic function of its arguments."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (40, 30), seed: int = 0,
                mode: str = "RGB") -> bytes:
    """A ``size`` (W, H) picture: a colour gradient with a box and a disc placed by ``seed``,
    so resizing and cropping change its numbers in a way a wrong offset would show."""
    w, h = size
    img = Image.new("RGB", size)
    img.putdata([((x * 255) // max(1, w - 1), (y * 255) // max(1, h - 1), (seed * 53) % 256)
                 for y in range(h) for x in range(w)])
    draw = ImageDraw.Draw(img)
    x0, y0 = (seed * 7) % max(1, w // 2), (seed * 11) % max(1, h // 2)
    draw.rectangle((x0, y0, x0 + w // 3, y0 + h // 4), fill=(255 - seed % 256, 40, 200))
    draw.ellipse((w // 2, h // 3, w // 2 + w // 4, h // 3 + h // 4), fill=(10, 250, seed % 256))
    img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


FORMATS = (("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"))


def class_members(counts: dict[str, int], size: tuple[int, int] = (40, 30),
                  prefix: str = "") -> dict[str, bytes]:
    """``{"<prefix><class>/img<i>.<ext>": bytes}``: PNG, JPEG and WebP in turn."""
    members = {}
    for c, (name, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            fmt, ext = FORMATS[(c + i) % len(FORMATS)]
            members[f"{prefix}{name}/img{i}.{ext}"] = image_bytes(fmt, size, seed=10 * c + i)
    return members


def zip_bytes(members: dict[str, bytes], dirs: tuple[str, ...] = (),
              method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of ``members`` (names as given, even hostile ones) plus empty folder entries."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for d in dirs:
            zf.writestr(zipfile.ZipInfo(d.rstrip("/") + "/", date_time=(2024, 1, 1, 0, 0, 0)),
                        b"")
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = method
            zf.writestr(info, data)
    return buf.getvalue()


def write_tree(root: Path, members: dict[str, bytes]) -> Path:
    """Write ``members`` (relative paths) under ``root``; returns ``root``."""
    for name, data in members.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a pixel-count bomb: the
    header is all a decoder needs to plan a huge allocation)."""
    png = bytearray(image_bytes("PNG", (1, 1)))
    body = b"IHDR" + struct.pack(">II", width, height) + bytes(png[24:29])
    png[12:29] = body
    png[29:33] = struct.pack(">I", zlib.crc32(body))
    return bytes(png)


def fashion_pngs(root: Path, per_class: int) -> tuple[Path, np.ndarray, np.ndarray]:
    """The first ``per_class`` bundled Fashion-MNIST test images of each class written under
    ``root`` as PNG class folders named ``00_T-shirt-top`` ... (sorted order = label order).
    Returns ``root``, the uint8 images and their labels, in the folder's order."""
    from uif_explorer import data as bundled

    x, y = bundled.load_arrays("test")
    pick = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(10)])
    tree = {}
    for j, i in enumerate(pick):
        buf = io.BytesIO()
        Image.fromarray(x[i]).save(buf, format="PNG")
        name = bundled.CLASS_NAMES[y[i]].replace("/", "-")
        tree[f"{y[i]:02d}_{name}/{j:03d}.png"] = buf.getvalue()
    return write_tree(root, tree), x[pick], y[pick]

"""Class-folder image datasets (``cats/1.jpg``, ``dogs/2.png``) from a folder or a zip upload.

The layout is torchvision's ``ImageFolder`` / ``keras.utils.image_dataset_from_directory``: one
folder per class, class index = position of the folder name in sorted order. A zip may wrap
the class folders in one top folder. Every byte is untrusted: archives go through the zip-bomb
and path checks of :mod:`uif_explorer.io.loading`, images are decoded by Pillow (JPEG, PNG and
WebP decoders only) with its decompression-bomb check, and an upload is extracted into a
temporary folder that is renamed into place only when every image decoded: a refused archive
leaves the destination as it was.

Policy (docs/data.md): files that are not JPEG/PNG/WebP (a README, a labels.csv, a .bmp) are
skipped and counted (:attr:`ImageFolder.skipped`); hidden and system files (``.DS_Store``,
``__MACOSX/``, ``Thumbs.db``) are ignored. A file that *is* an image (by content or by its
.jpg/.jpeg/.png/.webp name) but does not decode - truncated, corrupt, too many pixels - is
refused, naming the file: dropping it silently would change the evaluation set. Nested
archives, images outside class folders, class folders without images, fewer than two classes
and folders with no images are refused too.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from uif_explorer.io.loading import LoadError, check_archive, member_parts, sha256_of
from uif_explorer.io.workspace import _fsync_folder, sanitize_name

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")  # the only Pillow decoders ever run on uploads
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar")
ARCHIVE_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b", b"7z\xbc\xaf\x27\x1c", b"Rar!",
                 b"BZh", b"\xfd7zXZ")
IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})
MAX_FILES = 50_000  # files in one dataset (archive members or folder entries)
MAX_DEPTH = 8  # folders below a class folder, plus the class folder and the file
MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # ~89 Mpx: Pillow's decompression-bomb warning level
MAX_CLASS_NAME = 100
SOURCE_MARKER = ".source.json"  # in an extracted folder: the archive's sha256, skipped files
SKIP_NOT_IMAGE = "not a JPEG, PNG or WebP file"
SKIP_OUTSIDE = "outside the class folders"


class ImageFolderError(LoadError):
    """An image folder or archive that cannot be used; the message says what and how to fix."""


# -- one image ------------------------------------------------------------------------------
def _kind(name: str, head: bytes) -> str:
    """'image', 'archive' or 'other', from the content first, then the name."""
    if head[:3] == b"\xff\xd8\xff" or head[:8] == b"\x89PNG\r\n\x1a\n" or (
            head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    low = name.lower()
    if head.startswith(ARCHIVE_MAGIC) or low.endswith(ARCHIVE_SUFFIXES):
        return "archive"
    return "image" if low.endswith(IMAGE_SUFFIXES) else "other"


def decode(data: bytes, where: str) -> Image.Image:
    """A fully decoded Pillow image, or :class:`ImageFolderError` naming ``where``.

    Only the JPEG, PNG and WebP decoders may run; an image over :data:`MAX_PIXELS` is refused
    from its header, before any pixel is decoded (Pillow's decompression-bomb check refuses
    twice that inside ``Image.open``; no global warning filter is changed, jobs run in
    threads)."""
    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)  # reads the header only
        if img.width * img.height > MAX_PIXELS:
            raise Image.DecompressionBombError(f"({img.width * img.height} pixels)")
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow's own text says the same
        size = f"{int(found[1]) / 1e6:.0f}" if found else "too many"
        raise ImageFolderError(
            f"{where} has {size} megapixels; the limit is {MAX_PIXELS / 1e6:.0f}: refused as a "
            "possible decompression bomb. Resize the image (a model's input is far smaller) "
            "and try again."
        ) from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError...
        why = ("no JPEG, PNG or WebP decoder accepts it" if isinstance(exc, UnidentifiedImageError)
               else _first_line(exc))
        raise ImageFolderError(
            f"{where} is not a readable JPEG, PNG or WebP image ({why}): it may be truncated or "
            "corrupt. Replace or remove it and try again."
        ) from None
    return img


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


# -- a dataset ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageFolder:
    """A checked class-folder dataset on disk: ``root/<class>/<file>``, every image decodable.

    ``files`` are paths relative to ``root`` (POSIX), sorted by class then path; ``labels``
    their class indices; ``skipped`` counts files left out, by reason."""

    root: Path
    classes: tuple[str, ...]
    files: tuple[str, ...]
    labels: tuple[int, ...]
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.files)

    def class_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.classes, 0)
        for label in self.labels:
            counts[self.classes[label]] += 1
        return counts

    def image(self, i: int) -> Image.Image:
        """Image ``i``, decoded (the same checks as when the folder was opened)."""
        path = self.root / self.files[i]
        return decode(path.read_bytes(), repr(self.files[i]))

    def check_classes(self, num_outputs: int | None) -> None:
        """Refuse a dataset whose number of classes differs from the model's outputs."""
        check_classes(self.classes, num_outputs)


def check_classes(classes: tuple[str, ...], num_outputs: int | None) -> None:
    """One class folder per model output (``None``: not checked)."""
    if num_outputs is not None and int(num_outputs) != len(classes):
        shown = ", ".join(repr(c) for c in classes[:12]) + (", ..." if len(classes) > 12 else "")
        raise ImageFolderError(
            f"Expected {num_outputs} class folders, one per output of the model. Received "
            f"{len(classes)}: {shown}. Class i is the i-th folder name in sorted order: add or "
            "remove folders so that they match the model's outputs."
        )


@dataclass
class _Scan:
    """What scanning found: images by class, skipped counts, every class folder seen."""

    images: dict[str, list[tuple[str, Callable[[], bytes]]]] = field(default_factory=dict)
    folders: set[str] = field(default_factory=set)
    skipped: dict[str, int] = field(default_factory=dict)
    wrapper: str | None = None  # the single top folder around the class folders, if any

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _ignored(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p in IGNORED_NAMES for p in parts)


def _strip_wrapper(paths: list[tuple[str, ...]]) -> int:
    """1 when every file sits in one top folder that holds folders (the class folders)."""
    return int(len({p[0] for p in paths}) == 1 and any(len(p) >= 3 for p in paths))


def _class_name(name: str, what: str) -> str:
    if len(name) > MAX_CLASS_NAME or any(unicodedata.category(c).startswith("C") for c in name):
        raise ImageFolderError(
            f"The class folder name {name[:40]!r} in {what} is longer than {MAX_CLASS_NAME} "
            "characters or holds control characters. Rename the folder and try again."
        )
    return name


def _scan(files: list[tuple[tuple[str, ...], Callable[[], bytes]]], dirs: list[tuple[str, ...]],
          what: str) -> _Scan:
    """Sort ``files`` (path parts, reader) into classes, reading each once to decide its kind
    and to decode the images."""
    files = [(p, r) for p, r in files if not _ignored(p)]
    dirs = [d for d in dirs if d and not _ignored(d)]
    if len(files) > MAX_FILES:
        raise ImageFolderError(f"{_cap(what)} holds {len(files)} files; the limit is {MAX_FILES}. "
                               "Use a sample of the images.")
    cut = _strip_wrapper([p for p, _ in files])
    scan = _Scan(wrapper=files[0][0][0] if cut else None)
    scan.folders.update(_class_name(d[cut], what) for d in dirs if len(d) > cut)
    for parts, read in sorted(files, key=lambda f: f[0]):
        rel, data = parts[cut:], read()
        where = f"{'/'.join(parts)!r} in {what}"
        kind = _kind(rel[-1], data[:16])
        if kind == "archive":
            raise ImageFolderError(f"{where} is an archive inside the archive; refused. Unzip "
                                   "it and zip the class folders themselves.")
        if len(rel) > MAX_DEPTH:
            raise ImageFolderError(f"{where} is nested more than {MAX_DEPTH} folders deep. "
                                   "Move the images up into their class folder.")
        if kind == "other":
            scan.skip(SKIP_NOT_IMAGE if len(rel) > 1 else SKIP_OUTSIDE)
            continue
        if len(rel) == 1:
            raise ImageFolderError(
                f"The image {where} is not in a class folder. Put every image in a folder "
                "named after its class (cats/1.jpg, dogs/2.jpg) and try again.")
        decode(data, where)
        name = _class_name(rel[0], what)
        scan.folders.add(name)
        scan.images.setdefault(name, []).append(("/".join(rel[1:]), read))
    _check_classes_found(scan, what)
    return scan


def _check_classes_found(scan: _Scan, what: str) -> None:
    if not scan.images:
        skipped = sum(scan.skipped.values())
        raise ImageFolderError(
            f"{_cap(what)} holds no JPEG, PNG or WebP images ({skipped} other file(s) skipped). "
            "Expected one folder per class with the images inside (cats/1.jpg, dogs/2.jpg).")
    empty = sorted(scan.folders - set(scan.images))
    if empty:
        raise ImageFolderError(
            f"The class folder {empty[0]!r} in {what} holds no JPEG, PNG or WebP images"
            f"{f' (nor do {len(empty) - 1} other folder(s))' if len(empty) > 1 else ''}. Add "
            "images to it or remove it: every folder is a class the model must predict.")
    if len(scan.images) < 2:
        raise ImageFolderError(
            f"{_cap(what)} holds a single class folder ({next(iter(scan.images))!r}). Expected at "
            "least two: one folder per class, each with its images.")


def _in_order(images: list[tuple[str, Callable[[], bytes]]]) -> list:
    return sorted(images, key=lambda image: image[0])


def _folder(root: Path, scan: _Scan, names: Callable[[str, int, str], str]) -> ImageFolder:
    classes = tuple(sorted(scan.images))
    files, labels = [], []
    for label, name in enumerate(classes):
        for i, (rel, _) in enumerate(_in_order(scan.images[name])):
            files.append(f"{name}/{names(name, i, rel)}")
            labels.append(label)
    return ImageFolder(root, classes, tuple(files), tuple(labels), dict(scan.skipped))


# -- from a folder --------------------------------------------------------------------------
def _walk(root: Path) -> Iterator[tuple[tuple[str, ...], bool]]:
    """(parts relative to root, is_dir) for everything below root. Symbolic links are followed
    (a local folder is the caller's own; torchvision does the same), no deeper than a file
    may be nested plus one level, so a link loop ends and a too-deep file is still reported."""
    count = 0
    for here, dirnames, filenames in os.walk(root, followlinks=True):
        base = Path(here).relative_to(root).parts
        if len(base) > MAX_DEPTH + 1:
            dirnames[:] = []
        dirnames.sort()
        for d in dirnames:
            yield (*base, d), True
        for f in filenames:
            count += 1
            if count > MAX_FILES:
                raise ImageFolderError(f"The folder {str(root)!r} holds more than {MAX_FILES} "
                                       "files. Use a sample of the images.")
            yield (*base, f), False


def open_image_folder(path: str | os.PathLike, num_outputs: int | None = None) -> ImageFolder:
    """Check a local class-folder dataset (every image decoded once) and describe it."""
    root = Path(path)
    if not root.is_dir():
        raise ImageFolderError(f"Expected a folder of class folders. Received: path={str(path)!r} "
                               "(not a folder). For a zip, use extract_image_zip.")
    entries = list(_walk(root))
    files = [(p, lambda p=p: (root.joinpath(*p)).read_bytes()) for p, d in entries if not d]
    dirs = [p for p, d in entries if d]
    scan = _scan(files, dirs, f"the folder {root.name!r}")
    check_classes(tuple(sorted(scan.images)), num_outputs)
    folder = _folder(root / scan.wrapper if scan.wrapper else root, scan, lambda _c, _i, r: r)
    skipped = _marker(root).get("skipped")  # extracted from a zip: what was skipped then
    if isinstance(skipped, dict):
        folder.skipped.update({str(k): int(v) for k, v in skipped.items() if isinstance(v, int)})
    return folder


def _marker(root: Path) -> dict:
    """The ``.source.json`` that :func:`extract_image_zip` writes, or {} (none, or unreadable)."""
    try:
        value = json.loads((root / SOURCE_MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# -- from a zip -----------------------------------------------------------------------------
def _zip_entries(zf: zipfile.ZipFile) -> tuple[list, list[tuple[str, ...]]]:
    fix = "Zip the class folders themselves (cats/1.jpg, dogs/2.jpg)."
    files, dirs = [], []
    for info in zf.infolist():
        try:
            parts = tuple(p for p in member_parts(info, fix) if p not in ("", "."))
        except LoadError as exc:
            raise ImageFolderError(str(exc)) from None
        if not parts:
            continue
        if info.is_dir():
            dirs.append(parts)
        else:
            files.append((parts, lambda i=info: zf.read(i)))
            dirs.extend(parts[:k] for k in range(1, len(parts)))
    if len(files) > MAX_FILES:
        raise ImageFolderError(f"The archive holds {len(files)} files; the limit is {MAX_FILES}."
                               " Use a sample of the images.")
    return files, sorted(set(dirs))


def extract_image_zip(data: bytes, dest: str | os.PathLike, num_outputs: int | None = None
                      ) -> ImageFolder:
    """Check a zip of class folders and extract its images into ``dest`` (created).

    Everything is checked before anything is visible: the archive (size, ratio, CRCs), every
    member name, every image (decoded), the classes (against ``num_outputs``). The images are
    written into a temporary folder next to ``dest`` and renamed to ``dest`` at the end; on any
    refusal the temporary folder is removed and ``dest`` is untouched. File names are rewritten
    (``000000_<sanitised name>``, in sorted order) so no name from the archive becomes a path.
    When ``dest`` already holds this same archive's images (``.source.json``) it is reused; any
    other existing ``dest`` is refused.
    """
    dest = Path(dest)
    sha = sha256_of(data)
    if dest.exists():
        if _marker(dest).get("sha256") == sha:
            return open_image_folder(dest, num_outputs)
        raise ImageFolderError(f"Expected a new folder to extract the images into. Received: "
                               f"dest={str(dest)!r}, which exists. Choose another folder.")
    if data[:2] != b"PK":
        raise ImageFolderError("Expected a .zip of class folders (cats/1.jpg, dogs/2.jpg). "
                               "Received a file that is not a zip archive.")
    try:
        check_archive(data)
    except LoadError as exc:
        raise ImageFolderError(str(exc)) from None
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        files, dirs = _zip_entries(zf)
        scan = _scan(files, dirs, "the archive")
        check_classes(tuple(sorted(scan.images)), num_outputs)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        try:
            folder = _write(tmp, scan)
            marker = {"sha256": sha, "skipped": folder.skipped}
            (tmp / SOURCE_MARKER).write_text(json.dumps(marker) + "\n")
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    _fsync_folder(dest.parent)
    return ImageFolder(dest, folder.classes, folder.files, folder.labels, folder.skipped)


def _write(tmp: Path, scan: _Scan) -> ImageFolder:
    """Write the scanned images under ``tmp`` with safe names, in their sorted order."""
    def name(_cls: str, i: int, rel: str) -> str:
        return f"{i:06d}_{sanitize_name(rel.rsplit('/', 1)[-1])}"

    folder = _folder(tmp, scan, name)
    readers = {f"{c}/{name(c, i, rel)}": read for c in scan.images
               for i, (rel, read) in enumerate(_in_order(scan.images[c]))}
    for rel in folder.files:
        path = tmp / rel
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(readers[rel]())
    return folder


def read_image_source(source: str | os.PathLike | bytes, dest: str | os.PathLike | None,
                      num_outputs: int | None = None) -> ImageFolder:
    """An :class:`ImageFolder` from zip bytes, a ``.zip`` path or a folder path (zips are
    extracted into ``dest``, which they need), its classes checked against ``num_outputs``."""
    if not isinstance(source, bytes):
        path = Path(source)
        if path.is_dir():
            return open_image_folder(path, num_outputs)
        if not path.is_file():
            raise ImageFolderError(f"Expected a folder of class folders or a .zip of them. "
                                   f"Received: {str(path)!r}, which does not exist.")
        source = path.read_bytes()
    if dest is None:
        raise ImageFolderError("Expected dest= (a new folder to extract the zip into).")
    return extract_image_zip(source, dest, num_outputs)


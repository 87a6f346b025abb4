"""``workspace.json``: which model a workspace folder is about, written by the CLI and read
when the app opens the folder (zipped) elsewhere (conventions.md).

:class:`ModelChoice` is that record: a model id (``resnet20``, ``torchvision:resnet50``), an
optional weights file, classes and input shape. It resolves into the same ``ModelSource`` the
app uses (``model_source.from_model_id``), so the CLI and the app share one model stack.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from uif_explorer import zoo
from uif_explorer.io import loading
from uif_explorer.io.loading import LoadError
from uif_explorer.io.workspace import atomic_write_bytes, atomic_write_json, sanitize_name
from uif_explorer.services import uploads
from uif_explorer.services.model_source import (
    DEFAULT_SAMPLE,
    TORCHVISION_PREFIX,
    ModelSource,
    from_model_id,
    sample_source,
)

INFO_FILE = "workspace.json"


@dataclass
class ModelChoice:
    """How to rebuild a model: registry id, optional weights file, classes, input shape."""

    model_id: str = DEFAULT_SAMPLE
    weights: str | None = None
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def resolve(self) -> tuple[ModelSource, Any]:
        """``(source, model)``; LoadError with a fix for a bad id or weights file."""
        return from_model_id(self.model_id, weights=self.weights, num_classes=self.num_classes,
                             input_shape=self.input_shape)

    def build(self) -> Any:
        """The model in eval mode."""
        return self.resolve()[1]

    def example_input(self) -> Any:
        source = self.resolve()[0]
        return source.backend.example_input(source.input_shape)


def write_workspace_info(workdir: str | Path, choice: ModelChoice, weights_digest: str,
                         name: str | None = None, source: ModelSource | None = None) -> None:
    """Record which model a workspace folder is about, so the app can reopen it elsewhere
    (``name``: the runner's file stem, when it was given one)."""
    source = source or choice.resolve()[0]
    info = {"format_version": 1, "kind": "uif-explorer-workspace",
            "framework": source.framework, **asdict(choice), "weights_digest": weights_digest}
    if name:
        info["name"] = str(name)
    info["input_shape"] = list(source.input_shape)
    atomic_write_json(Path(workdir) / INFO_FILE, info)


def read_workspace_info(workdir: str | Path) -> ModelChoice:
    path = Path(workdir) / INFO_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise LoadError(f"No {path}: this folder was not made by UIF Explorer.") from exc
    except ValueError as exc:
        raise LoadError(f"{path} is not valid JSON.") from exc
    return ModelChoice(info.get("model_id", DEFAULT_SAMPLE), info.get("weights"),
                       info.get("num_classes"), tuple(info["input_shape"])
                       if info.get("input_shape") else None)


# -- a zipped workspace folder made elsewhere (CLI / API), opened in the app -------------------
def import_workspace(folder: str | Path, data: bytes) -> tuple[ModelSource, list[str]]:
    """Extract a zipped workspace folder into ``folder`` and return the model it names.

    Members are checked by :func:`loading.workspace_members` (no absolute paths, ``..``,
    symlinks or unknown types) and written under their sanitised base names. The returned
    source is named like the archive's ``.sens`` / ``.search`` files, so the pages find them.
    """
    members = loading.workspace_members(data)
    try:
        info = json.loads(members["workspace.json"])
    except ValueError as exc:
        raise LoadError("The archive's workspace.json is not valid JSON.") from exc
    if not isinstance(info, dict) or info.get("kind") not in (None, "uif-explorer-workspace"):
        raise LoadError("The archive's workspace.json was not written by UIF Explorer.")
    model_id = str(info.get("model_id") or DEFAULT_SAMPLE)
    shape = tuple(int(d) for d in info.get("input_shape") or ()) or None
    weights = info.get("weights")
    notes: list[str] = []
    if weights:
        base = sanitize_name(Path(str(weights)).name)
        if base not in members:
            raise LoadError(
                f"The workspace was made with the weights file {Path(str(weights)).name!r}, "
                "which is not in the archive. Put it into the folder before zipping, or "
                f"upload it on the Model page for the architecture {model_id!r}."
            )
        arch = model_id if (model_id.startswith(TORCHVISION_PREFIX)
                            or model_id in zoo.TORCH_SAMPLES) else None
        if arch is None:
            raise LoadError(f"The workspace names the model {model_id!r}, which is not a "
                            "registry architecture (a sample or torchvision:<name>).")
        num_classes = int(info.get("num_classes") or (10 if arch in zoo.SAMPLE_MODELS
                                                       else 1000))
        source, _ = uploads.from_weights(folder, members[base], arch, num_classes, shape)
    elif model_id in zoo.SAMPLE_MODELS:
        source = sample_source(model_id)
    else:
        raise LoadError(
            f"The workspace names {model_id!r} without weights; only sample models come with "
            "their weights. Add the weights file to the folder, zip it again and upload it."
        )
    written = []
    for name, blob in members.items():
        if weights and name == sanitize_name(Path(str(weights)).name):
            continue  # stored as uploads/<sha256>.<ext> by from_weights
        atomic_write_bytes(Path(folder) / name, blob)
        written.append(name)
    stems = _run_names(members)
    named = sanitize_name(str(info["name"])) if info.get("name") else None
    if named in stems:
        stems.remove(named)
        stems.insert(0, named)
    if stems:
        if len(stems) > 1:
            notes.append(f"The archive holds analyses of several models ({', '.join(stems)}); "
                         f"showing {stems[0]}.")
        source = dataclasses.replace(source, name=stems[0])
    notes.append(f"Extracted {len(written)} file(s) into this session's workspace.")
    return source, notes


def _run_names(members: dict[str, bytes]) -> list[str]:
    """The model names (file stems) of the archive's analyses, then of its searches."""
    names: list[str] = []
    for suffix in (".sens", ".search"):
        for member, blob in sorted(members.items()):
            if not member.endswith(suffix):
                continue
            try:
                model = json.loads(blob).get("model")
            except (ValueError, AttributeError):
                continue
            if isinstance(model, str) and sanitize_name(model) not in names:
                names.append(sanitize_name(model))
    return names

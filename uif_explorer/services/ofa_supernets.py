"""OFA supernets as workspace files, for the OFA page and ``uif-explorer ofa-train``: the
bundled ones and those trained into a workspace (``<stem>.json`` + ``<stem>.safetensors``,
``save_supernet``), loading them and training a new one. No streamlit."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from uif_explorer import data, zoo
from uif_explorer.io.workspace import WorkspaceError, read_json, sanitize_name
from uif_explorer.services import eval_data

BUNDLED = ("mobilenetv2_small", "resnet20")
"""Sample models with a trained supernet and a precomputed search in ``sample_models/``."""
SUPERNET_KIND = "uif-explorer-supernet"
EXPAND_RATIO = (0.5, 0.75, 1.0)

Progress = Callable[[int, int | None, dict[str, Any]], object]


# -- supernets -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SupernetRef:
    """A supernet the page can show: bundled (read-only) or trained into a workspace."""

    key: str  # "bundled:<sample>" or "workspace:<stem>"
    sample: str  # the sample model it was made from (its architecture and teacher)
    path: Path  # the supernet's JSON file
    bundled: bool
    label: str
    info: dict

    @property
    def name(self) -> str:
        """The supernet's model name (``info["model"]``), used to name its searches."""
        return str(self.info.get("model") or self.path.stem)


def _supernet_label(sample: str, info: Mapping[str, Any], bundled: bool) -> str:
    title = zoo.get_sample(sample).title if sample in zoo.SAMPLE_MODELS else sample
    train = info.get("training") or {}
    budget = []
    if train.get("epochs"):
        budget.append(f"{train['epochs']} epoch(s)")
    if train.get("images"):
        budget.append(f"{int(train['images']):,} images")
    what = "bundled supernet" if bundled else "trained in this workspace"
    return f"{title}: {what}" + (f", {', '.join(budget)}" if budget else "")


def bundled_supernets() -> list[SupernetRef]:
    """The bundled trained supernets whose files are present."""
    from uif_explorer.torch.ofa.bundled import supernet_path

    refs = []
    for sample in BUNDLED:
        path = supernet_path(sample)
        if path.exists() and path.with_suffix(".safetensors").exists():
            info = read_json(path, kind=SUPERNET_KIND)
            refs.append(SupernetRef(f"bundled:{sample}", sample, path, True,
                                    _supernet_label(sample, info, True), info))
    return refs


def workspace_supernets(folder: Path) -> list[SupernetRef]:
    """Supernets saved in a workspace folder (a ``.json`` with a ``.safetensors`` beside it)."""
    refs = []
    for path in sorted(Path(folder).glob("*.json")):
        if not path.with_suffix(".safetensors").exists():
            continue
        try:
            info = read_json(path, kind=SUPERNET_KIND)
        except (WorkspaceError, OSError, ValueError):
            continue
        sample = str(info.get("sample") or "")
        if sample not in zoo.TORCH_SAMPLES:
            continue  # made from a model the app cannot rebuild
        refs.append(SupernetRef(f"workspace:{path.stem}", sample, path, False,
                                _supernet_label(sample, info, False), info))
    return refs


def list_supernets(folder: Path | None) -> list[SupernetRef]:
    """Bundled supernets first, then the workspace's."""
    return bundled_supernets() + (workspace_supernets(folder) if folder is not None else [])


def load_supernet_at(sample: str, path: str | Path, bundled: bool, name: str
                     ) -> tuple[Any, nn.Module]:
    """``(pruner, ofa_model)`` of a supernet file; the pruner's model is the trained sample.

    Plain arguments so that a cache can key on them."""
    from uif_explorer.services.torch_backend import TRACE_LOCK
    from uif_explorer.torch.ofa import load_bundled_supernet, load_supernet

    with TRACE_LOCK:  # the OFA pruner captures the model (torch.export)
        if bundled:
            return load_bundled_supernet(sample)
        model = zoo.load_torch_sample(sample)
        return load_supernet(model, zoo.example_input(sample), Path(path), name=name)


def load_supernet_ref(ref: SupernetRef) -> tuple[Any, nn.Module]:
    return load_supernet_at(ref.sample, ref.path, ref.bundled, ref.name)


def supernet_span(ofa_model: nn.Module) -> tuple[float, float]:
    """MACs (M) of the min and the max subnet (analytic; nothing is built or activated)."""
    from uif_explorer.torch.ofa.space import space_of

    space = space_of(ofa_model)
    return (float(space.cost_m(space.choice.smallest())[0]),
            float(space.cost_m(space.choice.largest())[0]))


def recorded_span(ref: SupernetRef) -> tuple[float, float] | None:
    """The min/max subnet MACs (M) recorded in the supernet's JSON, when there."""
    macs = ref.info.get("macs") or {}
    if macs.get("min_subnet") is None or macs.get("max_subnet") is None:
        return None
    return float(macs["min_subnet"]), float(macs["max_subnet"])


def input_label(sample: str) -> str:
    return "x".join(str(v) for v in zoo.example_input(sample).shape)


def settings_tag(settings: Mapping[str, Any]) -> str:
    """6 hex digits naming a set of settings (same settings -> same files -> resume)."""
    text = json.dumps(dict(settings), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def train_settings(sample: str, images: int, epochs: int, lr: float, batch_size: int = 64,
                   expand_ratio: Sequence[float] = EXPAND_RATIO, channel_divisible: int = 8
                   ) -> dict[str, Any]:
    """What names a trained supernet (same settings -> same files, replaced)."""
    return {"sample": sample, "images": int(images), "epochs": int(epochs), "lr": float(lr),
            "batch_size": int(batch_size), "expand_ratio": [float(r) for r in expand_ratio],
            "channel_divisible": int(channel_divisible)}


def supernet_stem(sample: str, settings: Mapping[str, Any]) -> str:
    return sanitize_name(f"{sample}_supernet_{settings_tag(settings)}")


def train_supernet(sample: str, folder: Path, *, images: int = 512, epochs: int = 1,
                   lr: float = 0.02, batch_size: int = 64,
                   expand_ratio: Sequence[float] = EXPAND_RATIO, channel_divisible: int = 8,
                   eval_images: int = 500, name: str | None = None,
                   progress: Progress | None = None) -> Path:
    """Make a supernet from a trained sample model, sandwich-train it briefly, save it.

    Starts from the sample's trained weights (the teacher is the sample itself), trains on the
    first ``images`` of the bundled training subset, then measures the max and min subnets
    (BatchNorm calibrated) on the first ``eval_images`` test images (0: skip). Returns the
    JSON path (``<folder>/<name>.json``; default name from the settings).
    """
    import copy
    import time

    import torch

    from uif_explorer.torch.evaluation import adaptive_bn_calibration
    from uif_explorer.torch.ofa import OFAPruner, get_static_subnet, sample_subnet, save_supernet
    from uif_explorer.torch.ofa import train as ofa_train

    if sample not in zoo.TORCH_SAMPLES:
        raise ValueError(f"Expected a PyTorch sample model ({', '.join(zoo.TORCH_SAMPLES)}). "
                         f"Received: {sample!r}")
    for value, what in ((images, "images"), (epochs, "epochs"), (batch_size, "batch_size")):
        if int(value) < 1:
            raise ValueError(f"Expected {what} >= 1. Received: {value}")
    settings = train_settings(sample, images, epochs, lr, batch_size, expand_ratio,
                              channel_divisible)
    stem = sanitize_name(name) if name else supernet_stem(sample, settings)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    teacher = zoo.load_torch_sample(sample)
    torch.manual_seed(0)
    pruner = OFAPruner(copy.deepcopy(teacher), zoo.example_input(sample), name=stem)
    ofa_model = pruner.ofa_model(list(expand_ratio), int(channel_divisible))
    loader = data.torch_loader("train", batch_size=int(batch_size), limit=int(images), seed=0)
    start = time.perf_counter()
    table = ofa_train(ofa_model, teacher, loader, epochs=int(epochs), lr=float(lr),
                      progress=progress, seed=0)
    seconds = time.perf_counter() - start
    accuracy: dict[str, Any] = {}
    macs: dict[str, float] = {}
    for mode in ("max", "min"):
        _, setting = sample_subnet(ofa_model, mode)
        static, _, m, _ = get_static_subnet(ofa_model, setting)
        macs[f"{mode}_subnet"] = m
        if eval_images:
            adaptive_bn_calibration(static, eval_data.calib_loader())
            accuracy[f"{mode}_subnet"] = eval_data.accuracy(static, int(eval_images))
    sample_subnet(ofa_model, "max")
    if eval_images:
        accuracy["original"] = eval_data.accuracy(teacher, int(eval_images))
        accuracy["test_data"] = eval_data.data_source(int(eval_images)) + ", %"
        accuracy["bn_calibration"] = (f"{eval_data.CALIB_BATCHES} training batches of 64 "
                                      "(subnets only)")
    return save_supernet(
        ofa_model, folder / stem, sample=sample, base="trained sample weights",
        training={"epochs": int(epochs), "lr": float(lr), "batch_size": int(batch_size),
                  "images": int(images), "optimizer": "sgd nesterov 0.9", "schedule": "cosine",
                  "data": f"first {int(images):,} images of the bundled Fashion-MNIST train "
                  "subset", "distillation": True, "seconds": round(seconds, 1),
                  "loss_per_epoch": [float(v) for v in table["loss"]]},
        accuracy=accuracy, macs=macs, settings=settings,
    )

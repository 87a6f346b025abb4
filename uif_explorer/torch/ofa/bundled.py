"""Saving and loading trained supernets without pickle; the supernets bundled with the repo.

A supernet is two files next to each other:

* ``<stem>.safetensors``: the OFA model's ``state_dict()`` (same keys and shapes as the
  original architecture, channels in importance order);
* ``<stem>.json``: ``{"format_version": 1, "kind": "uif-explorer-supernet", "model": ...,
  "ofa_args": {...}, "graph_digest": ..., "weights_digest": ..., ...}``.

Loading builds the architecture, makes the OFA model with the recorded ``ofa_args`` and loads
the weights. Which positions a subnet keeps depends only on the architecture and the arguments
(always the first k of every occurrence class), not on the importance order found when the
model was made, so any fresh copy of the architecture takes the saved weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from uif_explorer.io.workspace import (
    WorkspaceError,
    atomic_write_bytes,
    atomic_write_json,
    read_json,
)
from uif_explorer.torch.capture import digest_weights
from uif_explorer.torch.ofa.pruner import OFAPruner
from uif_explorer.torch.ofa.space import space_of, unwrap

SUPERNET_KIND = "uif-explorer-supernet"


def _stem(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".json", ".safetensors") else p


def save_supernet(ofa_model: nn.Module, path: str | os.PathLike, **meta: Any) -> Path:
    """Write ``<stem>.safetensors`` and ``<stem>.json`` atomically; returns the JSON path."""
    inner = unwrap(ofa_model)
    space = space_of(inner)
    stem = _stem(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in inner.state_dict().items()}
    atomic_write_bytes(stem.with_suffix(".safetensors"), safetensors_bytes(state))
    info = {
        "format_version": 1, "kind": SUPERNET_KIND, "model": space.model_name,
        "ofa_args": dict(space.args), "graph_digest": space.capture.graph.graph_digest(),
        "weights_digest": digest_weights(inner), "weights_file": stem.name + ".safetensors",
        **meta,
    }
    atomic_write_json(stem.with_suffix(".json"), info)
    return stem.with_suffix(".json")


def load_supernet(model: nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor],
                  path: str | os.PathLike, name: str | None = None
                  ) -> tuple[OFAPruner, nn.Module]:
    """``(pruner, ofa_model)`` for ``model``'s architecture with the supernet's weights.

    ``model`` is also the pruner's original model (the teacher). The OFA model is in eval
    mode with the max subnet active.
    """
    stem = _stem(path)
    info = read_json(stem.with_suffix(".json"), kind=SUPERNET_KIND)
    pruner = OFAPruner(model, inputs, name=name or info.get("model"))
    args = info["ofa_args"]
    ofa = pruner.ofa_model(args["expand_ratio"], args["channel_divisible"],
                           args.get("excludes") or None, args["auto_add_excludes"])
    digest = space_of(ofa).capture.graph.graph_digest()
    if digest != info.get("graph_digest"):
        raise WorkspaceError(f"{stem}.json was saved for another architecture (graph digest "
                             f"{info.get('graph_digest')} != {digest}).")
    weights = stem.parent / info.get("weights_file", stem.name + ".safetensors")
    ofa.load_state_dict(load_file(str(weights), device="cpu"), strict=True)
    return pruner, ofa.eval()


def supernet_path(name: str) -> Path:
    from uif_explorer.zoo import SAMPLE_DIR

    return SAMPLE_DIR / f"{name}_supernet.json"


def load_bundled_supernet(name: str) -> tuple[OFAPruner, nn.Module]:
    """The trained supernet of a sample model (``mobilenetv2_small``, ``resnet20``).

    The pruner's model (the teacher, the original) is the trained sample model when its
    weights are present, else the untrained architecture.
    """
    from uif_explorer.zoo import build_torch, example_input, load_torch_sample

    path = supernet_path(name)
    if not path.exists():
        raise FileNotFoundError(
            f"No bundled supernet at {path}; train it with "
            f"`.venv/bin/python sample_models/train_supernet.py --only {name}`.")
    try:
        model = load_torch_sample(name)
    except FileNotFoundError:
        model = build_torch(name).eval()
    return load_supernet(model, example_input(name), path, name=f"{name}_supernet")


def bundled_search(name: str) -> dict[str, Any]:
    """The precomputed evolutionary search of a bundled supernet (history, Pareto set/front)."""
    from uif_explorer.torch.ofa.search import load_search

    path = supernet_path(name).with_name(f"{name}_supernet_evolution.json")
    if not path.exists():
        raise FileNotFoundError(
            f"No precomputed search at {path}; run "
            f"`.venv/bin/python sample_models/train_supernet.py --only {name} --search-only`.")
    return load_search(path)


__all__ = ["bundled_search", "load_bundled_supernet", "load_supernet", "save_supernet",
           "supernet_path"]

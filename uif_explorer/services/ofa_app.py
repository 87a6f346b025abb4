"""What the OFA Pareto page and the ``ofa-*`` CLI commands compute, without streamlit.

Supernets and searches are plain workspace files (``docs/ofa.md``): a supernet is
``<stem>.json`` + ``<stem>.safetensors`` (``save_supernet``), a search is
``<name>_evolution.json`` (``run_evolutionary_search``). Next to a search made by the app or the
CLI, ``<name>_evolution.meta.json`` records the data it was scored on, so every accuracy on
screen can name its source. Bundled supernets and their searches live in ``sample_models/``
and are never written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from uif_explorer import zoo
from uif_explorer.io.workspace import atomic_write_json, sanitize_name
from uif_explorer.services import eval_data
from uif_explorer.services.ofa_searches import (  # noqa: F401 - the page's one import
    BUNDLED_SEARCH_DATA,
    EVOLUTION_KIND,
    META_KIND,
    SEARCH_SCORE_FN,
    SearchRef,
    check_range,
    default_macs_step,
    list_searches,
    newest_search,
    planned_evaluations,
    read_search,
    read_search_meta,
    run_search,
    search_data_source,
    search_name,
    search_settings,
    write_search_meta,
)
from uif_explorer.services.ofa_supernets import (  # noqa: F401
    BUNDLED,
    EXPAND_RATIO,
    SUPERNET_KIND,
    SupernetRef,
    bundled_supernets,
    input_label,
    list_supernets,
    load_supernet_at,
    load_supernet_ref,
    recorded_span,
    settings_tag,
    supernet_span,
    supernet_stem,
    train_settings,
    train_supernet,
    workspace_supernets,
)
from uif_explorer.services.pruned import OFA_SUBNET, PrunedModel
from uif_explorer.services.score_lines import measured, noise_verdict, protocol_line
from uif_explorer.services.torch_backend import out_widths


# -- showing a search ------------------------------------------------------------------------
def macs_span(evo: Mapping[str, Any]) -> tuple[float, float]:
    """(min, max) MACs (M) of the supernet's subnets (the slider's bounds)."""
    rng = evo.get("range") or {}
    macs = [float(r["macs"]) for r in evo.get("history", [])]
    lo = rng.get("min_subnet_macs", min(macs) if macs else 0.0)
    hi = rng.get("max_subnet_macs", max(macs) if macs else 1.0)
    return float(lo), float(hi)


def slider_bounds(span: tuple[float, float]) -> tuple[float, float, float]:
    """(min, max, step) of a MACs slider covering ``span`` with round ends (millions)."""
    lo, hi = span
    step = 10 ** math.floor(math.log10(max(hi - lo, 1e-6) / 100))
    step = float(f"{step:.6g}")
    return (round(math.floor(lo / step) * step, 6), round(math.ceil(hi / step) * step, 6), step)


def scored(evo: Mapping[str, Any]) -> list[dict[str, Any]]:
    metric = evo.get("metric", "acc1")
    return [r for r in evo.get("history", []) if r.get(metric) is not None]


def in_range(evo: Mapping[str, Any], macs_range: tuple[float, float] | None
             ) -> list[dict[str, Any]]:
    """The scored subnets within ``macs_range`` (inclusive; None: all)."""
    recs = scored(evo)
    if macs_range is None:
        return recs
    lo, hi = (float(v) for v in macs_range)
    return [r for r in recs if lo <= float(r["macs"]) <= hi]


def front_ids(evo: Mapping[str, Any], macs_range: tuple[float, float] | None = None
              ) -> list[str]:
    """Net ids on the Pareto front of the subnets in the range, by MACs."""
    from uif_explorer.core.evolution import pareto_front

    recs = in_range(evo, macs_range)
    front = pareto_front(recs, evo.get("metric", "acc1"), evo.get("mode", "max")) if recs else []
    return [r["net_id"] for r in sorted(front, key=lambda r: float(r["macs"]))]


def selected_ids(event: Any) -> list[str]:
    """Net ids of a plotly selection event (``customdata[0]``), in order, without repeats."""
    points = []
    if event:
        sel = event.get("selection") if isinstance(event, Mapping) else \
            getattr(event, "selection", None)
        if sel:
            points = sel.get("points", []) if isinstance(sel, Mapping) else \
                getattr(sel, "points", [])
    out: list[str] = []
    for p in points or []:
        custom = p.get("customdata") if isinstance(p, Mapping) else None
        if custom:
            nid = str(custom[0] if isinstance(custom, (list, tuple)) else custom)
            if nid not in out:
                out.append(nid)
    return out


MAX_PICKS = 6


def merge_selection(picks: Sequence[str], selection: Sequence[str]) -> list[str]:
    """The comparison after a plot selection: one clicked point toggles (added at the end, or
    removed when already there); a box of several points replaces the comparison. At most
    ``MAX_PICKS`` subnets are kept (the newest)."""
    picks = list(picks)
    if len(selection) == 1:
        nid = selection[0]
        picks = [p for p in picks if p != nid] if nid in picks else [*picks, nid]
    elif selection:
        picks = list(selection)
    return picks[-MAX_PICKS:]


def record(evo: Mapping[str, Any], net_id: str) -> dict[str, Any]:
    for r in evo.get("history", []):
        if r["net_id"] == net_id:
            return r
    raise KeyError(f"No subnet {net_id!r} in this search.")


def subnet_label(r: Mapping[str, Any], metric: str = "acc1") -> str:
    return f"{r['net_id']} ({float(r['macs']):.3f} M MACs, {float(r[metric]):.2f} %)"


def subnets_table(evo: Mapping[str, Any], macs_range: tuple[float, float] | None = None
                  ) -> pd.DataFrame:
    """Every scored subnet in the range: net id, MACs (M), params (M), accuracy, front."""
    metric = evo.get("metric", "acc1")
    front = set(front_ids(evo, macs_range))
    rows = [{"net_id": r["net_id"], "macs_m": round(float(r["macs"]), 4),
             "params_m": round(float(r.get("params", 0.0)), 4),
             "accuracy": round(float(r[metric]), 2), "generation": int(r.get("generation", -1)),
             "front": r["net_id"] in front} for r in in_range(evo, macs_range)]
    df = pd.DataFrame(rows, columns=["net_id", "macs_m", "params_m", "accuracy", "generation",
                                     "front"])
    return df.sort_values("macs_m", kind="stable").reset_index(drop=True)


def compare_table(evo: Mapping[str, Any], ids: Sequence[str],
                  images: int | None = None) -> pd.DataFrame:
    """The chosen subnets side by side: MACs (M), params (M), accuracy (%), the images it was
    measured on, its 95 % interval, how it compares with the most accurate of them ("within
    noise" when the intervals overlap), generation, origin, whether on the Pareto front."""
    metric = evo.get("metric", "acc1")
    front = set(front_ids(evo))
    scores = {nid: measured(float(record(evo, nid)[metric]), images) for nid in ids}
    top = max(ids, key=lambda n: scores[n].score) if ids else None
    rows = []
    for nid in ids:
        r, m = record(evo, nid), scores[nid]
        rows.append({"net_id": nid, "macs_m": round(float(r["macs"]), 4),
                     "params_m": round(float(r.get("params", 0.0)), 4),
                     "accuracy": round(m.score, 2), "images": images,
                     "interval": (f"{m.low:.1f}-{m.high:.1f}" if m.interval else "unknown"),
                     "vs_best": ("the most accurate" if nid == top
                                 else noise_verdict(m, scores[top])),
                     "generation": int(r.get("generation", -1)),
                     "origin": r.get("origin", ""), "front": nid in front})
    return pd.DataFrame(rows, columns=["net_id", "macs_m", "params_m", "accuracy", "images",
                                       "interval", "vs_best", "generation", "origin", "front"])


def widths_table(evo: Mapping[str, Any], ids: Sequence[str]) -> pd.DataFrame:
    """Per elastic group (rows): all channels, then each chosen subnet's width (columns)."""
    groups = (evo.get("space") or {}).get("groups", [])
    chosen = {nid: {e["group"]: int(e["width"]) for e in record(evo, nid)["subnet_setting"]
                    if "group" in e} for nid in ids}
    rows = []
    for g in groups:
        row: dict[str, Any] = {"group": g["group"], "channels": int(g["channels"]),
                               "widths": ", ".join(str(w) for w in g["widths"])}
        for nid in ids:
            row[nid] = chosen[nid].get(g["group"], int(g["channels"]))
        rows.append(row)
    kernels = {nid: {e["module"]: int(e["kernel_size"]) for e in record(evo, nid)["subnet_setting"]
                     if "module" in e} for nid in ids}
    for k in (evo.get("space") or {}).get("kernels", []):
        sizes = list(k.get("kernel_sizes", []))
        row = {"group": f"{k['module']} (kernel size)", "channels": max(sizes) if sizes else None,
               "widths": ", ".join(str(s) for s in sizes)}
        for nid in ids:
            row[nid] = kernels[nid].get(k["module"], max(sizes) if sizes else None)
        rows.append(row)
    return pd.DataFrame(rows)


def layer_widths(ofa_model: nn.Module, settings: Mapping[str, Sequence[dict]]
                 ) -> dict[str, dict[str, int]]:
    """Output channels of every conv/linear layer of each subnet (static subnets are built;
    ``ofa_model`` is not changed)."""
    from uif_explorer.torch.ofa import get_static_subnet

    return {label: out_widths(get_static_subnet(ofa_model, s)[0])
            for label, s in settings.items()}


# -- using one subnet ------------------------------------------------------------------------
def build_subnet(ofa_model: nn.Module, setting: Any, *, images: int = 500,
                 calibrate: bool = True) -> dict[str, Any]:
    """The static subnet, BN-calibrated (as in the search) and scored on bundled test images.

    Returns ``model``, ``config`` (``get_static_subnet``'s), ``macs_m``, ``params_m``,
    ``accuracy`` (%) and ``images``. ``ofa_model`` is not changed.
    """
    from uif_explorer.torch.evaluation import adaptive_bn_calibration
    from uif_explorer.torch.ofa import get_static_subnet

    static, config, macs, params = get_static_subnet(ofa_model, setting)
    if calibrate:
        adaptive_bn_calibration(static, eval_data.calib_loader())
    static.eval()
    return {"model": static, "config": config, "macs_m": float(macs), "params_m": float(params),
            "accuracy": eval_data.accuracy(static, int(images)), "images": int(images)}


def subnet_file(folder: Path, sample: str) -> Path:
    return Path(folder) / f"{sanitize_name(sample)}_ofa_subnet.json"


def save_subnet(folder: Path, sample: str, net_id: str, supernet: str,
                config: Mapping[str, Any]) -> Path:
    """Write the chosen subnet's setting (what rebuilds it: ``conventions.md``) to the
    workspace; a Pareto-entry-like dict that ``get_static_subnet`` accepts as is."""
    path = subnet_file(folder, sample)
    atomic_write_json(path, {"net_id": net_id, "model": sample, "supernet": supernet,
                             "macs": float(config["macs"]), "params": float(config["params"]),
                             "subnet_setting": config["subnet_setting"],
                             "ofa_args": config["ofa_args"], "groups": config["groups"],
                             "kernels": config["kernels"]})
    return path


def rebuild_subnet(sample: str, subnet_path: Path, state_dict: Mapping[str, Any] | None = None
                   ) -> nn.Module:
    """Rebuild an exported subnet in a fresh process: the original architecture + ``ofa_model``
    with the recorded arguments + ``get_static_subnet`` (+ the exported state dict)."""
    from uif_explorer.torch.ofa import OFAPruner, get_static_subnet

    entry = json.loads(Path(subnet_path).read_text())
    args = entry["ofa_args"]
    pruner = OFAPruner(zoo.build_torch(sample), zoo.example_input(sample))
    ofa = pruner.ofa_model(args["expand_ratio"], args["channel_divisible"],
                           args.get("excludes") or None, args["auto_add_excludes"])
    static = get_static_subnet(ofa, entry)[0]
    if state_dict is not None:
        static.load_state_dict(dict(state_dict), strict=True)
    return static.eval()


def subnet_protocol(images: int) -> str:
    """The protocol line of a subnet built by **Use this subnet** (``build_subnet``)."""
    return protocol_line(score_fn=SEARCH_SCORE_FN, images=int(images),
                         data="the bundled Fashion-MNIST test subset", calibrated=True,
                         batches=eval_data.CALIB_BATCHES)


def pruned_entry(built: Mapping[str, Any], *, sample: str, net_id: str, supernet: SupernetRef,
                 subnet_path: Path, search_source: str) -> PrunedModel:
    """The session's pruned model for an OFA subnet (a static subnet of a PyTorch sample)."""
    full = float((supernet.info.get("macs") or {}).get("max_subnet") or 0.0)
    images = int(built["images"])
    return PrunedModel(
        model=built["model"], kind=OFA_SUBNET, model_name=sample, framework="torch",
        source=f"OFA subnet {net_id} of the "
               f"{'bundled' if supernet.bundled else 'workspace'} supernet",
        net_id=net_id, supernet=str(supernet.path),
        subnet_setting=built["config"]["subnet_setting"], spec_path=str(subnet_path),
        accuracy=float(built["accuracy"]), images=images, macs_m=float(built["macs_m"]),
        params_m=float(built["params_m"]),
        removal_ratio=round(1 - built["macs_m"] / full, 4) if full else None,
        search_data=search_source, label_free=False,
        score_source=f"{eval_data.data_source(images)}, after BatchNorm calibration on "
                     f"{eval_data.CALIB_BATCHES * 64} training images")


__all__ = [
    "BUNDLED", "SearchRef", "SupernetRef", "build_subnet", "bundled_supernets", "check_range",
    "compare_table",
    "default_macs_step", "front_ids", "in_range", "layer_widths", "list_searches",
    "list_supernets", "load_supernet_at", "load_supernet_ref", "macs_span", "merge_selection",
    "newest_search", "train_settings",
    "pruned_entry", "read_search", "read_search_meta", "rebuild_subnet", "run_search",
    "save_subnet", "search_data_source", "search_name", "search_settings", "selected_ids",
    "slider_bounds", "subnet_protocol", "subnets_table", "supernet_span", "train_supernet",
    "widths_table", "workspace_supernets",
]

"""What the OFA Pareto page and the ``ofa-*`` CLI commands compute, without streamlit.

Supernets and searches are plain workspace files (``docs/ofa.md``): a supernet is
``<stem>.json`` + ``<stem>.safetensors`` (``save_supernet``), a search is
``<name>_evolution.json`` (``run_evolutionary_search``). Next to a search made by the app or the
CLI, ``<name>_evolution.meta.json`` records the data it was scored on, so every accuracy on
screen can name its source. Bundled supernets and their searches live in ``sample_models/``
and are never written.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from uif_explorer import data, zoo
from uif_explorer.io.workspace import WorkspaceError, atomic_write_json, read_json, sanitize_name
from uif_explorer.services import eval_data
from uif_explorer.services.pruned import OFA_SUBNET, PrunedModel
from uif_explorer.services.torch_backend import out_widths

BUNDLED = ("mobilenetv2_small", "resnet20")
"""Sample models with a trained supernet and a precomputed search in ``sample_models/``."""
SUPERNET_KIND = "uif-explorer-supernet"
EVOLUTION_KIND = "uif-explorer-evolution"
META_KIND = "uif-explorer-ofa-search-meta"
EXPAND_RATIO = (0.5, 0.75, 1.0)
BUNDLED_SEARCH_DATA = ("top-1 on the first 500 images of the bundled Fashion-MNIST test subset, "
                       "after BatchNorm calibration on 8 fixed batches of 64 training images")
MACS_STEPS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0)

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
    from uif_explorer.torch.ofa import load_bundled_supernet, load_supernet

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


# -- searches ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchRef:
    """A saved evolutionary search of one supernet."""

    key: str
    path: Path
    bundled: bool
    label: str
    complete: bool
    data_source: str


def meta_path(evolution_path: Path) -> Path:
    """The sidecar of an app/CLI search: the data its scores come from."""
    p = Path(evolution_path)
    return p.with_name(p.name.replace("_evolution.json", "_evolution.meta.json"))


def write_search_meta(evolution_path: Path, *, images: int, calib_batches: int,
                      supernet: str, sample: str) -> None:
    atomic_write_json(meta_path(evolution_path), {
        "format_version": 1, "kind": META_KIND, "images": int(images),
        "calib_batches": int(calib_batches), "calib_batch_size": 64, "supernet": supernet,
        "sample": sample})


def read_search_meta(evolution_path: Path) -> dict[str, Any]:
    try:
        return read_json(meta_path(evolution_path), kind=META_KIND)
    except (WorkspaceError, OSError, ValueError):
        return {}


def search_data_source(meta: Mapping[str, Any]) -> str:
    """Which data a search's accuracies are on, for captions."""
    if not meta.get("images"):
        return "the data the search was run with (outside the app; not recorded)"
    return (f"{eval_data.data_source(int(meta['images']))}, after BatchNorm calibration on "
            f"{int(meta.get('calib_batches', 0))} batches of 64 training images")


def read_search(path: Path) -> dict[str, Any] | None:
    """An evolution file (complete or not), or None when absent or unreadable."""
    try:
        return read_json(Path(path), kind=EVOLUTION_KIND) if Path(path).exists() else None
    except (WorkspaceError, OSError, ValueError):
        return None


def _search_label(evo: Mapping[str, Any], bundled: bool) -> str:
    rng = evo.get("range") or {}
    n = len(evo.get("history") or [])
    state = "finished" if evo.get("complete") else "unfinished"
    who = "bundled search" if bundled else f"search {evo.get('model', '')}"
    lo, hi = rng.get("min_macs"), rng.get("max_macs")
    span = f", {lo:.2f}-{hi:.2f} M MACs" if lo is not None and hi is not None else ""
    return f"{who}{span}, {n} subnets ({state})"


def list_searches(ref: SupernetRef, folder: Path | None) -> list[SearchRef]:
    """The bundled search (bundled supernets) and the workspace's searches of this supernet.

    A workspace search belongs to the supernet when its graph and weights digests match.
    """
    out = []
    if ref.bundled:
        path = ref.path.with_name(f"{ref.sample}_supernet_evolution.json")
        evo = read_search(path)
        if evo is not None:
            out.append(SearchRef(f"bundled:{ref.sample}", path, True, _search_label(evo, True),
                                 bool(evo.get("complete")), BUNDLED_SEARCH_DATA))
    if folder is not None:
        for path in sorted(Path(folder).glob("*_evolution.json")):
            evo = read_search(path)
            if evo is None or evo.get("graph_digest") != ref.info.get("graph_digest") \
                    or evo.get("weights_digest") != ref.info.get("weights_digest"):
                continue
            out.append(SearchRef(f"workspace:{path.name}", path, False,
                                 _search_label(evo, False), bool(evo.get("complete")),
                                 search_data_source(read_search_meta(path))))
    return out


def newest_search(ref: SupernetRef, folder: Path) -> Path | None:
    """The workspace search of this supernet written last (a running search rewrites its file
    after every subnet)."""
    found = [s.path for s in list_searches(ref, folder) if not s.bundled]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def default_macs_step(lo: float, hi: float) -> float:
    """A bin width giving about 10-20 Pareto-set bins over ``[lo, hi]`` (millions)."""
    span = max(float(hi) - float(lo), 1e-9)
    return next((s for s in MACS_STEPS if s >= span / 20), MACS_STEPS[-1])


def search_name(ref: SupernetRef, settings: Mapping[str, Any]) -> str:
    """Workspace name of a new search: the supernet's name and a tag of its settings."""
    return sanitize_name(f"{ref.name}_s{settings_tag(settings)}")


def search_settings(min_macs: float, max_macs: float, *, population: int = 8,
                    iterations: int = 2, images: int = 200, macs_step: float | None = None,
                    mutate_size: int | None = None, crossover_size: int | None = None,
                    calib_batches: int = eval_data.CALIB_BATCHES) -> dict[str, Any]:
    """Complete settings of a short search (mutations/crossovers scaled to the population)."""
    lo, hi = float(min_macs), float(max_macs)
    return {"min_macs": round(lo, 6), "max_macs": round(hi, 6),
            "macs_step": float(macs_step or default_macs_step(lo, hi)),
            "parent_popu_size": int(population), "iteration": int(iterations),
            "mutate_size": int(mutate_size or max(2, population // 2)),
            "crossover_size": int(crossover_size or max(1, population // 4)),
            "images": int(images), "calib_batches": int(calib_batches)}


def planned_evaluations(settings: Mapping[str, Any]) -> int:
    """At most this many subnets are evaluated (fewer when the space runs out)."""
    return int(settings["parent_popu_size"]) + int(settings["iteration"]) * (
        int(settings["mutate_size"]) + int(settings["crossover_size"]))


def fixed_calib_batches(batches: int, batch_size: int = 64) -> list:
    """The first ``batches`` batches of the bundled training subset, as a list (fixed: a
    subnet's score must not depend on when it is evaluated)."""
    return list(data.torch_loader("train", batch_size=batch_size, shuffle=False,
                                  limit=int(batches) * batch_size))


def check_range(ofa_model: nn.Module, min_macs: float, max_macs: float) -> None:
    """Raise ``SearchRangeError`` (a ValueError) when no subnet can be in the MACs range."""
    from uif_explorer.core.evolution import SearchRangeError, check_reachable
    from uif_explorer.torch.ofa.space import space_of

    lo, hi = float(min_macs), float(max_macs)
    if lo > hi:
        raise SearchRangeError(f"Expected min MACs <= max MACs. Received: {lo:g} > {hi:g}")
    space = space_of(ofa_model)
    check_reachable(space.choice, space.cost_m, lo, hi)


def run_search(ofa_model: nn.Module, ref: SupernetRef, folder: Path,
               settings: Mapping[str, Any], *, name: str | None = None,
               progress: Progress | None = None, forced: bool = False,
               executor: object = None) -> Path:
    """Run (or resume) an evolutionary search of ``ofa_model`` into ``folder``; the file path.

    ``ofa_model`` is only read (static subnets are built from it). Scores: top-1 (%) on the
    first ``settings['images']`` bundled test images after adaptive BN on fixed training
    batches. A range outside the supernet's span raises ``SearchRangeError`` at once.
    """
    from uif_explorer.torch.evaluation import adaptive_bn_calibration, top1_accuracy
    from uif_explorer.torch.ofa import run_evolutionary_search

    check_range(ofa_model, settings["min_macs"], settings["max_macs"])  # before any file
    name = name or search_name(ref, settings)
    calib = fixed_calib_batches(int(settings["calib_batches"]))

    def calibration_fn(model: nn.Module, batches: list) -> None:
        adaptive_bn_calibration(model, batches, number_forward=len(batches))

    from uif_explorer.io.workspace import Workspace

    path = Workspace(folder).evolution(name)
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_search_meta(path, images=int(settings["images"]),
                      calib_batches=int(settings["calib_batches"]), supernet=str(ref.path),
                      sample=ref.sample)
    result = run_evolutionary_search(
        ofa_model, calibration_fn, (calib,), top1_accuracy,
        (eval_data.test_loader(int(settings["images"])),), "acc1", "max",
        min_macs=settings["min_macs"], max_macs=settings["max_macs"],
        macs_step=settings["macs_step"], parent_popu_size=settings["parent_popu_size"],
        iteration=settings["iteration"], mutate_size=settings["mutate_size"],
        crossover_size=settings["crossover_size"], executor=executor, workdir=folder,
        name=name, forced=forced, progress=progress)
    return Path(result.path)


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


def compare_table(evo: Mapping[str, Any], ids: Sequence[str]) -> pd.DataFrame:
    """The chosen subnets side by side: MACs (M), params (M), accuracy (%), generation."""
    metric = evo.get("metric", "acc1")
    front = set(front_ids(evo))
    rows = []
    for nid in ids:
        r = record(evo, nid)
        rows.append({"net_id": nid, "macs_m": round(float(r["macs"]), 4),
                     "params_m": round(float(r.get("params", 0.0)), 4),
                     "accuracy": round(float(r[metric]), 2),
                     "generation": int(r.get("generation", -1)),
                     "origin": r.get("origin", ""), "front": nid in front})
    return pd.DataFrame(rows, columns=["net_id", "macs_m", "params_m", "accuracy", "generation",
                                       "origin", "front"])


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
    "slider_bounds", "subnets_table", "supernet_span", "train_supernet",
    "widths_table", "workspace_supernets",
]

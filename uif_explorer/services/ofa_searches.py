"""OFA evolutionary searches as workspace files, for the OFA page and ``uif-explorer
ofa-search``: ``<name>_evolution.json`` (``run_evolutionary_search``) and, next to a search
made by the app or the CLI, ``<name>_evolution.meta.json`` recording the data it was scored on,
so every accuracy on screen can name its source. Bundled searches are never written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from uif_explorer import data, zoo
from uif_explorer.core.pareto import default_macs_step  # the search's own default, re-exported
from uif_explorer.io.workspace import WorkspaceError, atomic_write_json, read_json, sanitize_name
from uif_explorer.services import eval_data
from uif_explorer.services.ofa_supernets import Progress, SupernetRef, settings_tag
from uif_explorer.services.score_lines import protocol_line

EVOLUTION_KIND = "uif-explorer-evolution"
META_KIND = "uif-explorer-ofa-search-meta"
BUNDLED_IMAGES = 500  # what the bundled searches were scored on (sample_models/)
BUNDLED_CALIB_BATCHES = 8
BUNDLED_SEARCH_DATA = (f"top-1 on the first {BUNDLED_IMAGES} images of the bundled Fashion-MNIST "
                       f"test subset, after BatchNorm calibration on {BUNDLED_CALIB_BATCHES} "
                       "fixed batches of 64 training images")
SEARCH_SCORE_FN = "top1_accuracy"  # run_search's eval_fn


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
    images: int | None = None  # images each subnet was scored on (None: not recorded)
    calib_batches: int | None = None  # BatchNorm re-estimation batches of 64 images

    @property
    def protocol(self) -> str:
        """The one-line scoring protocol shown beside every accuracy of this search."""
        return protocol_line(score_fn=SEARCH_SCORE_FN, images=self.images,
                             data="the bundled Fashion-MNIST test subset" if self.images else None,
                             calibrated=True, batches=self.calib_batches)


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
                                 bool(evo.get("complete")), BUNDLED_SEARCH_DATA,
                                 BUNDLED_IMAGES, BUNDLED_CALIB_BATCHES))
    if folder is not None:
        for path in sorted(Path(folder).glob("*_evolution.json")):
            evo = read_search(path)
            if evo is None or evo.get("graph_digest") != ref.info.get("graph_digest") \
                    or evo.get("weights_digest") != ref.info.get("weights_digest"):
                continue
            meta = read_search_meta(path)
            out.append(SearchRef(f"workspace:{path.name}", path, False,
                                 _search_label(evo, False), bool(evo.get("complete")),
                                 search_data_source(meta), meta.get("images"),
                                 meta.get("calib_batches")))
    return out


def newest_search(ref: SupernetRef, folder: Path) -> Path | None:
    """The workspace search of this supernet written last (a running search rewrites its file
    after every subnet)."""
    found = [s.path for s in list_searches(ref, folder) if not s.bundled]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def search_name(ref: SupernetRef, settings: Mapping[str, Any]) -> str:
    """Workspace name of a new search: the supernet's name and a tag of its settings."""
    return sanitize_name(f"{ref.name}_s{settings_tag(settings)}")


def search_settings(min_macs: float | None, max_macs: float | None, *, population: int = 8,
                    iterations: int = 2, images: int = 200, macs_step: float | None = None,
                    mutate_size: int | None = None, crossover_size: int | None = None,
                    calib_batches: int = eval_data.CALIB_BATCHES,
                    target: str = "macs") -> dict[str, Any]:
    """Complete settings of a short search (mutations/crossovers scaled to the population).

    ``target='latency'``: range and bins are ms of this machine's predicted latency, which
    is known only once the search job has measured the table, so ``None`` (the default
    range and step: the whole span of the supernet) is allowed there."""
    latency = target == "latency"
    if not latency and (min_macs is None or max_macs is None):
        raise ValueError("Expected a MACs range for target='macs'. Received: "
                         f"min_macs={min_macs!r}, max_macs={max_macs!r}")
    lo = None if min_macs is None else round(float(min_macs), 6)
    hi = None if max_macs is None else round(float(max_macs), 6)
    step = macs_step or (None if lo is None or hi is None else default_macs_step(lo, hi))
    return {"min_macs": lo, "max_macs": hi, "macs_step": None if step is None else float(step),
            "parent_popu_size": int(population), "iteration": int(iterations),
            "mutate_size": int(mutate_size or max(2, population // 2)),
            "crossover_size": int(crossover_size or max(1, population // 4)),
            "images": int(images), "calib_batches": int(calib_batches),
            **({"target": "latency"} if latency else {})}  # a MACs search keeps its old name


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

    latency = settings.get("target") == "latency"
    if not latency:  # a range in ms is checked by the search, once the table is measured
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
    from uif_explorer.core.evolution import SearchRangeError

    try:
        result = run_evolutionary_search(
            ofa_model, calibration_fn, (calib,), top1_accuracy,
            (eval_data.test_loader(int(settings["images"])),), "acc1", "max",
            min_macs=settings["min_macs"], max_macs=settings["max_macs"],
            macs_step=settings["macs_step"], parent_popu_size=settings["parent_popu_size"],
            iteration=settings["iteration"], mutate_size=settings["mutate_size"],
            crossover_size=settings["crossover_size"], executor=executor, workdir=folder,
            name=name, forced=forced, progress=progress,
            **({"target": "latency", "inputs": zoo.example_input(ref.sample)} if latency
               else {}))
    except SearchRangeError as exc:
        if not latency:
            raise
        # a table timed under load can rank the smallest subnet slowest: measure it afresh
        Workspace(folder).latency(f"{name}-ofa", "eager").unlink(missing_ok=True)
        raise SearchRangeError(
            f"{exc}. The range is this machine's predicted latency, and its latency table "
            "(timed while other jobs ran) was discarded: run the search again, best when "
            "fewer jobs run, or search on MACs.") from exc
    return Path(result.path)

"""What the pruning buttons of the app do, without streamlit: prune from the analysis, build a
searched candidate, rebuild from a saved spec, fine-tune, slim for export. Each returns a
``PrunedModel`` (or a background job making one); the pages only show it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from uif_explorer.services import previews
from uif_explorer.services.latency_target import removed_text
from uif_explorer.services.model_source import PT2, ModelSource
from uif_explorer.services.pruned import SLIM, SPARSE, PrunedModel

log = logging.getLogger("uif_explorer.app")


def _scored(model: Any, ev: Any, proto: previews.Protocol) -> dict[str, Any]:
    """The score of a freshly made (private) ``model`` with the app's protocol, and the words
    for it: the protocol is part of ``score_source``, so every page and report says it."""
    return {"accuracy": previews.score(model, ev, proto), "images": ev.images,
            "score_source": f"{ev.describe()}, {proto.text()}", "label_free": ev.label_free}


def prune_from_analysis(runner: Any, source: ModelSource, ev: Any, ratio: float,
                        channel_divisible: int, preview: Any, calibrate: bool = True,
                        target: str = "macs") -> PrunedModel:
    """**Prune** on the Sensitivity page: the sparse model at ``ratio`` of the MACs or of
    the predicted latency (``target``; the rounding the preview used), scored on ``ev`` with
    the app's protocol (BN re-estimation unless ``calibrate`` is False or the model has no
    BatchNorm), the protocol of the page's measured preview; its spec is written by the
    runner."""
    model = source.backend.prune(runner, ratio, SPARSE, channel_divisible, target=target)
    return PrunedModel(
        model=model, kind=SPARSE, model_name=source.name, framework=source.framework,
        source=f"Sensitivity, {removed_text(ratio, target)}",
        spec_path=str(runner.workspace.spec(source.name, ratio=ratio, target=target)),
        removal_ratio=ratio,
        macs_m=preview.macs, params_m=preview.params,
        **_scored(model, ev, previews.app_protocol(model, ev, calibrate)))


def build_candidate(runner: Any, source: ModelSource, ev: Any, ratio: float, index: int,
                    search: Mapping[str, Any]) -> PrunedModel:
    """**Build candidate** on the One-step page: candidate ``index`` of ``search`` (a MACs or
    latency search: its own ``target``) as a slim model, scored like in the search (BatchNorm
    statistics re-estimated first). An exported program's graph cannot always be sliced
    (grouped convolutions): then the sparse model is used."""
    kind, target = SLIM, search.get("target", "macs")
    try:
        model = source.backend.build_candidate(runner, ratio, index, target=target)
    except Exception as exc:  # noqa: BLE001 - e.g. grouped convs of a .pt2 graph
        if source.kind != PT2:
            raise
        log.warning("slim build failed, using the sparse model", exc_info=exc)
        model = source.backend.build_candidate(runner, ratio, index, mode=SPARSE, target=target)
        kind = SPARSE
    cand = next(c for c in search["candidates"] if c["id"] == index)
    proto = previews.app_protocol(model, ev)  # as in the search (a no-op without BatchNorm)
    return PrunedModel(
        model=model, kind=kind, model_name=source.name, framework=source.framework,
        source=f"One-step candidate {index} at {removed_text(ratio, target)}",
        removal_ratio=ratio, candidate=index,
        spec_path=str(runner.workspace.spec(source.name, ratio=ratio, candidate=str(index),
                                            target=target)),
        macs_m=cand["macs"], params_m=cand["params"], **_scored(model, ev, proto))


def rebuild_from_spec(runner: Any, source: ModelSource, ev: Any, spec_file: Path,
                      spec: Mapping[str, Any], calibrate: bool = True) -> PrunedModel:
    """**Rebuild from the saved spec** on the Export page (after a reload): the slim model from
    the original weights (fine-tuning done before the reload is not in it), scored with the
    app's protocol like the model Prune made."""
    model = runner.prune(spec_path=spec_file, mode=SLIM)
    return PrunedModel(
        model=model, kind=SLIM, model_name=source.name, framework=source.framework,
        source=f"Rebuilt from {Path(spec_file).name} (original weights)",
        removal_ratio=spec.get("removal_ratio"), spec_path=str(spec_file),
        macs_m=(spec.get("macs") or {}).get("pruned"),
        params_m=(spec.get("params") or {}).get("pruned"),
        **_scored(model, ev, previews.app_protocol(model, ev, calibrate)))


# -- fine-tuning ----------------------------------------------------------------------------------
def can_fine_tune(source: ModelSource, ev: Any) -> bool:
    """The app fine-tunes on the fine-tuning split of the user's labelled image folders, or
    on the bundled training images for models scored on the bundled data; never an exported
    program fixed at batch 1."""
    return (ev is not None and (ev.bundled or ev.finetune_data is not None)
            and not source.batch_fixed)


def fine_tune_data(ev: Any) -> str:
    """Which images a fine-tune of ``ev``'s model trains on, for the page's caption."""
    if ev is not None and ev.finetune_data is not None:
        return f"the fine-tuning split of {ev.data_title}"
    return "the bundled Fashion-MNIST training images"


def fine_tune_job(pruned: PrunedModel, source: ModelSource, original: Any, runner: Any,
                  ev: Any, epochs: int, lr: float, batches: int, calibrate: bool = True
                  ) -> Callable[[Any], dict[str, Any]]:
    """The background job of **Fine-tune**: the backend trains a private copy (the pruned
    model is not changed) on the user's fine-tuning split when ``ev`` has one (bundled
    training images otherwise); the result holds the tuned model and its score on ``ev`` with
    the app's protocol (as Prune's score: BN re-estimation unless ``calibrate`` is False)."""
    train = source.backend.finetune(pruned, original, runner, epochs=int(epochs),
                                    lr=float(lr), batches=int(batches),
                                    data=getattr(ev, "finetune_data", None))

    def work(job: Any) -> dict[str, Any]:
        model, history = train(job.progress)
        scored = _scored(model, ev, previews.app_protocol(model, ev, calibrate))
        return {"model": model, "accuracy": scored["accuracy"],
                "score_source": scored["score_source"], "history": history,
                "epochs": int(epochs), "lr": float(lr)}

    return work


def fine_tuned(pruned: PrunedModel, result: Mapping[str, Any], serial: int) -> PrunedModel:
    """The session's pruned model after a finished fine-tune job (once per job: ``serial``)."""
    if pruned.finetune_serial == serial:
        return pruned
    return pruned.with_model(
        result["model"], accuracy_before_ft=pruned.accuracy, accuracy=result["accuracy"],
        score_source=result.get("score_source", pruned.score_source), finetune_serial=serial,
        source=f"{pruned.source}, fine-tuned {result['epochs']} epoch(s)")


# -- export ---------------------------------------------------------------------------------------
def slim_for_export(pruned: PrunedModel, source: ModelSource, original: Any,
                    runner: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """``(slim model, None)``, or ``(None, error)`` when the graph cannot be sliced (an
    exported program fixes the group count of grouped convolutions). Cached on ``pruned``.
    ``runner`` makes the model's runner when the backend needs it (Keras rebuilds from the
    spec)."""
    if pruned.slim is not None:
        return pruned.slim, None
    try:
        pruned.slim = source.backend.slim_of(pruned, original, runner())
    except Exception as exc:  # noqa: BLE001 - shown with a fix by the page
        log.warning("slim build failed", exc_info=exc)
        return None, exc
    return pruned.slim, None


def slim_cost(slim: Any, source: ModelSource, pruned: PrunedModel) -> tuple[float | None, float]:
    """(MACs, params) of the slim model in millions; the recorded ones if counting fails."""
    try:
        return source.backend.cost(slim, source.input_shape)
    except Exception:  # noqa: BLE001 - the counts are informative only
        return pruned.macs_m, float(pruned.params_m or 0.0)

"""Cached loading of the current model (sample or upload) and of its summary.

Models live in ``st.cache_resource`` (one object shared by the sessions that use the same key):
never mutate one; copy it (``copy.deepcopy``) before pruning or fine-tuning. Summaries are plain
data in ``st.cache_data``. Sample keys include the weights file's mtime and size, so retraining
a sample model while the app runs is picked up on the next rerun; upload keys include the
session's workspace token and the file's SHA-256, so one visitor never sees another's model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from uif_explorer import zoo
from uif_explorer.services import model_source, summary
from uif_explorer.services.model_source import ModelSource
from uif_explorer.services.summary import ModelSummary


@dataclass(frozen=True)
class LoadedModel:
    """The current model (shared: read-only) with its source, summary and recorded accuracy."""

    source: ModelSource
    model: Any
    summary: ModelSummary
    accuracy: float | None

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def title(self) -> str:
        return self.source.title

    @property
    def sample(self) -> zoo.SampleModel | None:
        return zoo.SAMPLE_MODELS.get(self.source.arch or "") if self.source.is_sample else None

    @property
    def framework(self) -> str:
        return self.source.framework


LoadedSample = LoadedModel  # the name earlier pages used


def weights_stamp(name: str) -> tuple[int, int]:
    """(mtime_ns, size) of a sample model's weights file; (0, 0) when it is missing."""
    try:
        stat = zoo.get_sample(name).weights_path.stat()
    except (KeyError, OSError):
        return (0, 0)
    return (stat.st_mtime_ns, stat.st_size)


def cache_key(source: ModelSource, token: str) -> str:
    """What caches of this model are keyed by (uploads: per workspace token and digest)."""
    if source.is_sample:
        stamp = weights_stamp(source.arch or source.name)
        return f"{source.key}:{stamp[0]}:{stamp[1]}"
    return f"{token}:{source.key}"


@st.cache_resource(show_spinner="Loading the model...", max_entries=8)
def cached_model(key: str, _source: ModelSource, _folder: str) -> Any:
    """The model of ``_source`` (eval mode; shared by the sessions with this key: do not
    mutate). ``key`` is :func:`cache_key`."""
    return model_source.load_model(_source, Path(_folder))


@st.cache_data(show_spinner="Counting params and MACs...", max_entries=16)
def cached_summary(key: str, _source: ModelSource, _folder: str) -> ModelSummary:
    """Params, MACs and layer table of the model, counted on a private copy."""
    return model_source.summarize(_source, cached_model(key, _source, _folder))


def torch_sample(name: str, stamp: tuple[int, int]) -> Any:
    """The trained PyTorch sample model (shared by all sessions: do not mutate)."""
    source = model_source.sample_source(name)
    return cached_model(cache_key(source, ""), source, "")


@st.cache_data(max_entries=1)
def bundled_test_size() -> int | None:
    return summary.bundled_test_size()


def load(source: ModelSource, token: str, folder: Path) -> LoadedModel:
    """Load ``source`` and summarise it; raises what loading raised."""
    key = cache_key(source, token)
    model = cached_model(key, source, str(folder))
    accuracy = (summary.recorded_accuracy(zoo.recorded_metrics(), source.arch or source.name)
                if source.is_sample else None)
    return LoadedModel(source=source, model=model,
                       summary=cached_summary(key, source, str(folder)), accuracy=accuracy)


def current() -> LoadedModel:
    """The session's current model (see ``state.current_source``), loaded."""
    from uif_explorer.ui import state, workspace

    token = workspace.current_token()
    return load(state.current_source(), token, workspace.folder_of(token))


def load_sample(name: str) -> LoadedModel:
    """Load a sample model and summarise it; raises what loading raised."""
    from uif_explorer.ui import workspace

    token = workspace.current_token()
    return load(model_source.sample_source(name), token, workspace.folder_of(token))


def groups(loaded: LoadedModel) -> Any:
    """The channel groups of a loaded model, from the workspace's iterative runner: the Model
    page and the pruning pages share one capture of the model (capturing takes seconds)."""
    from uif_explorer.ui import workspace

    token = workspace.current_token()
    return workspace.runner(token, loaded, "iterative").pruner.groups_table()


@st.cache_resource(max_entries=16)
def cached_evaluator(key: str, data_key: str, images: int, _loaded: LoadedModel, _data: Any,
                     _folder: str) -> Any:
    """Evaluators hold data loaders and, for the label-free score, a copy of the model: made
    once per (model, data, images)."""
    from uif_explorer.services.eval_data import make_evaluator

    return make_evaluator(_loaded.source, _loaded.model, _data, images, Path(_folder))


def evaluator(loaded: LoadedModel, images: int) -> Any:
    """An ``eval_data.Evaluator`` for the current model on the session's data; raises
    ``LoadError`` (with what to upload) when no data can score the model."""
    from uif_explorer.io.loading import LoadError
    from uif_explorer.services.eval_data import bundled_fits, needs_data
    from uif_explorer.ui import state, workspace

    data = state.current_data()
    if data is not None and data.for_model != loaded.source.key:
        data = None
    if data is None and not bundled_fits(loaded.source):
        raise LoadError(needs_data(loaded.source))
    token = workspace.current_token()
    return cached_evaluator(cache_key(loaded.source, token),
                            data.key if data is not None else "bundled", int(images),
                            loaded, data, str(workspace.folder_of(token)))


def private_copy(loaded: LoadedModel) -> Any:
    """A copy of the shared model that may be changed (PyTorch); Keras models are cloned by the
    runners, so the shared object is returned."""
    return loaded.source.backend.private_copy(loaded.model)


@st.cache_resource(show_spinner="Loading the supernet...", max_entries=6)
def _supernet(sample: str, path: str, bundled: bool, name: str, stamp: int) -> Any:
    """``(pruner, ofa_model)``, shared by all sessions: never mutate (copy first)."""
    from uif_explorer.services import ofa_app

    return ofa_app.load_supernet_at(sample, path, bundled, name)


def supernet(ref: Any) -> Any:
    """The OFA model of a supernet (``ofa_app.SupernetRef``), cached across sessions and
    reloaded when its weights file changes: shared, so copy it before changing it."""
    stamp = ref.path.with_suffix(".safetensors").stat().st_mtime_ns
    return _supernet(ref.sample, str(ref.path), ref.bundled, ref.name, stamp)[1]

"""Cached loading of the sample models and of their summaries.

Models live in ``st.cache_resource`` (one object shared by all sessions): never mutate one;
copy it (``copy.deepcopy``) before pruning or fine-tuning. Summaries are plain data in
``st.cache_data``. Cache keys include the weights file's mtime and size, so retraining a sample
model while the app runs is picked up on the next rerun.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import streamlit as st
from torch import nn

from uif_explorer import summary, zoo
from uif_explorer.summary import ModelSummary


@dataclass(frozen=True)
class LoadedSample:
    """A loaded sample model (shared: read-only) with its summary and recorded accuracy."""

    name: str
    sample: zoo.SampleModel
    model: nn.Module
    summary: ModelSummary
    accuracy: float | None


def weights_stamp(name: str) -> tuple[int, int]:
    """(mtime_ns, size) of a sample model's weights file; (0, 0) when it is missing."""
    try:
        stat = zoo.get_sample(name).weights_path.stat()
    except (KeyError, OSError):
        return (0, 0)
    return (stat.st_mtime_ns, stat.st_size)


@st.cache_resource(show_spinner="Loading the sample model...", max_entries=8)
def torch_sample(name: str, stamp: tuple[int, int]) -> nn.Module:
    """The trained PyTorch sample model (eval mode, shared by all sessions: do not mutate)."""
    return zoo.load_torch_sample(name)


@st.cache_data(show_spinner="Counting params and MACs...", max_entries=16)
def torch_sample_summary(name: str, stamp: tuple[int, int]) -> ModelSummary:
    """Params, MACs and layer table of a sample model, counted on a private copy."""
    model = copy.deepcopy(torch_sample(name, stamp))
    return summary.summarize_torch_model(model, zoo.example_input(name))


@st.cache_data(max_entries=1)
def bundled_test_size() -> int | None:
    return summary.bundled_test_size()


def load_sample(name: str) -> LoadedSample:
    """Load a PyTorch sample model and summarise it; raises what loading raised."""
    sample = zoo.get_sample(name)
    stamp = weights_stamp(name)
    model = torch_sample(name, stamp)
    return LoadedSample(
        name=name,
        sample=sample,
        model=model,
        summary=torch_sample_summary(name, stamp),
        accuracy=summary.recorded_accuracy(zoo.recorded_metrics(), name),
    )

"""Page parts that show a model: the sidebar picker, metric cards, the layer and group tables."""

from __future__ import annotations

from typing import Any

import streamlit as st

from uif_explorer import zoo
from uif_explorer.services import summary
from uif_explorer.services.summary import ModelSummary
from uif_explorer.ui import state
from uif_explorer.ui.loaders import LoadedModel

PICKER_KEY = "model_picker"
FRAMEWORK_NAMES = {"torch": "PyTorch", "keras": "Keras"}
LAYOUT_WORDS = {"NHWC": "batch x height x width x channels",
                "NCHW": "batch x channels x height x width"}
KIND_NAMES = {"sample": "bundled sample", "weights": "registry architecture + uploaded weights",
              "pt2": "uploaded torch.export program", "keras": "uploaded .keras file",
              "pickle": "uploaded pickled module (trust option)"}


def _picked() -> None:
    choice = st.session_state[PICKER_KEY]
    if choice is not None:
        state.set_model_name(choice)


def sample_picker() -> str:
    """The sidebar's sample-model selectbox; returns the current model's name.

    ``state.MODEL_SOURCE`` is the source of truth (other pages read it, and it survives visits
    to pages without this widget, whose own state Streamlit drops); the widget copies a new
    choice into it through its ``on_change`` callback. While an uploaded model is current the
    box shows a placeholder, and picking a sample switches back.
    """
    options = list(zoo.SAMPLE_MODELS)
    source = state.current_source()
    st.session_state[PICKER_KEY] = source.arch if source.is_sample else None
    with st.sidebar:
        st.subheader("Model")
        choice = st.selectbox(
            "Sample model",
            options,
            key=PICKER_KEY,
            on_change=_picked,
            index=None,
            placeholder="an uploaded model is in use",
            format_func=lambda name: zoo.SAMPLE_MODELS[name].title,
            help="The PyTorch and Keras sample models bundled with the repository "
            "(weights in `sample_models/`). Upload your own model on the Model page.",
        )
        if source.is_sample and choice is not None:
            st.caption(
                f"`{choice}` · {FRAMEWORK_NAMES[zoo.SAMPLE_MODELS[choice].framework]} · "
                "trained on Fashion-MNIST (28x28 grayscale, 10 classes)"
            )
        else:
            st.caption(f"In use: **{source.title}** ({FRAMEWORK_NAMES[source.framework]}, "
                       f"{KIND_NAMES[source.kind]}). Pick a sample to switch back.")
    return source.name


def header(loaded: LoadedModel) -> None:
    st.header(loaded.title, anchor=False)
    sample = loaded.sample
    if sample is not None:
        st.markdown(sample.description)
    else:
        st.markdown(f"{FRAMEWORK_NAMES[loaded.framework]} model, "
                    f"{KIND_NAMES[loaded.source.kind]}; workspace files are named "
                    f"`{loaded.name}`.")
    for note in loaded.source.notes:
        st.caption(note)


def metric_cards(loaded: LoadedModel, test_size: int | None, score: str | None = None,
                 score_help: str | None = None) -> None:
    """Params, MACs, input shape and accuracy as four metric cards with their units.

    ``score``: a measured score to show instead of the recorded accuracy (uploaded models),
    with ``score_help`` saying what it is (e.g. label-free)."""
    s: ModelSummary = loaded.summary
    layout = f"{LAYOUT_WORDS[loaded.source.layout]} ({loaded.source.backend.title}'s " \
             f"{loaded.source.layout} layout)"
    cols = st.columns(4)
    cols[0].metric(
        "Parameters",
        summary.format_params(s.params),
        help=f"Millions of parameters. Exact: {s.params:,}.",
        border=True,
    )
    cols[1].metric(
        f"MACs at input {s.input_label}",
        summary.format_macs(s.macs),
        help=f"Millions of multiply-accumulates (convolution, linear and matmul ops) in one "
        f"forward pass at input {s.input_label}. Exact: {s.macs:,}.",
        border=True,
    )
    cols[2].metric("Input", s.input_label, help=layout + ".", border=True)
    if loaded.sample is None:
        cols[3].metric("Score", score or "not measured", help=score_help or
                       "Press 'Score the model' below.", border=True)
        st.caption(f"Params and MACs in millions; MACs at input {s.input_label} (batch 1; "
                   "convolution, linear and matmul ops)."
                   + (f" Score: {score_help}." if score else ""))
        return
    source = summary.accuracy_source(test_size)
    if loaded.accuracy is None:
        cols[3].metric(
            "Top-1 accuracy",
            "not recorded",
            help=f"No accuracy in sample_models/metrics.json for {loaded.name}; run "
            f"`python sample_models/train.py --only {loaded.name}` to record it.",
            border=True,
        )
    else:
        cols[3].metric(
            "Top-1 accuracy", f"{loaded.accuracy:.2f} %", help=f"{source}.", border=True
        )
    recorded = (
        "recorded when the model was trained (`sample_models/metrics.json`)"
        if loaded.accuracy is not None
        else "not recorded for this model yet"
    )
    st.caption(
        f"Params and MACs in millions; MACs at input {s.input_label} (batch 1; convolution, "
        f"linear and matmul ops). Accuracy: {source}, {recorded}."
    )


def layer_table(s: ModelSummary) -> None:
    """The per-layer table: exact params and MACs with thousands separators."""
    st.subheader("Layers", anchor=False)
    st.caption(
        f"{s.num_layers} layers with their own parameters or MACs. Params and MACs are exact "
        f"counts at input {s.input_label}; the bar is the layer's share of the model's MACs."
    )
    st.dataframe(
        s.table,
        hide_index=True,
        width="stretch",
        height=min(36 + 35 * len(s.table), 640),
        column_config={
            "name": st.column_config.TextColumn("Layer", width="medium"),
            "type": st.column_config.TextColumn("Type"),
            "params": st.column_config.NumberColumn("Params", format="%,d"),
            "macs": st.column_config.NumberColumn("MACs", format="%,d"),
            "macs_share": st.column_config.ProgressColumn(
                "Share of MACs", format="%.1f %%", min_value=0.0, max_value=100.0
            ),
            "output_shape": st.column_config.TextColumn("Output shape"),
        },
        key="model_layers",
    )


def groups_table(groups: Any) -> None:
    """Channel groups: one row per group with its tied layers, channels, and why it is fixed."""
    st.subheader("Channel groups", anchor=False)
    prunable = int(groups["prunable"].sum()) if len(groups) else 0
    st.caption(
        f"{len(groups)} groups, {prunable} prunable. Layers in one group share their output "
        "channels (residual adds, concatenations, depthwise convolutions...), so they are "
        "pruned together; a fixed group says why it cannot be pruned."
    )
    st.dataframe(
        groups,
        hide_index=True,
        width="stretch",
        height=min(36 + 35 * len(groups), 520),
        column_config={
            "group": st.column_config.NumberColumn("Group"),
            "name": st.column_config.TextColumn("Leading layer"),
            "channels": st.column_config.NumberColumn("Channels"),
            "prunable": st.column_config.CheckboxColumn("Prunable"),
            "layers": st.column_config.TextColumn("Tied layers", width="large"),
            "reason": st.column_config.TextColumn("Why fixed", width="medium"),
        },
        key="model_groups",
    )

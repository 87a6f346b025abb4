"""Page parts that show a model: the sidebar picker, metric cards and the layer table."""

from __future__ import annotations

import streamlit as st

from uif_explorer import summary, zoo
from uif_explorer.summary import ModelSummary
from uif_explorer.ui import state
from uif_explorer.ui.loaders import LoadedSample

PICKER_KEY = "model_picker"
FRAMEWORK_NAMES = {"torch": "PyTorch", "keras": "Keras"}


def _picked() -> None:
    state.set_model_name(st.session_state[PICKER_KEY])


def sample_picker() -> str:
    """The sidebar's sample-model selectbox; returns the chosen model's key.

    ``state.MODEL_NAME`` is the source of truth (other pages read it, and it survives visits to
    pages without this widget, whose own state Streamlit drops); the widget copies a new choice
    into it through its ``on_change`` callback.
    """
    options = list(zoo.TORCH_SAMPLES)
    current = state.model_name()
    if current not in options:
        current = state.DEFAULT_MODEL if state.DEFAULT_MODEL in options else options[0]
        state.set_model_name(current)
    st.session_state[PICKER_KEY] = current
    with st.sidebar:
        st.subheader("Model")
        choice = st.selectbox(
            "Sample model",
            options,
            key=PICKER_KEY,
            on_change=_picked,
            format_func=lambda name: zoo.SAMPLE_MODELS[name].title,
            help="The PyTorch sample models bundled with the repository "
            "(weights in `sample_models/`).",
        )
        st.caption(
            f"`{choice}` · {FRAMEWORK_NAMES[zoo.SAMPLE_MODELS[choice].framework]} · "
            "trained on Fashion-MNIST (28x28 grayscale, 10 classes)"
        )
    return choice


def header(loaded: LoadedSample) -> None:
    st.header(loaded.sample.title, anchor=False)
    st.markdown(loaded.sample.description)


def metric_cards(loaded: LoadedSample, test_size: int | None) -> None:
    """Params, MACs, input shape and recorded accuracy as four metric cards with their units."""
    s: ModelSummary = loaded.summary
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
    cols[2].metric(
        "Input",
        s.input_label,
        help="batch x channels x height x width (PyTorch's NCHW layout).",
        border=True,
    )
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
    )

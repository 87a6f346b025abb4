"""Model page: the loaded model's size, cost, accuracy and per-layer table."""

import streamlit as st

from uif_explorer import summary, zoo
from uif_explorer.ui import errors, loaders, model_view

st.title("Model", anchor=False)
st.markdown(
    "UIF Explorer prunes channels of CNNs. Pick a model in the sidebar to see its size, "
    "its accuracy and where its MACs are."
)

with errors.guard("showing the model"):
    name = model_view.sample_picker()
    try:
        loaded = loaders.load_sample(name)
    except Exception as exc:  # noqa: BLE001 - explained on the page, traceback to the log
        weights = zoo.SAMPLE_MODELS[name].weights_path if name in zoo.SAMPLE_MODELS else None
        errors.show(summary.load_error_hint(name, exc, weights), exc)
        st.stop()
    model_view.header(loaded)
    model_view.metric_cards(loaded, loaders.bundled_test_size())
    model_view.layer_table(loaded.summary)

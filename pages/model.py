"""Model page: the current model's size, cost, accuracy, layer table and channel groups, and
the uploads that change it (your own model, evaluation data, a workspace from elsewhere)."""

import streamlit as st

from uif_explorer import zoo
from uif_explorer.io.loading import LoadError
from uif_explorer.services import summary
from uif_explorer.ui import errors, loaders, model_view, state, upload_view

st.title("Model", anchor=False)
st.markdown(
    "UIF Explorer prunes channels of CNNs. Pick a sample model in the sidebar, or upload your "
    "own below, to see its size, its accuracy, where its MACs are and which layers are tied "
    "into channel groups."
)

with errors.guard("showing the model"):
    model_view.sample_picker()
    upload_view.flash()
    source = state.current_source()
    try:
        loaded = loaders.current()
    except LoadError as exc:
        errors.show(f"The model **{source.title}** cannot be loaded: {exc}")
        loaded = None
    except Exception as exc:  # noqa: BLE001 - explained on the page, traceback to the log
        name = source.arch or source.name
        weights = zoo.SAMPLE_MODELS[name].weights_path if name in zoo.SAMPLE_MODELS else None
        errors.show(summary.load_error_hint(name, exc, weights), exc)
        loaded = None
    if loaded is not None:
        model_view.header(loaded)
        score = help_text = None
        if loaded.sample is None:
            done = st.session_state.get(upload_view.score_key(loaded))
            if done:
                score, help_text = done
        model_view.metric_cards(loaded, loaders.bundled_test_size(), score, help_text)
        if loaded.sample is None and not score:
            if st.button("Score the model", key="model_score", icon=":material/speed:"):
                try:
                    with st.spinner("Scoring..."):
                        upload_view.score_now(loaded)
                    st.rerun()
                except LoadError as exc:
                    errors.show(str(exc))
        model_view.layer_table(loaded.summary)
        try:
            model_view.groups_table(loaders.groups(loaded))
            errors.nothing_to_prune(loaded)  # one line naming the frozen layers and why
        except Exception as exc:  # noqa: BLE001 - an unprunable model is still shown
            first = (str(exc).strip().splitlines() or ["no details"])[0][:400]
            errors.show(f"This model cannot be pruned: {type(exc).__name__}: {first}. Its "
                        "params and MACs above are still right; the Sensitivity and One-step "
                        "pages need a model whose channels can be followed.", exc)
    st.divider()
    upload_view.upload_section()
    upload_view.data_section(source, loaded)

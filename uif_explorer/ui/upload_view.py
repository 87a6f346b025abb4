"""The Model page's upload section: your own model, evaluation data, a workspace from elsewhere.

Every upload goes through ``uif_explorer.io.loading`` (size limit, type sniffed from the content,
no unpickling without the server's trust option) and ``uif_explorer.services.uploads`` (stored as
``uploads/<sha256>.<ext>`` in the session's workspace; the user's file name is never a path).
A refusal is an error box that says what is wrong and how to fix it; the current model stays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from uif_explorer.io import loading, multi_input_npz
from uif_explorer.io.loading import LoadError
from uif_explorer.services import eval_data, model_outputs, model_source, uploads, workspace_info
from uif_explorer.services.model_source import ModelSource
from uif_explorer.ui import errors, loaders, state, workspace

FLASH_KEY = "upload_flash"
"""Session key: the success message of the last upload, shown once after the rerun."""
WEIGHT_TYPES = ["pth", "pt", "bin", "safetensors"]


def _fail(what: str, exc: BaseException) -> None:
    if isinstance(exc, LoadError):
        errors.show(f"{what} refused: {exc}")
    else:
        first = (str(exc).strip().splitlines() or ["no details"])[0][:300]
        errors.show(f"{what} failed: {type(exc).__name__}: {first}. The current model is "
                    "unchanged; check the file and the fields above, then try again.", exc)


def _use(what: str, make: Callable[[], tuple[ModelSource, Any]]) -> None:
    """Run ``make`` (which loads and checks the upload), make its model current, rerun."""
    try:
        with st.spinner(f"Checking and loading the {what}..."):
            source, _model = make()
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message with a fix
        _fail(f"The {what}", exc)
        return
    state.set_source(source)
    st.session_state[FLASH_KEY] = (f"Loaded **{source.title}**: it is now the current model on "
                                   "every page (workspace files named "
                                   f"`{source.name}`).")
    st.rerun()


def flash() -> None:
    """The last upload's success message, once."""
    message = st.session_state.pop(FLASH_KEY, None)
    if message:
        st.success(message, icon=":material/check_circle:")


def _data_of(uploaded: Any) -> bytes | None:
    if uploaded is None:
        return None
    return uploaded.getvalue()


def _shape_or_none(text: str) -> tuple[int, ...] | None:
    return model_source.parse_shape(text) if text.strip() else None


def upload_section() -> None:
    """Tabs for each kind of model upload, plus the workspace archive."""
    folder = workspace.current_folder()
    limit = loading.max_upload_mb()
    st.subheader("Use your own model", anchor=False)
    st.caption(f"Uploads are checked by their content (not their name), limited to {limit} MB "
               f"(`{loading.MAX_UPLOAD_ENV}`), and kept in this session's workspace only.")
    tabs = st.tabs(["PyTorch weights", "torch.export (.pt2)", "Keras (.keras)",
                    "Pickled module", "Workspace (.zip)"])
    with tabs[0]:
        _weights_tab(folder)
    with tabs[1]:
        st.markdown("A program saved with `torch.export.save(torch.export.export(model, "
                    "(x,)), 'model.pt2')`: it loads without running any of your code.")
        up = st.file_uploader("Exported program (.pt2)", type=["pt2"], key="up_pt2")
        shape = st.text_input("Input shape (optional)", key="up_pt2_shape",
                              placeholder="read from the program, e.g. 1x3x224x224")
        if st.button("Load program", key="up_pt2_go", disabled=up is None):
            data = _data_of(up)
            _use("exported program", lambda: uploads.from_pt2(
                folder, data, _shape_or_none(shape)))
    with tabs[2]:
        st.markdown("A Functional or Sequential model saved with `model.save('model.keras')`. "
                    "Its config is checked first: built-in Keras layers only (no `Lambda`, no "
                    "custom classes), then it is loaded with `safe_mode=True`.")
        up = st.file_uploader("Keras model (.keras)", type=["keras"], key="up_keras")
        if st.button("Load Keras model", key="up_keras_go", disabled=up is None):
            data = _data_of(up)
            _use("Keras model", lambda: uploads.from_keras(folder, data))
    with tabs[3]:
        _pickle_tab(folder)
    with tabs[4]:
        st.markdown("A workspace folder made by the CLI or the API on another machine "
                    "(`workspace.json`, `*.sens`, `*.search`, `*.spec`), zipped. Its files are "
                    "copied into this session's workspace and its model becomes current, so "
                    "the Sensitivity and One-step pages show its results.")
        up = st.file_uploader("Workspace folder (.zip)", type=["zip"], key="up_ws")
        if st.button("Open workspace", key="up_ws_go", disabled=up is None):
            data = _data_of(up)

            def make() -> tuple[ModelSource, Any]:
                source, notes = workspace_info.import_workspace(folder, data)
                import dataclasses

                return dataclasses.replace(source, notes=tuple(notes)), None

            _use("workspace archive", make)


def _weights_tab(folder: Any) -> None:
    st.markdown("Pick the architecture your weights belong to, set its number of classes, and "
                "upload a state dict (`torch.save(model.state_dict(), ...)`, read with "
                "`weights_only=True`; GPU-saved files load on the CPU) or a `.safetensors` file.")
    archs = model_source.registry_architectures()
    c1, c2, c3 = st.columns([2, 1, 1])
    arch = c1.selectbox("Architecture", archs, key="up_arch",
                        help="The sample architectures, then every torchvision classification "
                        "model (built without downloading weights).")
    classes = int(c2.number_input("Number of classes", 1, 100_000, 10, key="up_classes"))
    shape = c3.text_input("Input shape", key="up_shape",
                          placeholder="x".join(map(str, model_source.default_input_shape(arch))),
                          help="Batch 1 first, NCHW; empty: the architecture's default.")
    up = st.file_uploader("Weights (.pth, .pt, .bin or .safetensors)", type=WEIGHT_TYPES,
                          key="up_weights")
    if st.button("Load weights", key="up_weights_go", type="primary", disabled=up is None):
        data = _data_of(up)
        _use("weights", lambda: uploads.from_weights(folder, data, arch, classes,
                                                          _shape_or_none(shape)))


def _pickle_tab(folder: Any) -> None:
    trusted = loading.trust_pickle_enabled()
    if not trusted:
        st.info(
            "Whole pickled models (`torch.save(model)`) are refused on this server: unpickling "
            "runs the code inside the file, so an uploaded pickle could take over the machine. "
            "Save `model.state_dict()` or export with `torch.export` instead. On your own "
            f"machine, with files you trust, start the app with `{loading.TRUST_ENV}=1 "
            "./run.sh` to enable this upload.",
            icon=":material/lock:",
        )
    else:
        st.warning("Trust option on: a pickled model runs its code when it is loaded. Upload "
                   "only files you made yourself.", icon=":material/warning:")
    up = st.file_uploader("Pickled nn.Module (.pt, .pth, .pkl)", type=["pt", "pth", "pkl"],
                          key="up_pickle", disabled=not trusted)
    shape = st.text_input("Input shape", key="up_pickle_shape", value="1x3x224x224",
                          disabled=not trusted)
    if st.button("Load pickled model", key="up_pickle_go", disabled=up is None or not trusted):
        data = _data_of(up)
        _use("pickled model", lambda: uploads.from_pickle(
            folder, data, loading.trust_pickle_enabled(), _shape_or_none(shape)))


PRESET_WORDS = {
    "imagenet": "ImageNet mean/std, resize + centre crop to the model's input",
    "samples": "as the sample models (Fashion-MNIST mean/std, no crop margin)",
    "custom": "custom mean, std and resize size",
}
SCORE_IMAGES = 500  # evaluation images the data section's score uses (at most)


def score_key(loaded: Any) -> str:
    """Session key of the model's score on the session's current data."""
    data = state.current_data()
    data_key = (data.key if data is not None and data.for_model == loaded.source.key
                else "bundled")
    return f"model_score:{loaders.cache_key(loaded.source, '')}:{data_key}"


def score_now(loaded: Any) -> tuple[str, str]:
    """Score the model on the session's data; ``(value text, what it is)``, kept per data."""
    ev = loaders.evaluator(loaded, SCORE_IMAGES)
    value = ev.score(loaders.private_copy(loaded))
    done = (f"{value:.2f} %", ev.describe())  # describe() names the number of images
    st.session_state[score_key(loaded)] = done
    return done


def data_section(source: ModelSource, loaded: Any = None) -> None:
    """Which data scores the model, its classes and splits, its score, and the uploads that
    replace the bundled data (image folders in a zip, or an ``.npz``)."""
    st.subheader("Evaluation data", anchor=False)
    current = state.current_data()
    if current is not None and current.for_model != source.key:
        current = None
    fits = eval_data.bundled_fits(source)
    if current is not None:
        kind = ("labelled: top-1 accuracy" if current.labelled else
                "no labels: the label-free score (agreement with the original model's "
                "predictions) is used and named as such")
        st.markdown(f"Scores use {current.title} ({current.count:,} samples, {kind}).")
        if current.kind == eval_data.IMAGES:
            _splits(current, source)
        if loaded is not None:
            _output_choice(current, loaded)
            _data_score(loaded)
        if fits and st.button("Use the bundled data again", key="data_reset"):
            state.set_data(None)
            st.rerun()
    elif fits:
        st.markdown("Scores use the bundled Fashion-MNIST test subset (top-1 accuracy).")
    elif source.inputs:
        st.warning(eval_data.needs_data(source), icon=":material/dataset:")
    else:
        st.warning(f"This model takes {source.input_label} inputs, so the bundled 28x28 "
                   "Fashion-MNIST data cannot score it: upload your images (a zip of class "
                   "folders) or an .npz below to analyse and prune it.",
                   icon=":material/dataset:")
    if source.inputs:  # image folders feed one tensor: only arrays fit several inputs
        _npz_tab(source, loaded)
        return
    tabs = st.tabs(["Image folders (.zip)", "Arrays (.npz)"])
    with tabs[0]:
        _images_tab(source, loaded)
    with tabs[1]:
        _npz_tab(source, loaded)


def _splits(ds: eval_data.DataSource, source: ModelSource) -> None:
    """Class names and images per split (cached per data: reading the folder decodes it)."""
    key = f"data_splits:{ds.key}"
    if key not in st.session_state:
        try:
            images = eval_data.image_data(workspace.current_folder(), ds, source)
        except Exception as exc:  # noqa: BLE001 - the folder went missing or changed
            errors.show(f"The image folders cannot be read any more: {exc}. Upload them again.",
                        exc)
            return
        st.session_state[key] = (eval_data.split_table(images), images.describe())
    rows, text = st.session_state[key]
    st.caption(f"{len(rows)} classes (class i = the i-th folder name in sorted order): {text}.")
    st.dataframe(rows, hide_index=True, key="data_splits_table")


OUTPUT_ERROR = "data_output_error"
"""Session key: why the last output choice was refused, shown once beside the choice."""


def _output_choice(ds: eval_data.DataSource, loaded: Any) -> None:
    """Which output of a dict/tuple-output model is scored (nothing for one tensor)."""
    key = f"data_outputs:{loaded.source.key}"
    if key not in st.session_state:
        st.session_state[key] = model_outputs.read_outputs(loaded.source, loaded.model)
    outputs = st.session_state[key]
    if not outputs:
        return
    keys = [o.key for o in outputs]
    labels = {o.key: o.label for o in outputs}
    now = ds.output if ds.output in keys else model_outputs.default_key(outputs)
    widget = f"data_output:{ds.sha256 or ds.file}"
    st.selectbox("Output scored as the class scores", keys,
                 index=keys.index(now) if now in keys else 0, format_func=labels.__getitem__,
                 key=widget, on_change=_output_changed, args=(widget, ds, loaded),
                 help="The model returns several outputs; scores read the class scores of "
                 "this one (shape (batch, classes)). Default: the first output of that shape.")
    refused = st.session_state.pop(OUTPUT_ERROR, None)
    if refused:
        errors.show(refused)


def _output_changed(widget: str, ds: eval_data.DataSource, loaded: Any) -> None:
    """Score another output: checked first; a refused choice goes back to the one in use."""
    picked = st.session_state[widget]
    try:
        new = eval_data.with_output(workspace.current_folder(), ds, loaded.source,
                                    loaded.model, picked)
    except Exception as exc:  # noqa: BLE001 - shown with a fix; the data stays as it was
        st.session_state[widget] = ds.output
        st.session_state[OUTPUT_ERROR] = (f"The output '{picked}' was refused: {exc} Scores "
                                          f"still read '{ds.output}'.")
        return
    state.set_data(new)
    st.session_state[FLASH_KEY] = f"Scores now read the output '{picked}'."


def _data_score(loaded: Any) -> None:
    done = st.session_state.get(score_key(loaded))
    if done:
        st.metric("Score on this data", done[0], help=done[1], border=True)
        st.caption(f"Score: {done[1]} (the original model, no BN re-estimation).")
    elif st.button("Score the model on this data", key="data_score"):
        try:
            with st.spinner("Scoring..."):
                score_now(loaded)
        except Exception as exc:  # noqa: BLE001 - shown with a fix
            _fail("Scoring", exc)
            return
        st.rerun()


def _floats_or_none(text: str) -> list[float] | None:
    return [float(v) for v in text.replace(";", ",").split(",")] if text.strip() else None


def _images_tab(source: ModelSource, loaded: Any) -> None:
    st.markdown("A zip of class folders (`cats/1.jpg`, `dogs/2.png`; JPEG, PNG or WebP), as "
                "for torchvision's `ImageFolder` or Keras' `image_dataset_from_directory`: one "
                "folder per model output, class *i* the *i*-th folder name in sorted order. "
                "The images are split per class (seed 0) into calibration (20 %: BatchNorm "
                "re-estimation), evaluation (30 %: scores) and fine-tuning (50 %) images.")
    presets = list(PRESET_WORDS)
    if st.session_state.get("up_img_preset_for") != source.key:  # a new model: its default
        st.session_state["up_img_preset_for"] = source.key
        st.session_state["up_img_preset"] = eval_data.default_preset(source)
    preset = st.selectbox("Preprocessing", presets, key="up_img_preset",
                          format_func=lambda p: f"{p}: {PRESET_WORDS[p]}",
                          help=f"Images are resized and centre-cropped to the model's input "
                          f"({source.input_label}, {source.layout}).")
    mean = std = resize = None
    if preset == "custom":
        c1, c2, c3 = st.columns(3)
        mean = c1.text_input("Mean", "0.5", key="up_img_mean",
                             help="One value, or one per channel: 0.485, 0.456, 0.406")
        std = c2.text_input("Std", "0.5", key="up_img_std", help="As the mean; > 0.")
        resize = int(c3.number_input("Resize (shorter side)", 0, 4096, 0, key="up_img_resize",
                                     help="Before the centre crop; 0: the input size."))
    up = st.file_uploader("Image folders (.zip)", type=["zip"], key="up_images")
    if st.button("Use these images", key="up_images_go", disabled=up is None):
        data = _data_of(up)
        try:
            with st.spinner("Checking, decoding and splitting the images..."):
                ds = eval_data.store_images(
                    workspace.current_folder(), data, source, preset,
                    model=loaded.model if loaded is not None else None,
                    mean=_floats_or_none(mean or ""), std=_floats_or_none(std or ""),
                    resize=resize or None)
        except (LoadError, ValueError) as exc:
            errors.show(f"The image folders were refused: {exc} The evaluation data in use "
                        "is unchanged.")
            return
        except Exception as exc:  # noqa: BLE001 - shown with a fix
            _fail("The image folders", exc)
            return
        _use_data(ds, loaded, f"Image folders loaded: {ds.count:,} evaluation images "
                  f"({preset} preprocessing).")


def _use_data(ds: eval_data.DataSource, loaded: Any, message: str) -> None:
    """Make ``ds`` the session's data, score the model on it, say so, rerun."""
    state.set_data(ds)
    if loaded is not None:
        try:
            with st.spinner("Scoring the model on the new data..."):
                value, what = score_now(loaded)
            message += f" Score: {value} ({what})."
        except Exception as exc:  # noqa: BLE001 - the data stays; the score can be retried
            message += f" The model could not be scored on it: {exc}"
    st.session_state[FLASH_KEY] = message
    st.rerun()


def _npz_tab(source: ModelSource, loaded: Any) -> None:
    if source.inputs:
        names = multi_input_npz.program_input_names(loaded.model) if loaded else None
        st.caption("An `.npz` (numpy.savez, read without pickle) with one array per model "
                   "input and `labels` (one integer class per sample), N the same in all: "
                   f"{multi_input_npz.expected_arrays(source.inputs, names)}. `input_0`, "
                   "`input_1`, ... work as names too.")
    else:
        st.caption(f"An `.npz` (numpy.savez) with `x`: samples in the model's layout "
                   f"({source.layout}, {source.input_label} without the batch), float32 "
                   "preprocessed or uint8 with the sample models' preprocessing; optional "
                   "`y`: integer labels. Without `y` the label-free score is used.")
    up = st.file_uploader("Evaluation data (.npz)", type=["npz"], key="up_npz")
    if st.button("Use this data", key="up_npz_go", disabled=up is None):
        data = _data_of(up)
        try:
            with st.spinner("Checking the data..."):
                ds = eval_data.store_npz(workspace.current_folder(), data, source,
                                         model=loaded.model if loaded is not None else None)
        except Exception as exc:  # noqa: BLE001 - shown with a fix
            _fail("The data", exc)
            return
        state.set_data(ds)
        st.session_state[FLASH_KEY] = (
            f"Evaluation data loaded: {ds.count:,} samples, "
            + ("with labels (top-1 accuracy)." if ds.labelled else
               "without labels (the label-free score is used).")
            + (f" Output scored: '{ds.output}'." if ds.output is not None else ""))
        st.rerun()

"""The corpus through the app (Streamlit's AppTest): a clear error box, never a traceback.

AppTest cannot attach a file to ``st.file_uploader``, so each upload case goes through exactly
what the Model page's buttons run with the uploaded bytes: ``upload_view._use`` around the
``model_source`` loader (``_fail`` renders the refusal with ``errors.show``), and for ``.npz``
data ``eval_data.store_npz``. The real uploader is driven in a browser by
``tests/browser/test_security_browser.py``. Bad ratios / ``num_subnet`` values go through the
pages' own widgets: they are bounded, and Streamlit keeps an out-of-range value from reaching
the script.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from make_corpus import MARKER_NAME, SMALL_LIMIT_MB, Case, build_corpus
from streamlit.testing.v1 import AppTest

from uif_explorer import zoo

APP = "../../app.py"
TIMEOUT = 180
TOKEN = "sec-token-" + "b" * 22
TRACEBACK_SIGNS = ("Traceback (most recent call last)", 'File "')
UPLOAD_KIND = {"state_dict": "weights", "apply_state_dict": "weights",
               "exported_program": "pt2", "keras_config": "keras", "keras_model": "keras",
               "pickled_module": "pickle", "npz": "npz", "upload_size": "weights",
               "workspace_zip": "workspace"}


def upload_script(paths: list[str], kinds: list[str], limits: list[str], folder: str) -> None:
    """Feed each file to what its upload button runs; every refusal is an error box.

    ``limits``: the server's ``UIF_MAX_UPLOAD_MB`` for each file ("" for the default).
    """
    import os
    from pathlib import Path

    from uif_explorer.services import eval_data, model_source
    from uif_explorer.ui import upload_view

    ws = Path(folder)
    makers = {
        "weights": lambda d: model_source.from_weights(ws, d, "resnet20", 10, None),
        "pt2": lambda d: model_source.from_pt2(ws, d, None),
        "keras": lambda d: model_source.from_keras(ws, d),
        "pickle": lambda d: model_source.from_pickle(ws, d, False, (1, 1, 28, 28)),
        "workspace": lambda d: model_source.import_workspace(ws, d),
    }
    sample = model_source.sample_source("resnet20")
    for path, kind, limit in zip(paths, kinds, limits, strict=True):
        data = Path(path).read_bytes()
        os.environ.pop("UIF_MAX_UPLOAD_MB", None)
        if limit:
            os.environ["UIF_MAX_UPLOAD_MB"] = limit
        if kind == "npz":
            try:
                eval_data.store_npz(ws, data, sample)
            except Exception as exc:  # noqa: BLE001 - as the page does
                upload_view._fail("The data", exc)
        else:
            upload_view._use(kind, lambda d=data, k=kind: makers[k](d))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Case]]:
    folder = tmp_path_factory.mktemp("corpus")
    return folder, build_corpus(folder)


def _run_uploads(cases: list[Case], folder: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.delenv("UIF_MAX_UPLOAD_MB", raising=False)  # restored after the test
    st.cache_resource.clear()
    limits = [str(SMALL_LIMIT_MB) if c.target == "upload_size" else "" for c in cases]
    at = AppTest.from_function(upload_script, default_timeout=TIMEOUT, args=(
        [str(c.path) for c in cases], [UPLOAD_KIND[c.target] for c in cases], limits,
        str(folder)))
    return at.run()


def _check_messages(at: AppTest, cases: list[Case], corpus_dir: Path) -> None:
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == len(cases), errors  # one box per upload: none was accepted
    bad = []
    for case, message in zip(cases, errors, strict=True):
        if any(s in message for s in TRACEBACK_SIGNS) or not any(
                f.lower() in message.lower() for f in case.expect):
            bad.append(f"{case.name}: {message}")
    assert not bad, "\n".join(bad)
    assert not (corpus_dir / MARKER_NAME).exists()


def _upload_cases(corpus: tuple[Path, list[Case]], keras: bool) -> list[Case]:
    keras_targets = {"keras_config", "keras_model"}
    return [c for c in corpus[1] if c.upload and (c.target in keras_targets) == keras]


def test_uploads_are_refused_with_a_message(corpus, tmp_path, monkeypatch):
    cases = _upload_cases(corpus, keras=False)
    assert len(cases) >= 30
    keep = tmp_path / "keep.sens"
    keep.write_text('{"saved": true}')
    at = _run_uploads(cases, tmp_path, monkeypatch)
    _check_messages(at, cases, corpus[0])
    assert keep.read_text() == '{"saved": true}'  # nothing saved is lost
    stored = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert stored == ["keep.sens"], stored  # a refused upload is not kept


@pytest.mark.tf
def test_keras_uploads_are_refused_with_a_message(corpus, tmp_path, monkeypatch):
    cases = _upload_cases(corpus, keras=True)
    at = _run_uploads(cases, tmp_path, monkeypatch)
    _check_messages(at, cases, corpus[0])
    kept = [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()]
    # load_keras_model reads a content-named copy (uploads/<sha256>.keras) and deletes it
    # when it refuses the model: a refused upload leaves no file behind
    assert not [k for k in kept if k.suffix == ".keras"], kept


# -- bounded widgets -------------------------------------------------------------------------
def _page(page: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    if not zoo.get_sample("resnet20").weights_path.exists():
        pytest.skip("resnet20's weights are not trained yet")
    monkeypatch.setenv("UIF_WORKSPACES", str(root))
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["ws"] = TOKEN
    at.run()
    at.switch_page(page)
    return at.run()


@pytest.mark.slow
def test_one_step_inputs_are_bounded_and_out_of_range_values_never_run(tmp_path, monkeypatch):
    at = _page("pages/one_step.py", tmp_path, monkeypatch)
    assert not at.exception and not at.error, [e.value for e in at.error]
    num, pct = at.number_input(key="os_num"), at.number_input(key="os_pct")
    assert (num.min, num.max) == (1, 500) and (pct.min, pct.max) == (5, 80)
    before_num, before_pct = num.value, pct.value
    for value in (0, -1, 10**9):
        at.number_input(key="os_num").set_value(value).run()
        assert at.number_input(key="os_num").value == before_num
    for value in (-100, 0, 100, 200):
        at.number_input(key="os_pct").set_value(value).run()
        assert at.number_input(key="os_pct").value == before_pct
    assert not at.exception
    assert not list((tmp_path / TOKEN).glob("*.search"))  # nothing ran


@pytest.mark.slow
def test_sensitivity_slider_is_bounded(tmp_path, monkeypatch):
    import copy

    from uif_explorer.services import analysis, eval_data
    from uif_explorer.torch.evaluation import top1_accuracy
    from uif_explorer.torch.runners import get_pruning_runner

    runner = get_pruning_runner(copy.deepcopy(zoo.load_torch_sample("resnet20")),
                                zoo.example_input("resnet20"), "iterative",
                                workdir=tmp_path / TOKEN, name="resnet20")
    runner.ana(top1_accuracy, args=(eval_data.test_loader(32),), ratios=(0.5,))
    analysis.write_settings(runner.workspace.sens("resnet20"), 32, (0.5,))
    at = _page("pages/sensitivity.py", tmp_path, monkeypatch)
    assert not at.exception and not at.error, [e.value for e in at.error]
    slider = at.slider(key="sens_macs_pct")
    assert (slider.min, slider.max) == (5, 80)
    before = slider.value
    for value in (-100, 0, 1, 100, 200):
        at.slider(key="sens_macs_pct").set_value(value).run()
        assert at.slider(key="sens_macs_pct").value == before
    assert not at.exception and not at.error
    assert not list((tmp_path / TOKEN).glob("*.spec"))  # nothing was pruned

"""Every bad input of the corpus through the API: a clear message, no code run, nothing lost.

A clear message is one :class:`LoadError` / ``ValueError`` whose text names the problem (one of
the case's expected fragments) and holds no traceback. The pickle payloads would create a
marker file if anything unpickled them; it must never exist. A workspace holding a finished
analysis and search is checked byte for byte after every refused call.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from make_corpus import MARKER_NAME, SMALL_LIMIT_MB, Case, TouchPayload, build_corpus, nan_or

from uif_explorer.data import torch_loader
from uif_explorer.io import loading
from uif_explorer.io.loading import LoadError
from uif_explorer.io.validation import (
    check_finite_module,
    check_finite_weights,
    display_name,
    nonfinite_names,
)
from uif_explorer.torch.evaluation import top1_accuracy
from uif_explorer.torch.runners import get_pruning_runner
from uif_explorer.zoo import build_torch, example_input, load_torch_sample

TRACEBACK_SIGNS = ("Traceback (most recent call last)", 'File "', "\n  at ")


# -- shared fixtures ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Case]]:
    folder = tmp_path_factory.mktemp("corpus")
    return folder, build_corpus(folder)


@pytest.fixture(autouse=True)
def marker_never_created(corpus: tuple[Path, list[Case]]):
    yield
    assert not (corpus[0] / MARKER_NAME).exists(), "a payload ran: the marker file exists"


def cases_for(corpus: tuple[Path, list[Case]], *targets: str) -> list[Case]:
    found = [c for c in corpus[1] if c.target in targets]
    assert found, targets
    return found


def assert_clear(message: str, case: Case) -> None:
    """One readable message that says what is wrong (an expected fragment), no traceback."""
    assert message.strip(), case.name
    assert not any(sign in message for sign in TRACEBACK_SIGNS), (case.name, message)
    assert len(message) < 1500, (case.name, message)
    assert any(f.lower() in message.lower() for f in case.expect), (case.name, message)


def refuse_all(cases: list[Case], call: Callable[[Case], object],
               errors: tuple[type[BaseException], ...] = (LoadError,)) -> None:
    """Every case is refused with a clear message; report all failures at once."""
    failures = []
    for case in cases:
        try:
            call(case)
        except errors as exc:
            try:
                assert_clear(str(exc), case)
            except AssertionError as bad:
                failures.append(f"{case.name}: unclear message: {bad}")
        except Exception as exc:  # noqa: BLE001 - any other type is a failure to report
            failures.append(f"{case.name}: {type(exc).__name__} instead of a clear error: {exc}")
        else:
            failures.append(f"{case.name}: accepted, expected a refusal")
    assert not failures, "\n".join(failures)


def loader(name: str) -> Callable:
    """A loader of uif_explorer.io.loading (the upload loaders arrive with the upload UI)."""
    fn = getattr(loading, name, None)
    if fn is None:
        pytest.skip(f"uif_explorer.io.loading.{name} does not exist yet")
    return fn


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def resnet20() -> torch.nn.Module:
    return load_torch_sample("resnet20")


@pytest.fixture(scope="module")
def saved_workspace(tmp_path_factory: pytest.TempPathFactory, resnet20):
    """A workspace with a finished analysis and a finished search (tiny), and its bytes."""
    folder = tmp_path_factory.mktemp("ws")
    loader_ = torch_loader("test", limit=32, batch_size=32)
    x = example_input("resnet20")
    it = get_pruning_runner(copy.deepcopy(resnet20), x, "iterative", workdir=folder, name="r20")
    it.ana(top1_accuracy, args=(loader_,), ratios=(0.5,))
    it.prune(removal_ratio=0.3)
    one = get_pruning_runner(copy.deepcopy(resnet20), x, "one_step", workdir=folder, name="r20")
    one.search(eval_fn=top1_accuracy, eval_args=(loader_,), num_subnet=2, removal_ratio=0.3)
    return folder, it, one, loader_, snapshot(folder)


# -- PyTorch weights, pickles, archives, ONNX -----------------------------------------------
def test_state_dict_cases(corpus):
    refuse_all(cases_for(corpus, "state_dict"), lambda c: loading.load_state_dict(c.data))


def test_weights_that_do_not_fit_or_hold_nan(corpus):
    def call(case: Case) -> None:
        state = loading.load_state_dict(case.data)
        loading.apply_state_dict(build_torch("resnet20"), state)

    refuse_all(cases_for(corpus, "apply_state_dict"), call)


def test_pickled_module_is_refused_without_trust(corpus):
    load = loader("load_pickled_module")
    cases = cases_for(corpus, "pickled_module")
    refuse_all(cases, lambda c: load(c.data, trust=False))
    # a real whole-model pickle is refused too (no trust), and points at the trust option
    buf = __import__("io").BytesIO()
    torch.save(build_torch("resnet20"), buf)
    with pytest.raises(LoadError, match="trust"):
        load(buf.getvalue(), trust=False)


def test_the_payload_is_real(tmp_path):
    """Positive control: plain unpickling of the payload does create a marker."""
    marker = tmp_path / "m"
    pickle.loads(pickle.dumps(TouchPayload(marker)))  # noqa: S301 - the point of the test
    assert marker.exists()


def test_exported_program_cases(corpus):
    load = loader("load_exported_program")
    refuse_all(cases_for(corpus, "exported_program"), lambda c: load(c.data))


def test_upload_size_limit(corpus, monkeypatch):
    check = loader("check_upload_size")
    case = cases_for(corpus, "upload_size")[0]
    refuse_all([case], lambda c: check(c.data, limit_mb=SMALL_LIMIT_MB))
    monkeypatch.setenv("UIF_MAX_UPLOAD_MB", str(SMALL_LIMIT_MB))  # the server's setting
    refuse_all([case], lambda c: check(c.data))
    check(b"\x00" * 16)  # a small file passes
    monkeypatch.delenv("UIF_MAX_UPLOAD_MB")
    check(case.data)  # under the default limit


def test_zipped_workspace_cannot_escape_its_folder(corpus):
    members = loader("workspace_members")
    refuse_all(cases_for(corpus, "workspace_zip"), lambda c: members(c.data))


def test_npz_dataset_cases(corpus):
    refuse_all(cases_for(corpus, "npz"), lambda c: loading.load_npz_dataset(
        c.data, "NCHW", num_classes=10, input_shape=(1, 28, 28)))


def test_every_upload_is_sniffed_by_content_not_name(corpus):
    """The same bytes under any name give the same verdict; names never reach a path."""
    for case in cases_for(corpus, "state_dict"):
        assert loading.sniff(case.data) == loading.sniff(bytes(case.data))
    assert display_name("../../../../tmp/evil/../x.pt") == "x.pt"
    assert display_name("C:\\Windows\\system32\\a.pt") == "a.pt"
    assert display_name("a\x00b\r\n.pt") == "ab.pt"
    assert display_name("..") == "upload" and display_name(None) == "upload"
    assert "/" not in display_name("/etc/passwd") and display_name("/etc/passwd") == "passwd"


# -- validation helpers ---------------------------------------------------------------------
def test_nonfinite_weights_are_refused_by_name():
    good = build_torch("resnet20").state_dict()
    check_finite_weights(good)
    check_finite_module(build_torch("resnet20"))
    bad = dict(good)
    bad["fc.bias"] = torch.full_like(good["fc.bias"], float("-inf"))
    bad["conv1.weight"] = good["conv1.weight"].clone()
    bad["conv1.weight"].view(-1)[3] = float("nan")
    assert nonfinite_names(bad) == ["conv1.weight", "fc.bias"]
    with pytest.raises(LoadError, match=r"NaN or Inf values in 2 tensor\(s\) \('conv1.weight'"):
        check_finite_weights(bad)
    assert nonfinite_names([("a", np.array([1.0, np.nan])), ("i", np.array([1, 2]))]) == ["a"]
    assert nonfinite_names({"n": float("inf"), "t": torch.tensor([1, 2])}) == ["n"]


# -- runners: bad arguments, nothing saved is lost --------------------------------------------
def test_bad_ratios_and_num_subnet(corpus, saved_workspace):
    folder, it, one, loader_, before = saved_workspace
    errors = (ValueError,)  # PlanError and LoadError are ValueErrors

    def ratio_call(case: Case) -> None:
        value = nan_or(case.args["value"])
        for call in (lambda: it.prune(removal_ratio=value), lambda: it.plan(value),
                     lambda: one.search(eval_fn=top1_accuracy, eval_args=(loader_,),
                                        num_subnet=2, removal_ratio=value)):
            try:
                call()
            except errors as exc:
                assert_clear(str(exc), case)
            else:
                raise AssertionError(f"removal_ratio={value!r} accepted")
        raise ValueError("removal_ratio refused by prune, plan and search")

    refuse_all(cases_for(corpus, "removal_ratio"), ratio_call, errors)
    refuse_all(cases_for(corpus, "num_subnet"), lambda c: one.search(
        eval_fn=top1_accuracy, eval_args=(loader_,), num_subnet=c.args["value"],
        removal_ratio=0.3), errors)
    for bad in ([float("nan")], [-1.0], [0.0], [1.0], [2.0], []):
        with pytest.raises(ValueError, match="ratios in \\(0, 1\\)"):
            it.ana(top1_accuracy, args=(loader_,), ratios=bad, forced=True)
    assert snapshot(folder) == before, "a refused call changed saved files"


def test_input_signature_that_does_not_fit(corpus, resnet20, tmp_path):
    def call(case: Case) -> None:
        get_pruning_runner(resnet20, torch.randn(*case.args["shape"]), "iterative",
                           workdir=tmp_path)

    from uif_explorer.torch.capture import CaptureError

    refuse_all(cases_for(corpus, "input_signature"), call, (CaptureError, ValueError))
    assert not any(tmp_path.iterdir())


def test_unreachable_macs_range_fails_at_once(corpus, tmp_path):
    from uif_explorer.torch.ofa import load_bundled_supernet, run_evolutionary_search

    _, ofa = load_bundled_supernet("resnet20")
    calls: list[int] = []

    def eval_fn(model: torch.nn.Module) -> float:
        calls.append(1)
        return 0.0

    refuse_all(cases_for(corpus, "macs_range"), lambda c: run_evolutionary_search(
        ofa, None, (), eval_fn, (), min_macs=c.args["min_macs"], max_macs=c.args["max_macs"],
        workdir=tmp_path), (ValueError,))
    assert calls == [] and not any(tmp_path.iterdir())


# -- Keras ----------------------------------------------------------------------------------
@pytest.mark.tf
def test_keras_config_cases(corpus, tmp_path):
    check = loader("check_keras_config")
    refuse_all(cases_for(corpus, "keras_config"), lambda c: check(c.data))
    load = loader("load_keras_model")
    refuse_all(cases_for(corpus, "keras_config", "keras_model"),
               lambda c: load(c.data, tmp_path))


@pytest.mark.tf
def test_keras_lambda_payload_is_real(corpus, tmp_path):
    """Positive control: Keras with safe mode off would run the Lambda's code (the marker)."""
    import keras

    case = next(c for c in corpus[1] if c.name == "lambda_layer.keras")
    copy_ = tmp_path / "lam.keras"
    marker = corpus[0] / MARKER_NAME
    copy_.write_bytes(case.data)
    try:
        model = keras.saving.load_model(copy_, safe_mode=False, compile=False)
        model(np.zeros((1, 4), np.float32))
        ran = marker.exists()
    finally:
        marker.unlink(missing_ok=True)
    assert ran
    with pytest.raises(ValueError, match="(?i)lambda|unsafe|safe_mode"):
        keras.saving.load_model(copy_, safe_mode=True, compile=False)


@pytest.mark.tf
def test_keras_runner_bad_ratios(corpus, tmp_path):
    import keras

    from uif_explorer.keras import IterativePruningRunner

    i = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(i)
    x = keras.layers.Conv2D(8, 3, padding="same", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(i, keras.layers.Dense(3, name="head")(x))
    runner = IterativePruningRunner(model, (1, 8, 8, 3), workdir=tmp_path)
    runner.ana(lambda m: 1.0, ratios=(0.5,))
    before = snapshot(tmp_path)
    cases = [Case(c.name, c.path, c.target, ("ratio",), args=c.args)
             for c in cases_for(corpus, "removal_ratio")]
    refuse_all(cases, lambda c: runner.prune(ratio=nan_or(c.args["value"])), (ValueError,))
    refuse_all(cases, lambda c: runner.search(eval_fn=lambda m: 1.0, num_subnet=2,
                                              ratio=nan_or(c.args["value"])), (ValueError,))
    ns = [Case(c.name, c.path, c.target, c.expect, args=c.args)
          for c in cases_for(corpus, "num_subnet")]
    refuse_all(ns, lambda c: runner.search(eval_fn=lambda m: 1.0, num_subnet=c.args["value"],
                                           ratio=0.3), (ValueError,))
    assert snapshot(tmp_path) == before


def _nan_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU()).eval()
    with torch.no_grad():
        model[0].weight[1, 0, 1, 1] = float("nan")
    return model


def test_whole_models_with_nan_weights_are_refused():
    """Exported programs and (trusted) pickled modules get the same NaN/Inf check."""
    import io

    model = _nan_model()
    buf = io.BytesIO()
    torch.export.save(torch.export.export(model, (torch.randn(1, 1, 8, 8),)), buf)
    with pytest.raises(LoadError, match="NaN or Inf"):
        loader("load_exported_program")(buf.getvalue())
    buf = io.BytesIO()
    torch.save(model, buf)
    with pytest.raises(LoadError, match="NaN or Inf"):
        loader("load_pickled_module")(buf.getvalue(), trust=True)

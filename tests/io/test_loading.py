"""Upload loaders (``io.loading``) and model sources (``services.model_source``)
on real files made from the sample models: state dicts, safetensors, torch.export programs,
pickles, .keras files, .npz data and zipped workspace folders."""

from __future__ import annotations

import copy
import io
import json
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_workspace import zipped_cli_workspace

from uif_explorer import zoo
from uif_explorer.io import loading
from uif_explorer.io.loading import LoadError
from uif_explorer.services import eval_data, model_source

KERAS_OK = zoo.SAMPLE_MODELS["keras_functional"].weights_path.exists()


def _need(name: str) -> None:
    if not zoo.get_sample(name).weights_path.exists():
        pytest.skip(f"{name}'s weights are not trained yet (sample_models/train.py)")


@pytest.fixture(scope="module")
def resnet20() -> torch.nn.Module:
    _need("resnet20")
    return zoo.load_torch_sample("resnet20")


@pytest.fixture(scope="module")
def pt2_bytes(resnet20: torch.nn.Module) -> bytes:
    ep = torch.export.export(copy.deepcopy(resnet20), (zoo.example_input("resnet20"),))
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return buf.getvalue()


def _torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _rezip(data: bytes, change) -> bytes:
    """A copy of a zip archive with ``change(name, bytes) -> bytes | None`` applied."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            blob = change(info.filename, src.read(info))
            if blob is not None:
                dst.writestr(info.filename, blob)
    return out.getvalue()


# -- sizes and trust ---------------------------------------------------------------------------
def test_upload_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    loading.check_upload_size(b"x" * 1024, limit_mb=1)
    with pytest.raises(LoadError, match="limited to 1 MB.*UIF_MAX_UPLOAD_MB"):
        loading.check_upload_size(b"x" * (1024**2 + 1), limit_mb=1)
    with pytest.raises(LoadError, match="empty"):
        loading.check_upload_size(b"")
    monkeypatch.setenv("UIF_MAX_UPLOAD_MB", "2")
    assert loading.max_upload_mb() == 2
    with pytest.raises(LoadError, match="limited to 2 MB"):
        loading.check_upload_size(b"x" * (2 * 1024**2 + 1))
    monkeypatch.setenv("UIF_MAX_UPLOAD_MB", "nonsense")
    assert loading.max_upload_mb() == loading.DEFAULT_MAX_UPLOAD_MB


def test_pickled_module_needs_the_trust_option(resnet20: torch.nn.Module,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    data = _torch_bytes(resnet20)
    with pytest.raises(LoadError, match="UIF_TRUST_PICKLE=1"):
        loading.load_pickled_module(data, trust=False)
    with pytest.raises(LoadError, match="holds Python objects.*trust option"):
        loading.load_state_dict(data)  # the weights path never unpickles it either
    model = loading.load_pickled_module(data, trust=True)
    x = zoo.example_input("resnet20", random=True)
    assert torch.equal(model(x), resnet20(x))
    with pytest.raises(LoadError, match="not an nn.Module"):
        loading.load_pickled_module(_torch_bytes(resnet20.state_dict()), trust=True)
    monkeypatch.delenv("UIF_TRUST_PICKLE", raising=False)
    assert not loading.trust_pickle_enabled()
    monkeypatch.setenv("UIF_TRUST_PICKLE", "1")
    assert loading.trust_pickle_enabled()


# -- torch.export programs ---------------------------------------------------------------------
def test_exported_program_loads_into_a_module_that_prunes(
    pt2_bytes: bytes, resnet20: torch.nn.Module, tmp_path: Path
) -> None:
    module = loading.load_exported_program(pt2_bytes)
    x = zoo.example_input("resnet20", random=True)
    assert torch.allclose(module(x), resnet20(x), atol=1e-5)
    source, loaded = model_source.from_pt2(tmp_path, pt2_bytes)
    assert source.input_shape == (1, 1, 28, 28) and source.kind == "pt2"
    assert (tmp_path / source.file).read_bytes() == pt2_bytes
    assert source.file == f"uploads/{loading.sha256_of(pt2_bytes)}.pt2"
    groups = model_source.groups_table(source, loaded)
    assert groups["prunable"].sum() >= 10
    # the capture works on the unlifted module: same plan, same sparse outputs as the original
    from uif_explorer.torch.runners import get_pruning_runner

    a = get_pruning_runner(copy.deepcopy(resnet20), x, "iterative", workdir=tmp_path, name="a")
    b = model_source.make_runner(source, loaded, "iterative", tmp_path)
    pa, pb = a.pruner.plan(0.3), b.pruner.plan(0.3)
    assert torch.allclose(a.pruner.sparse_model(pa)(x), b.pruner.sparse_model(pb)(x), atol=1e-5)


def test_exported_programs_that_would_unpickle_are_refused(pt2_bytes: bytes) -> None:
    def pickled_weight(name: str, blob: bytes) -> bytes:
        if name.endswith("weights_config.json"):
            cfg = json.loads(blob)
            first = next(iter(cfg["config"]))
            cfg["config"][first]["use_pickle"] = True
            return json.dumps(cfg).encode()
        return blob

    with pytest.raises(LoadError, match="pickle"):
        loading.load_exported_program(_rezip(pt2_bytes, pickled_weight))

    def evil_inputs(name: str, blob: bytes) -> bytes:
        if "sample_inputs" in name:
            return _torch_bytes({"x": zoo.SampleModel})  # needs a full unpickle
        return blob

    with pytest.raises(LoadError, match="not unpickled"):
        loading.load_exported_program(_rezip(pt2_bytes, evil_inputs))
    root = zipfile.ZipFile(io.BytesIO(pt2_bytes)).namelist()[0].split("/")[0]
    with_so = _rezip(pt2_bytes, lambda n, b: b)
    buf = io.BytesIO(with_so)
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr(f"{root}/data/aotinductor/model/model.so", b"\x7fELF")
    with pytest.raises(LoadError, match="native code"):
        loading.load_exported_program(buf.getvalue())
    with pytest.raises(LoadError, match="Expected a torch.export program"):
        loading.load_exported_program(_torch_bytes({"a": torch.zeros(2)}))


# -- registry architectures + weights ----------------------------------------------------------
def test_weights_for_a_registry_architecture(resnet20: torch.nn.Module, tmp_path: Path) -> None:
    from safetensors.torch import save

    state = resnet20.state_dict()
    for data in (_torch_bytes(state), save({k: v.contiguous() for k, v in state.items()})):
        source, model = model_source.from_weights(tmp_path, data, "resnet20", 10)
        x = zoo.example_input("resnet20", random=True)
        assert torch.equal(model(x), resnet20(x))
        assert source.input_shape == (1, 1, 28, 28) and source.name.startswith("resnet20-")
        again = model_source.load_model(source, tmp_path)  # a reload rebuilds it from uploads/
        assert torch.equal(again(x), resnet20(x))
        assert model_source.ModelSource.from_dict(source.to_dict()) == source


def test_wrong_classes_or_architecture_name_the_keys(resnet20: torch.nn.Module,
                                                     tmp_path: Path) -> None:
    data = _torch_bytes(resnet20.state_dict())
    with pytest.raises(LoadError, match=r"fc.weight: file \(10, 64\) vs model \(12, 64\)"):
        model_source.from_weights(tmp_path, data, "resnet20", 12)
    with pytest.raises(LoadError, match="keys missing from the file"):
        model_source.from_weights(tmp_path, data, "vgg_small", 10)
    assert not (tmp_path / "uploads").exists()  # nothing stored for a refused upload


def test_stored_sources_never_name_other_paths() -> None:
    good = model_source.sample_source("resnet20").to_dict()
    for bad in ("../../etc/passwd", "/etc/passwd", "uploads/../x.pt", "uploads/abc.pt"):
        with pytest.raises(LoadError):
            model_source.ModelSource.from_dict({**good, "kind": "weights", "file": bad})


# -- evaluation data ---------------------------------------------------------------------------
def test_npz_without_labels_gives_the_label_free_score(resnet20: torch.nn.Module,
                                                       tmp_path: Path) -> None:
    source = model_source.sample_source("resnet20")
    x = np.random.default_rng(0).standard_normal((40, 1, 28, 28)).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, x=x)
    ds = eval_data.store_npz(tmp_path, buf.getvalue(), source)
    assert not ds.labelled and ds.count == 40 and ds.for_model == source.key
    ev = eval_data.make_evaluator(source, resnet20, ds, 32, tmp_path)
    assert ev.label_free and "label-free" in ev.describe() and ev.images == 32
    assert ev.score(copy.deepcopy(resnet20)) == pytest.approx(100.0)
    labelled = io.BytesIO()
    np.savez(labelled, x=x, y=np.zeros(40, dtype=np.int64))
    ev = eval_data.make_evaluator(source, resnet20,
                                  eval_data.store_npz(tmp_path, labelled.getvalue(), source),
                                  40, tmp_path)
    assert not ev.label_free and ev.describe().startswith("top-1 accuracy")
    with pytest.raises(LoadError, match="Expected samples of shape"):
        eval_data.store_npz(tmp_path, buf.getvalue(), model_source.ModelSource(
            kind="pt2", name="x", title="x", input_shape=(1, 3, 32, 32)))


def test_models_the_bundled_data_cannot_score_ask_for_data(tmp_path: Path) -> None:
    source = model_source.ModelSource(kind="weights", name="tv", title="tv",
                                      input_shape=(1, 3, 224, 224), num_classes=1000)
    with pytest.raises(LoadError, match="Upload an .npz"):
        eval_data.make_evaluator(source, None, None, 10, tmp_path)


# -- zipped workspace folders ------------------------------------------------------------------
def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return buf.getvalue()


def test_workspace_members_are_checked() -> None:
    ws = b'{"format_version": 1, "kind": "uif-explorer-workspace", "model_id": "resnet20"}'
    assert set(loading.workspace_members(_zip({".vai/workspace.json": ws,
                                               ".vai/a.sens": b"{}"}))) == {"workspace.json",
                                                                           "a.sens"}
    for bad, why in (({"workspace.json": ws, "../x.sens": b"{}"}, "outside"),
                     ({"workspace.json": ws, "/tmp/x.sens": b"{}"}, "outside"),
                     ({"workspace.json": ws, "run.py": b"import os"}, "not a workspace file"),
                     ({"a.sens": b"{}"}, "no workspace.json")):
        with pytest.raises(LoadError, match=why):
            loading.workspace_members(_zip(bad))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("workspace.json", ws)
        link = zipfile.ZipInfo("a.sens")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(LoadError, match="symbolic link"):
        loading.workspace_members(buf.getvalue())


def test_a_cli_workspace_opens_with_its_analysis(resnet20: torch.nn.Module,
                                                 tmp_path: Path) -> None:
    name, data = zipped_cli_workspace(resnet20, tmp_path / "elsewhere" / ".vai", images=32)
    session = tmp_path / "session"
    source, notes = model_source.import_workspace(session, data)
    assert source.kind == "sample" and source.arch == "resnet20"
    assert source.name == name and (session / f"{name}.sens").exists()
    again = model_source.make_runner(source, resnet20, "iterative", session)
    assert again.sensitivity(quiet=True)["complete"]
    assert any("Extracted" in n for n in notes)
    assert not any(os.sep in p.name for p in session.iterdir())


# -- Keras ------------------------------------------------------------------------------------
def _keras_bytes(model, tmp_path: Path, name: str) -> bytes:
    path = tmp_path / f"{name}.keras"
    model.save(path)
    return path.read_bytes()


@pytest.mark.tf
@pytest.mark.skipif(not KERAS_OK, reason="the Keras sample models are not trained yet")
def test_keras_sample_file_loads_in_safe_mode(tmp_path: Path) -> None:
    data = zoo.SAMPLE_MODELS["keras_functional"].weights_path.read_bytes()
    loading.check_keras_config(data)
    source, model = model_source.from_keras(tmp_path, data)
    assert source.framework == "keras" and source.input_shape == (1, 28, 28, 1)
    assert (tmp_path / source.file).exists()
    summary = model_source.summarize(source, model)
    assert summary.macs > 0 and summary.params == model_source.summarize(source, model).params
    assert model_source.groups_table(source, model)["prunable"].any()


@pytest.mark.tf
def test_keras_lambda_custom_and_subclassed_models_are_refused(tmp_path: Path) -> None:
    import keras

    inputs = keras.Input((8,))
    lam = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(keras.layers.Dense(4)(inputs)))
    with pytest.raises(LoadError, match="Lambda layer"):
        loading.check_keras_config(_keras_bytes(lam, tmp_path, "lam"))

    @keras.saving.register_keras_serializable(package="Tests")
    class Sub(keras.Model):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.d = keras.layers.Dense(3)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 8), "float32"))
    with pytest.raises(LoadError, match="subclassed keras.Model|custom object"):
        loading.load_keras_model(_keras_bytes(sub, tmp_path, "sub"), tmp_path)
    with pytest.raises(LoadError, match="Expected a Keras model file"):
        loading.check_keras_config(_torch_bytes({"a": torch.zeros(1)}))

"""Uploads on the Model page through Streamlit's AppTest: each kind of model file (success and
refusals), evaluation data, a zipped workspace from the CLI, and Keras models on every page.

Files are made in ``tmp_path`` from the sample models (``torch.save``, safetensors,
``torch.export.save``, ``model.save``); the app's workspaces live in ``tmp_path`` too.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
import torch
from cli_workspace import zipped_cli_workspace
from streamlit.testing.v1 import AppTest

from uif_explorer import zoo
from uif_explorer.io import loading
from uif_explorer.services.summary import format_params
from uif_explorer.torch.macs import model_cost
from uif_explorer.ui import workspace

APP = "../../app.py"
TIMEOUT = 240
OCTET = "application/octet-stream"


def _need(name: str) -> None:
    if not zoo.get_sample(name).weights_path.exists():
        pytest.skip(f"{name}'s weights are not trained yet (sample_models/train.py --only {name})")


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private workspace root; no trust option unless a test sets it."""
    ws = tmp_path / "workspaces"
    monkeypatch.setenv("UIF_WORKSPACES", str(ws))
    monkeypatch.delenv("UIF_TRUST_PICKLE", raising=False)
    monkeypatch.delenv("UIF_MAX_UPLOAD_MB", raising=False)
    st.cache_resource.clear()
    st.cache_data.clear()
    return ws


def _app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=TIMEOUT).run()


def _token(at: AppTest) -> str:
    token = at.query_params["ws"]
    return token[0] if isinstance(token, list) else token


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, _errors(at)


def _upload(at: AppTest, key: str, name: str, data: bytes, button: str) -> AppTest:
    at.file_uploader(key=key).set_value((name, data, OCTET))
    at.run()
    return at.button(key=button).click().run()


def _torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


# -- PyTorch weights ---------------------------------------------------------------------------
def test_a_state_dict_for_a_registry_architecture_becomes_the_model(root: Path) -> None:
    _need("resnet20")
    model = zoo.load_torch_sample("resnet20")
    data = _torch_bytes(model.state_dict())
    at = _app()
    at.selectbox(key="up_arch").set_value("resnet20")
    at = _upload(at, "up_weights", "resnet20_finetuned.pth", data, "up_weights_go")
    _no_errors(at)
    assert at.header[0].value == "ResNet-20 (10 classes, uploaded weights)"
    assert at.session_state["model_name"].startswith("resnet20-")
    assert _metrics(at)["Parameters"] == format_params(model_cost(model,
                                                                  zoo.example_input(
                                                                      "resnet20")).params)
    assert any("now the current model" in s.value for s in at.success)
    stored = root / _token(at) / "uploads" / f"{loading.sha256_of(data)}.pth"
    assert stored.read_bytes() == data
    groups = [df.value for df in at.dataframe if "layers" in df.value.columns]
    assert groups and groups[0]["prunable"].any()
    assert at.sidebar.selectbox(key="model_picker").value is None  # a placeholder, not a sample
    # every page works on it, keyed by its own name
    at.switch_page("pages/sensitivity.py").run()
    _no_errors(at)
    assert any(at.session_state["model_name"] in c.value for c in at.caption)
    at.switch_page("pages/one_step.py").run()
    _no_errors(at)
    at.switch_page("pages/export.py").run()
    _no_errors(at)


def test_wrong_classes_are_refused_with_the_keys_that_differ(root: Path) -> None:
    _need("resnet20")
    from safetensors.torch import save

    state = {k: v.contiguous() for k, v in zoo.load_torch_sample("resnet20").state_dict().items()}
    at = _app()
    at.selectbox(key="up_arch").set_value("resnet20")
    at.number_input(key="up_classes").set_value(12)
    at = _upload(at, "up_weights", "w.safetensors", save(state), "up_weights_go")
    assert not at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    assert "fc.weight: file (10, 64) vs model (12, 64)" in message
    assert "number of classes" in message
    assert at.header[0].value == "ResNet-20"  # the current model is unchanged


def test_a_wrong_architecture_is_refused(root: Path) -> None:
    _need("resnet20")
    at = _app()
    at.selectbox(key="up_arch").set_value("vgg_small")
    at = _upload(at, "up_weights", "w.pth", _torch_bytes(
        zoo.load_torch_sample("resnet20").state_dict()), "up_weights_go")
    assert not at.exception
    assert "keys missing from the file" in at.error[0].value
    assert at.header[0].value == "ResNet-20"


def test_a_torchvision_model_asks_for_its_own_data(root: Path) -> None:
    """A 224x224 RGB model cannot be scored on the bundled 28x28 data: the pages say to upload
    an .npz; once uploaded (with labels), the analysis can start."""
    from uif_explorer import zoo as z

    model = z.build_torchvision("resnet18", num_classes=5)
    at = _app()
    at.selectbox(key="up_arch").set_value("torchvision:resnet18")
    at.number_input(key="up_classes").set_value(5)
    at = _upload(at, "up_weights", "r18.pth", _torch_bytes(model.state_dict()), "up_weights_go")
    _no_errors(at)
    assert at.header[0].value == "torchvision:resnet18 (5 classes, uploaded weights)"
    assert _metrics(at)["Input"] == "1x3x224x224"
    assert any("cannot score it" in w.value for w in at.warning)
    at.switch_page("pages/sensitivity.py").run()
    _no_errors(at)
    assert any("Upload an .npz" in w.value for w in at.warning)
    assert at.button(key="sens_run").disabled
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, x=rng.standard_normal((8, 3, 224, 224)).astype(np.float32),
             y=rng.integers(0, 5, 8))
    at.switch_page("pages/model.py").run()
    at = _upload(at, "up_npz", "val.npz", buf.getvalue(), "up_npz_go")
    _no_errors(at)
    assert any("with labels" in s.value for s in at.success)
    at.switch_page("pages/sensitivity.py").run()
    _no_errors(at)
    assert not at.button(key="sens_run").disabled


# -- pickles -----------------------------------------------------------------------------------
def test_a_pickled_model_is_refused_without_the_trust_option(root: Path) -> None:
    _need("resnet20")
    data = _torch_bytes(zoo.load_torch_sample("resnet20"))
    at = _app()
    infos = " ".join(i.value for i in at.info)
    assert "UIF_TRUST_PICKLE=1" in infos and "runs the code" in infos
    assert at.file_uploader(key="up_pickle").disabled
    at = _upload(at, "up_weights", "model.pt", data, "up_weights_go")
    assert not at.exception
    assert "not unpickled here" in at.error[0].value and "trust option" in at.error[0].value
    assert at.header[0].value == "ResNet-20"
    assert not (root / _token(at) / "uploads").exists()


def test_a_pickled_model_loads_with_the_trust_option(root: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _need("resnet20")
    monkeypatch.setenv("UIF_TRUST_PICKLE", "1")
    at = _app()
    at.text_input(key="up_pickle_shape").set_value("1x1x28x28")
    at = _upload(at, "up_pickle", "model.pt", _torch_bytes(zoo.load_torch_sample("resnet20")),
                 "up_pickle_go")
    _no_errors(at)
    assert at.header[0].value == "ResNet (pickled module)"
    assert _metrics(at)["Input"] == "1x1x28x28"


# -- torch.export ------------------------------------------------------------------------------
def test_an_exported_program_is_loaded_and_can_be_pruned(root: Path) -> None:
    _need("resnet20")
    model = zoo.load_torch_sample("resnet20")
    buf = io.BytesIO()
    torch.export.save(torch.export.export(model, (zoo.example_input("resnet20"),)), buf)
    at = _upload(_app(), "up_pt2", "net.pt2", buf.getvalue(), "up_pt2_go")
    _no_errors(at)
    assert at.header[0].value.startswith("Exported program")
    assert _metrics(at)["Input"] == "1x1x28x28"
    assert [df.value for df in at.dataframe if "layers" in df.value.columns]
    at.button(key="model_score").click().run()  # 28x28 input: the bundled data scores it
    _no_errors(at)
    assert _metrics(at)["Score"].endswith(" %")


# -- evaluation data ---------------------------------------------------------------------------
def test_data_without_labels_uses_the_label_free_score(root: Path) -> None:
    _need("resnet20")
    model = zoo.load_torch_sample("resnet20")
    at = _upload(_app(), "up_weights", "w.pth", _torch_bytes(model.state_dict()),
                 "up_weights_go")
    x = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, x=x)
    at = _upload(at, "up_npz", "val.npz", buf.getvalue(), "up_npz_go")
    _no_errors(at)
    assert any("label-free score is used" in s.value for s in at.success)
    at.button(key="model_score").click().run()
    _no_errors(at)
    assert _metrics(at)["Score"] == "100.00 %"  # the model agrees with itself
    assert any("label-free agreement with the original model" in c.value for c in at.caption)


# -- a workspace made by the CLI ---------------------------------------------------------------
def test_a_zipped_cli_workspace_opens_with_its_curves(root: Path, tmp_path: Path) -> None:
    _need("resnet20")
    name, data = zipped_cli_workspace(zoo.load_torch_sample("resnet20"),
                                      tmp_path / "gpu-box" / ".vai", images=64)
    at = _upload(_app(), "up_ws", "workspace.zip", data, "up_ws_go")
    _no_errors(at)
    assert at.session_state["model_name"] == name
    assert (root / _token(at) / f"{name}.sens").exists()
    at.switch_page("pages/sensitivity.py").run()
    _no_errors(at)
    assert list(at.get("plotly_chart")), "the imported analysis's curves are drawn"
    assert at.slider(key="sens_macs_pct").value == 30
    assert any("outside the app" in c.value for c in at.caption)

    bad = io.BytesIO()
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("workspace.json", "{}")
        zf.writestr("../../escape.sens", "{}")
    at.switch_page("pages/model.py").run()
    at = _upload(at, "up_ws", "evil.zip", bad.getvalue(), "up_ws_go")
    assert not at.exception
    assert "outside its folder" in at.error[0].value
    assert not (root.parent / "escape.sens").exists()


# -- Keras -------------------------------------------------------------------------------------
@pytest.mark.tf
def test_a_keras_file_with_a_lambda_layer_is_refused(root: Path, tmp_path: Path) -> None:
    import keras

    inputs = keras.Input((28, 28, 1))
    out = keras.layers.Lambda(lambda t: t * 2)(keras.layers.Conv2D(4, 3)(inputs))
    path = tmp_path / "lam.keras"
    keras.Model(inputs, out).save(path)
    at = _upload(_app(), "up_keras", "lam.keras", path.read_bytes(), "up_keras_go")
    assert not at.exception
    assert "Lambda layer" in at.error[0].value
    assert at.header[0].value == "ResNet-20"


@pytest.mark.tf
@pytest.mark.slow
def test_an_uploaded_keras_model_works_on_every_page(root: Path, tmp_path: Path) -> None:
    _need("keras_convnet")
    data = zoo.SAMPLE_MODELS["keras_convnet"].weights_path.read_bytes()
    at = _upload(_app(), "up_keras", "convnet.keras", data, "up_keras_go")
    _no_errors(at)
    assert "uploaded .keras" in at.header[0].value
    assert _metrics(at)["Input"] == "1x28x28x1"
    assert [df.value for df in at.dataframe if "layers" in df.value.columns]
    _keras_pages(at, root, tmp_path)


@pytest.mark.tf
@pytest.mark.slow
def test_the_keras_sample_prunes_and_exports_a_safe_keras_file(root: Path,
                                                               tmp_path: Path) -> None:
    _need("keras_convnet")
    at = _app()
    at.sidebar.selectbox(key="model_picker").select("keras_convnet").run()
    _no_errors(at)
    assert at.header[0].value == "Keras MNIST convnet"
    _keras_pages(at, root, tmp_path)


def _keras_pages(at: AppTest, root: Path, tmp_path: Path) -> None:
    """Sensitivity (analysis, preview, prune), One-step (search, build), Export (.keras)."""
    import keras

    from uif_explorer.ui.jobs import registry

    token, name = _token(at), at.session_state["model_name"]
    at.switch_page("pages/sensitivity.py").run()
    _no_errors(at)
    at.button(key="sens_run").click().run()
    assert registry().wait(token, f"sensitivity:{name}", timeout=600).status == "done"
    at.run()
    _no_errors(at)
    assert (root / token / f"{name}.sens").exists() and list(at.get("plotly_chart"))
    at.slider(key="sens_macs_pct").set_value(40).run()
    at.button(key="sens_prune").click().run()
    _no_errors(at)
    assert any(label.startswith("Pruned accuracy") for label in _metrics(at))
    assert (root / token / f"{name}_ratio_0.4.spec").exists()
    # a short fine-tune of the Keras sparse model, in the background like PyTorch's
    at.number_input(key="ft_batches").set_value(2).run()
    at.button(key="ft_run").click().run()
    _no_errors(at)
    job = registry().wait(token, f"finetune:{name}", timeout=600)
    assert job is not None and job.status == "done", job and job.error
    at.run()
    _no_errors(at)
    assert "fine-tuned 1 epoch(s)" in at.session_state[workspace.PRUNED_KEY].source
    assert any("Accuracy after fine-tuning" in s.value for s in at.success)

    at.switch_page("pages/export.py").run()
    _no_errors(at)
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Slim Keras model (.keras)" in labels and "Spec (.json)" in labels
    from uif_explorer.services.backends import backend_for

    blob = backend_for("keras").export_bytes(at.session_state[workspace.PRUNED_KEY].slim,
                                             None, "keras", tmp_path)
    (tmp_path / "slim.keras").write_bytes(blob)
    slim = keras.saving.load_model(tmp_path / "slim.keras", safe_mode=True)
    assert slim.count_params() < zoo.load_keras_sample("keras_convnet").count_params()

    at.switch_page("pages/one_step.py").run()
    at.number_input(key="os_num").set_value(2)
    at.selectbox(key="os_images").set_value(64)
    at.run()
    at.button(key="os_run").click().run()
    assert registry().wait(token, f"search:{name}:0.3", timeout=600).status == "done"
    at.run()
    _no_errors(at)
    at.button(key="os_build").click().run()
    _no_errors(at)
    assert at.session_state[workspace.PRUNED_KEY].kind == "slim"


# -- imports -----------------------------------------------------------------------------------
def test_the_default_pages_never_load_tensorflow(tmp_path: Path) -> None:
    """Model, Sensitivity, One-step and Export on the sample ResNet-20 keep TensorFlow out."""
    _need("resnet20")
    code = (
        "import sys, os\n"
        f"os.environ['UIF_WORKSPACES'] = {str(tmp_path)!r}\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({str(Path(__file__).resolve().parents[2] / 'app.py')!r},"
        f" default_timeout={TIMEOUT}).run()\n"
        "for page in ('pages/sensitivity.py', 'pages/one_step.py', 'pages/export.py'):\n"
        "    at.switch_page(page).run()\n"
        "    assert not at.exception, at.exception\n"
        "    assert not at.error, [e.value for e in at.error]\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"

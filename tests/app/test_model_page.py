"""The Model page through Streamlit's AppTest: renders, shows the right numbers, switches models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from uif_explorer import zoo
from uif_explorer.services.summary import format_macs, format_params
from uif_explorer.torch.macs import model_cost

APP = "../../app.py"  # AppTest.from_file resolves it relative to this file
TIMEOUT = 120


def _need_weights(name: str) -> None:
    if not zoo.get_sample(name).weights_path.exists():
        pytest.skip(f"{name}'s weights are not trained yet (sample_models/train.py --only {name})")


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _check_numbers(at: AppTest, name: str) -> None:
    """The metric cards and the layer table agree with ``model_cost`` of the trained model."""
    model = zoo.load_torch_sample(name)
    x = zoo.example_input(name)
    cost = model_cost(model, x)
    shape = "x".join(str(d) for d in x.shape)

    assert at.header[0].value == zoo.SAMPLE_MODELS[name].title
    metrics = _metrics(at)
    assert metrics["Parameters"] == format_params(cost.params)
    assert metrics[f"MACs at input {shape}"] == format_macs(cost.macs)
    assert metrics["Input"] == shape == "1x1x28x28"
    acc = zoo.recorded_metrics().get(name, {}).get("acc_bundled_test")
    if acc is not None:
        assert metrics["Top-1 accuracy"] == f"{acc:.2f} %"

    table = at.dataframe[0].value
    assert list(table["name"]) == list(cost.table["name"])
    assert table["params"].sum() == cost.params
    assert table["macs"].sum() == cost.macs


@pytest.fixture
def app() -> AppTest:
    st.cache_resource.clear()
    st.cache_data.clear()
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def test_default_page_shows_resnet20(app: AppTest) -> None:
    _need_weights("resnet20")
    at = app.run()
    assert not at.exception
    assert not at.error
    assert at.session_state["model_name"] == "resnet20"
    assert at.sidebar.selectbox(key="model_picker").value == "resnet20"
    _check_numbers(at, "resnet20")
    captions = " ".join(c.value for c in at.caption)
    assert "MACs at input 1x1x28x28" in captions
    assert "top-1 on the bundled Fashion-MNIST test subset, 2,000 images" in captions


def test_switching_the_sample_model_updates_the_numbers(app: AppTest) -> None:
    _need_weights("resnet20")
    _need_weights("mobilenetv2_small")
    at = app.run()
    before = _metrics(at)
    at.sidebar.selectbox(key="model_picker").select("mobilenetv2_small").run()
    assert not at.exception
    assert not at.error
    assert at.session_state["model_name"] == "mobilenetv2_small"
    assert _metrics(at) != before
    _check_numbers(at, "mobilenetv2_small")
    at.run()  # the choice survives the next rerun
    assert at.header[0].value == zoo.SAMPLE_MODELS["mobilenetv2_small"].title


def test_the_page_follows_the_model_chosen_in_the_session(app: AppTest) -> None:
    _need_weights("vgg_small")
    app.session_state["model_name"] = "vgg_small"  # as another page would set it
    at = app.run()
    assert not at.exception
    assert at.sidebar.selectbox(key="model_picker").value == "vgg_small"
    _check_numbers(at, "vgg_small")


def test_every_sample_is_offered(app: AppTest) -> None:
    at = app.run()
    assert at.sidebar.selectbox(key="model_picker").options == [
        zoo.SAMPLE_MODELS[n].title for n in zoo.SAMPLE_MODELS
    ]
    assert {"Keras MNIST convnet", "Keras functional net"} <= set(
        at.sidebar.selectbox(key="model_picker").options)


def test_the_channel_groups_are_listed(app: AppTest) -> None:
    """One row per group: its tied layers (a residual stage's convs), channels, why fixed."""
    _need_weights("resnet20")
    at = app.run()
    groups = next(df.value for df in at.dataframe if "layers" in df.value.columns)
    assert list(groups.columns) == ["group", "name", "channels", "prunable", "layers", "reason"]
    stage = groups[groups["layers"].str.contains("layer1.0.conv2")].iloc[0]
    assert "layer1.1.conv2" in stage["layers"] and "conv1" in stage["layers"].split(", ")
    fixed = groups[~groups["prunable"]]
    assert len(fixed) >= 1 and (fixed["reason"] != "").all()


@pytest.mark.tf
def test_a_keras_sample_shows_its_numbers(app: AppTest) -> None:
    _need_weights("keras_functional")
    from uif_explorer.keras.macs import count_macs, count_params

    at = app.run()
    at.sidebar.selectbox(key="model_picker").select("keras_functional").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    model = zoo.load_keras_sample("keras_functional")
    metrics = _metrics(at)
    assert at.header[0].value == "Keras functional net"
    assert metrics["Input"] == "1x28x28x1"
    assert metrics["MACs at input 1x28x28x1"] == format_macs(count_macs(model, (1, 28, 28, 1)))
    assert metrics["Parameters"] == format_params(count_params(model))
    groups = next(df.value for df in at.dataframe if "layers" in df.value.columns)
    assert groups["prunable"].any()


def test_an_unknown_model_in_the_session_falls_back_to_the_default(app: AppTest) -> None:
    _need_weights("resnet20")
    app.session_state["model_name"] = "no_such_model"
    at = app.run()
    assert not at.exception
    assert at.session_state["model_name"] == "resnet20"
    assert at.header[0].value == "ResNet-20"


def test_missing_weights_are_explained_not_raised(
    app: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(name: str):
        raise FileNotFoundError(f"No trained weights for {name}")

    monkeypatch.setattr(zoo, "load_torch_sample", missing)
    at = app.run()
    assert not at.exception
    assert len(at.error) == 1
    assert "python sample_models/train.py --only resnet20" in at.error[0].value
    assert not at.metric


def test_an_unexpected_error_is_shown_as_a_message(
    app: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    _need_weights("resnet20")  # a missing file is reported as such, whatever load raised

    def broken(name: str):
        raise RuntimeError("Error(s) in loading state_dict for ResNet: size mismatch")

    monkeypatch.setattr(zoo, "load_torch_sample", broken)
    at = app.run()
    assert not at.exception
    assert "does not fit its architecture" in at.error[0].value
    assert "--only resnet20" in at.error[0].value


def test_the_model_page_does_not_load_tensorflow() -> None:
    """Startup stays light: the Model page path never imports TensorFlow (3-4 s, a crash risk)."""
    code = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({str(Path(__file__).resolve().parents[2] / 'app.py')!r},"
        f" default_timeout={TIMEOUT}).run()\n"
        "assert not at.exception, at.exception\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"

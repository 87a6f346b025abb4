"""The sample-model registry: architectures, trained weights and their recorded metrics.

Importing this module never imports TensorFlow / Keras (``load_keras_sample`` does, lazily)
nor torchvision (``torchvision_architectures`` / ``build_torchvision`` do, lazily). Weights
are read with ``safetensors`` (PyTorch) and ``keras.saving.load_model(safe_mode=True)``
(Keras): never with pickle.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO_ROOT / "sample_models"
METRICS_PATH = SAMPLE_DIR / "metrics.json"

Framework = Literal["torch", "keras"]


@dataclass(frozen=True)
class SampleModel:
    """One sample model: how to build it, where its trained weights live, what it shows."""

    name: str
    title: str
    framework: Framework
    builder: str | Callable[..., Any]  # dotted path "package.module:function" or a callable
    weights_file: str  # relative to sample_models/
    input_shape: tuple[int, ...]
    description: str

    @property
    def weights_path(self) -> Path:
        return SAMPLE_DIR / self.weights_file

    def build(self) -> Any:
        """A fresh, randomly initialised model (imports Keras for Keras entries)."""
        return resolve_builder(self.builder)()


def resolve_builder(builder: str | Callable[..., Any]) -> Callable[..., Any]:
    """Turn ``"pkg.module:func"`` (or ``"pkg.module.func"``) into the function."""
    if callable(builder):
        return builder
    module_name, sep, attr = builder.partition(":")
    if not sep:
        module_name, _, attr = builder.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


_T = "uif_explorer.models.torch_models:"
_K = "uif_explorer.models.keras_models:"
TORCH_INPUT = (1, 1, 28, 28)
KERAS_INPUT = (1, 28, 28, 1)

SAMPLE_MODELS: dict[str, SampleModel] = {
    m.name: m
    for m in (
        SampleModel(
            "resnet20", "ResNet-20", "torch", _T + "resnet20", "resnet20.safetensors",
            TORCH_INPUT,
            "CIFAR-style ResNet-20 (16/32/64 channels, 3 BasicBlocks per stage); residual adds "
            "couple the channels of every block in a stage; 1x1 conv shortcuts downsample.",
        ),
        SampleModel(
            "mobilenetv2_small", "MobileNetV2 (small)", "torch", _T + "mobilenetv2_small",
            "mobilenetv2_small.safetensors", TORCH_INPUT,
            "Narrow MobileNetV2: inverted residuals (1x1 expand, 3x3 depthwise, 1x1 project) "
            "with residual adds; depthwise convs tie their channels to the expand conv.",
        ),
        SampleModel(
            "vgg_small", "VGG (small)", "torch", _T + "vgg_small", "vgg_small.safetensors",
            TORCH_INPUT,
            "Plain conv + BN + ReLU + max-pool stack; a 64x3x3 map is flattened into "
            "Linear -> ReLU -> Linear, so each conv channel owns 9 input features of the FC.",
        ),
        SampleModel(
            "densenet_mini", "DenseNet (mini)", "torch", _T + "densenet_mini",
            "densenet_mini.safetensors", TORCH_INPUT,
            "Three dense blocks (torch.cat of every layer's maps, growth 12/16/16) joined by "
            "1x1 conv + average-pool transitions.",
        ),
        SampleModel(
            "se_resnet_mini", "SE-ResNet (mini)", "torch", _T + "se_resnet_mini",
            "se_resnet_mini.safetensors", TORCH_INPUT,
            "Residual blocks (16/32/64 channels, 2 per stage) with squeeze-and-excitation "
            "gating x * sigmoid(fc(pool(x))), the FCs as 1x1 convs.",
        ),
        SampleModel(
            "keras_convnet", "Keras MNIST convnet", "keras", _K + "mnist_convnet",
            "keras_convnet.keras", KERAS_INPUT,
            "The Sequential convnet of the Keras MNIST example: two Conv2D + MaxPool, "
            "Flatten, Dropout, Dense softmax.",
        ),
        SampleModel(
            "keras_functional", "Keras functional net", "keras", _K + "functional_net",
            "keras_functional.keras", KERAS_INPUT,
            "Functional model with a residual Add, DepthwiseConv2D, Concatenate of two "
            "branches, BatchNormalization, GlobalAveragePooling2D and Dense.",
        ),
    )
}

TORCH_SAMPLES = tuple(n for n, m in SAMPLE_MODELS.items() if m.framework == "torch")
KERAS_SAMPLES = tuple(n for n, m in SAMPLE_MODELS.items() if m.framework == "keras")


def get_sample(name: str) -> SampleModel:
    """The registry entry, with a clear message for an unknown name."""
    try:
        return SAMPLE_MODELS[name]
    except KeyError:
        raise KeyError(
            f"Unknown sample model {name!r}. Expected one of: {', '.join(SAMPLE_MODELS)}"
        ) from None


def _expect(name: str, framework: Framework) -> SampleModel:
    sample = get_sample(name)
    if sample.framework != framework:
        raise ValueError(
            f"Sample model {name!r} is a {sample.framework} model, not a {framework} one."
        )
    return sample


def build_torch(name: str) -> nn.Module:
    """A randomly initialised PyTorch sample architecture."""
    return _expect(name, "torch").build()


def load_torch_sample(name: str) -> nn.Module:
    """The trained PyTorch sample model, in eval mode (weights from safetensors, no pickle)."""
    from safetensors.torch import load_file

    sample = _expect(name, "torch")
    path = sample.weights_path
    if not path.exists():
        raise FileNotFoundError(
            f"No trained weights at {path}; train them with "
            f"`.venv/bin/python sample_models/train.py --only {name}`."
        )
    model = sample.build()
    model.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    return model.eval()


def load_keras_sample(name: str) -> Any:
    """The trained Keras sample model, loaded with ``safe_mode=True`` (imports Keras)."""
    sample = _expect(name, "keras")
    path = sample.weights_path
    if not path.exists():
        raise FileNotFoundError(
            f"No trained model at {path}; train it with "
            f"`.venv/bin/python sample_models/train.py --only {name}`."
        )
    import keras

    return keras.saving.load_model(str(path), safe_mode=True)


def example_input(name: str, random: bool = False, seed: int = 0) -> Any:
    """An input of the sample's shape: a torch tensor (torch) or a float32 array (Keras)."""
    sample = get_sample(name)
    if sample.framework == "torch":
        import torch

        if random:
            return torch.randn(sample.input_shape, generator=torch.Generator().manual_seed(seed))
        return torch.zeros(sample.input_shape)
    import numpy as np

    if random:
        return np.random.default_rng(seed).standard_normal(sample.input_shape).astype("float32")
    return np.zeros(sample.input_shape, dtype="float32")


def recorded_metrics() -> dict[str, dict[str, Any]]:
    """``sample_models/metrics.json``: accuracy (percent), params, MACs... per sample model."""
    if not METRICS_PATH.exists():
        return {}
    with METRICS_PATH.open() as fh:
        return json.load(fh)


def torchvision_architectures() -> list[str]:
    """Names of torchvision's classification architectures (no weights are fetched)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_torchvision(name: str, num_classes: int = 1000) -> nn.Module:
    """A randomly initialised torchvision classification model (``weights=None``)."""
    import torchvision

    available = torchvision_architectures()
    if name not in available:
        raise KeyError(f"Unknown torchvision architecture {name!r}. Expected one of: {available}")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


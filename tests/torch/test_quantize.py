"""The PyTorch int8 handoff (issue 16, item 3): sample models -> int8 QDQ ONNX that loads in
ONNX Runtime and follows the fp32 model on the bundled Fashion-MNIST images.

Tolerance (the defaults, stated in docs/quantization.md): int8 and fp32 pick the same class on
>= 95 % of 200 bundled test images and int8 loses <= 1.5 accuracy points on them.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch

from uif_explorer import adaptive_bn_calibration, get_pruning_runner, top1_accuracy
from uif_explorer.core.quantization import QuantizationError, Tolerance
from uif_explorer.data import torch_loader
from uif_explorer.torch.export import export_torch
from uif_explorer.torch.quantize import (
    onnx_outputs,
    onnx_session,
    quantize_onnx,
    quantize_onnx_file,
)
from uif_explorer.zoo import load_torch_sample

X = torch.zeros(1, 1, 28, 28)
pytestmark = pytest.mark.slow


def _calib():
    return torch_loader("train", limit=200, batch_size=50, shuffle=False)


def _test_images():
    return torch_loader("test", limit=200, batch_size=50)


def _assert_int8_qdq(path: os.PathLike) -> None:
    """The file is QDQ with int8 per-channel weights and loads in ONNX Runtime."""
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    int8_weights = [t for t in graph.initializer
                    if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert int8_weights, "no int8 conv weights in the file"
    per_channel = [n for n in graph.node if n.op_type == "DequantizeLinear"
                   and any(a.name == "axis" for a in n.attribute)]
    assert per_channel, "weights are not quantized per channel"
    assert onnx_session(path).get_inputs()[0].shape == [1, 1, 28, 28]


@pytest.fixture(scope="module")
def resnet20_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("fp32") / "resnet20.onnx"
    export_torch(load_torch_sample("resnet20"), X, "onnx", path)
    return path


def test_resnet20_int8_follows_fp32(resnet20_onnx, tmp_path):
    out = tmp_path / "resnet20.int8.onnx"
    report = quantize_onnx_file(resnet20_onnx, _calib(), out, check_data=_test_images())
    _assert_int8_qdq(out)
    a = report.agreement
    assert report.passed and a.images == 200
    assert a.top1_agreement >= 0.95 and a.accuracy_drop <= 1.5
    assert a.fp32_accuracy > 85  # the trained sample, not a broken export
    assert report.int8_bytes == out.stat().st_size and report.size_ratio > 2.5
    # The report's numbers are what the written file computes.
    images = np.concatenate([x.numpy() for x, _ in _test_images()])
    labels = np.concatenate([y.numpy() for _, y in _test_images()])
    int8_acc = 100 * np.mean(onnx_outputs(out, images).argmax(1) == labels)
    assert int8_acc == pytest.approx(a.int8_accuracy)
    assert report.settings["format"] == "QDQ" and report.settings["per_channel"] is True
    assert report.settings["calibration_images"] == 200


def test_mobilenetv2_end_to_end_keeps_model_and_fp32_file(tmp_path):
    model = load_torch_sample("mobilenetv2_small").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = quantize_onnx(model, X, _calib(), tmp_path / "m.int8.onnx",
                           fp32_path=tmp_path / "m.onnx", check_data=_test_images())
    _assert_int8_qdq(tmp_path / "m.int8.onnx")
    assert report.agreement.top1_agreement >= 0.95 and report.agreement.accuracy_drop <= 1.5
    assert report.fp32_bytes == (tmp_path / "m.onnx").stat().st_size
    assert model.training  # the user's model is not switched to eval behind their back
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.int8.onnx", "m.onnx"]


def test_slim_model_from_the_public_api_quantizes(tmp_path):
    """A one-step-pruned slim ResNet-20 (50 % MACs, channel_divisible=8) hands off too."""
    model = load_torch_sample("resnet20")
    val = torch_loader("train", limit=200, batch_size=100, shuffle=False)
    runner = get_pruning_runner(model, X, "one_step", workdir=tmp_path / ".vai")
    runner.search(calibration_fn=adaptive_bn_calibration, calib_args=(val,),
                  eval_fn=top1_accuracy, eval_args=(val,), num_subnet=2, removal_ratio=0.5,
                  channel_divisible=8)
    slim = runner.prune(removal_ratio=0.5)
    adaptive_bn_calibration(slim, val)
    widths = [m.out_channels for m in slim.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(widths) < sum(m.out_channels for m in model.modules()
                             if isinstance(m, torch.nn.Conv2d))
    assert all(w % 8 == 0 for w in widths)
    report = quantize_onnx(slim, X, _calib(), tmp_path / "slim.int8.onnx",
                           check_data=_test_images())
    _assert_int8_qdq(tmp_path / "slim.int8.onnx")
    assert report.passed and report.agreement.top1_agreement >= 0.95


def test_out_of_tolerance_raises_and_writes_nothing(resnet20_onnx, tmp_path):
    out = tmp_path / "strict.int8.onnx"
    with pytest.raises(QuantizationError, match=r"Expected outputs within 1e-06 .*Received: "
                                                r"max_abs_diff="):
        quantize_onnx_file(resnet20_onnx, _calib(), out, calibration_limit=20,
                           tolerance=Tolerance(max_abs_diff=1e-6))
    assert list(tmp_path.iterdir()) == []  # no int8 file, no temporary left behind
    report = quantize_onnx_file(resnet20_onnx, _calib(), out, calibration_limit=20,
                                tolerance=Tolerance(max_abs_diff=1e-6), strict=False)
    assert not report.passed and out.exists()
    assert report.agreement.images == 20 and report.agreement.fp32_accuracy is None


def test_images_of_the_wrong_shape_are_refused(resnet20_onnx, tmp_path):
    with pytest.raises(ValueError, match=r"Expected images of shape \(N, 1, 28, 28\).*"
                                         r"Received: shape=\(8, 3, 28, 28\)"):
        quantize_onnx_file(resnet20_onnx, np.zeros((8, 3, 28, 28), np.float32),
                           tmp_path / "x.onnx")
    with pytest.raises(FileNotFoundError, match="Expected an fp32 ONNX file"):
        quantize_onnx_file(tmp_path / "missing.onnx", np.zeros((8, 1, 28, 28), np.float32),
                           tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []

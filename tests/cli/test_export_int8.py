"""``uif-explorer export --format int8`` on the sample ResNet-20: the checked int8 ONNX file is
written, loads in ONNX Runtime, follows the slim fp32 model, and the fp32-vs-int8 report is
printed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from uif_explorer.cli import main
from uif_explorer.services import eval_data
from uif_explorer.torch.runners import get_pruning_runner
from uif_explorer.zoo import example_input, get_sample, load_torch_sample

IMAGES = 64

pytestmark = pytest.mark.skipif(not get_sample("resnet20").weights_path.exists(),
                                reason="resnet20's weights are not trained yet")


@pytest.mark.slow
def test_export_int8_writes_a_checked_file_that_loads(tmp_path: Path, capsys) -> None:
    import onnx
    import onnxruntime as ort

    ws = str(tmp_path / "ws")
    common = ["--model", "resnet20", "--workdir", ws]
    assert main(["ana", *common, "--limit", str(IMAGES), "--ratios", "0.5"]) == 0
    assert main(["prune", *common, "--ratio", "0.3"]) == 0
    spec = Path(ws) / "resnet20_ratio_0.3.spec"
    out = tmp_path / "m.int8.onnx"
    capsys.readouterr()
    assert main(["export", *common, "--spec", str(spec), "--format", "int8",
                 "--limit", str(IMAGES), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"top-1 accuracy on {IMAGES} evaluation images" in printed
    assert "(passed)" in printed and f"wrote {out}" in printed

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # really quantized (QDQ)
    x, _ = eval_data.arrays(tmp_path, eval_data.DataSource(), _source(), 32)
    name = sess.get_inputs()[0].name
    int8 = np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    slim = get_pruning_runner(load_torch_sample("resnet20"), example_input("resnet20"),
                              "iterative", workdir=ws).prune(spec_path=spec, mode="slim")
    with torch.inference_mode():
        fp32 = slim.eval()(torch.from_numpy(x)).numpy()
    assert int8.shape == fp32.shape == (32, 10)
    assert np.mean(int8.argmax(1) == fp32.argmax(1)) >= 0.9  # the slim model, quantized


def test_export_int8_needs_a_spec_file(tmp_path: Path, capsys) -> None:
    assert main(["export", "--model", "resnet20", "--workdir", str(tmp_path), "--spec",
                 str(tmp_path / "none.spec"), "--format", "int8", "--out",
                 str(tmp_path / "m.int8.onnx")]) == 2
    assert "Expected --spec" in capsys.readouterr().err
    assert not (tmp_path / "m.int8.onnx").exists()


def _source():
    from uif_explorer.services.workspace_info import ModelChoice

    return ModelChoice("resnet20", None, None, None).resolve()[0]

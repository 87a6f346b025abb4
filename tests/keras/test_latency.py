"""Keras latency tables and target='latency' on the Keras runner.

A small Functional convnet (conv, depthwise, conv, dense; 64 and 128 filters so that compute,
not per-call dispatch, dominates each layer) at 28 px on bundled Fashion-MNIST
images; 3 channel counts per layer side and short timings keep it fast. On a loaded machine a
small model is mostly fixed per-call cost, so the targets are small (5-15 % of the time).
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from keras import layers

from uif_explorer.core.latency import count_grid
from uif_explorer.data import numpy_dataset
from uif_explorer.io.workspace import read_json
from uif_explorer.keras import IterativePruningRunner, KerasPruner, top1_accuracy
from uif_explorer.keras.latency import keras_latency_model

pytestmark = pytest.mark.tf
POINTS = 3
SPEC = (1, 28, 28, 1)


def _net(width: int = 64) -> keras.Model:
    keras.utils.set_random_seed(0)
    x = inp = keras.Input(shape=SPEC[1:])
    x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = layers.Conv2D(2 * width, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(4)(x)
    x = layers.Flatten()(x)
    return keras.Model(inp, layers.Dense(10, activation="softmax")(x), name="lat_net")


def test_table_is_reused_and_rebuilt_when_the_model_changes(tmp_path, capsys) -> None:
    model = _net()
    pr = KerasPruner(model, SPEC)
    path = tmp_path / "lat_net_keras.latency"
    lat = keras_latency_model(pr, model, SPEC, path, max_points=POINTS)
    data = read_json(path, kind="uif-explorer-latency")
    assert data["fingerprint"]["keras"] == keras.__version__
    names = [c.name for c in lat.table.ops if c is not None]
    assert len(names) == 4  # conv, depthwise, conv, dense
    dw = next(c for c in lat.table.ops if c is not None and c.name.startswith("depthwise"))
    assert dw.in_counts == [] and dw.out_counts == count_grid(64, POINTS)
    assert lat.table.probe_total is not None and lat.original > 0

    again = keras_latency_model(pr, model, SPEC, path, max_points=POINTS)
    assert again.table.total == lat.table.total  # read back, not measured again
    assert "re-measuring" not in capsys.readouterr().out

    other = _net(16)  # another architecture under the same file name
    keras_latency_model(KerasPruner(other, SPEC), other, SPEC, path, max_points=POINTS)
    assert "the model's graph changed" in capsys.readouterr().out
    assert read_json(path)["graph_digest"] != data["graph_digest"]


def test_latency_target_is_monotone_on_the_keras_runner(tmp_path) -> None:
    x, y = numpy_dataset("test", limit=32)
    x = np.asarray(x, dtype="float32")
    runner = IterativePruningRunner(_net(), SPEC, workdir=tmp_path)
    runner.latency_points = POINTS
    runner.ana(lambda m: top1_accuracy(m, x, y), ratios=(0.5,))
    lat = runner._latency_model(runner.pruner)
    assert (tmp_path / "lat_net_keras.latency").exists()
    # How much time the analysed ratios can remove is measured, so it varies with the
    # machine's load (3-15 %): the targets are fractions of it, not fixed numbers.
    prunable = {g.id: 0.5 for g in runner.pruner.graph.groups if g.prunable}
    reach = lat.removal_of_counts(lat.snap(runner.pruner.counts(prunable, 2)))
    assert reach > 0
    targets = [round(reach * f, 4) for f in (0.3, 0.6, 0.9)]
    with warnings.catch_warnings():  # approximate targets: the closest plan is fine here
        warnings.simplefilter("ignore", UserWarning)
        previews = [runner.plan(r, target="latency", strict=False) for r in targets]
        sparse = runner.prune(ratio=targets[-1], target="latency")
    predicted = [p.latency_ms for p in previews]
    assert predicted == sorted(predicted, reverse=True)
    assert predicted[-1] < previews[-1].original_latency_ms
    for gid, keep in previews[-1].plan.kept.items():
        assert len(keep) in lat.fast_widths(gid)
    (spec_path,) = tmp_path.glob("lat_net_ratio_*_latency.spec")
    spec = read_json(spec_path)
    assert spec["target"] == "latency"
    assert spec["latency_ms"]["predicted"] == pytest.approx(predicted[-1])
    assert sparse.count_params() == runner.model.count_params()  # sparse: same shapes

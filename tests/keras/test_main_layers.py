"""Custom layers defined in a script or notebook (issue 15, item 1).

A class defined in ``__main__`` has no module in its Keras config, which once crashed the
runner with ``'NoneType' object has no attribute 'startswith'``. Unregistered with weights it
is the intended :class:`UnsupportedLayerError`; without weights it is a barrier; registered it
prunes. Every case runs on a Sequential and a Functional model, with the classes defined at
module level here and again in a script run as ``__main__`` (the notebook situation).
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers

from uif_explorer.keras import (
    IterativePruningRunner,
    KerasPruner,
    UnsupportedLayerError,
    register_layer,
    unregister_layer,
)

pytestmark = pytest.mark.tf
REPO = Path(__file__).resolve().parents[2]
SPEC = (1, 8, 8, 3)


class Scale(layers.Layer):
    """One learned scale per channel (weights, no registered rule unless a test adds one)."""

    def build(self, shape) -> None:
        self.gamma = self.add_weight(shape=(shape[-1],), name="gamma",
                                     initializer=keras.initializers.RandomUniform(0.5, 1.5))

    def call(self, x):
        return x * self.gamma


class Swish(layers.Layer):
    """No weights: an unknown layer like this is a barrier, not an error."""

    def call(self, x):
        return x * keras.ops.sigmoid(x)


def build(kind: str, custom: layers.Layer) -> keras.Model:
    """stem conv -> the custom layer -> body conv -> head, as a Sequential or Functional."""
    parts = [layers.Conv2D(32, 3, padding="same", name="stem"), custom,
             layers.Conv2D(32, 3, padding="same", name="body"), layers.Flatten(),
             layers.Dense(3, name="head")]
    if kind == "sequential":
        return keras.Sequential([keras.Input(SPEC[1:]), *parts])
    x = i = keras.Input(SPEC[1:])
    for layer in parts:
        x = layer(x)
    return keras.Model(i, x)


def outcomes(workdir: str) -> dict:
    """What the runner does with each case (JSON-able, so a script can report it)."""
    out: dict = {"module": Scale.__module__}
    x = np.random.default_rng(0).normal(size=(2, *SPEC[1:])).astype("float32")
    for kind in ("functional", "sequential"):
        try:
            IterativePruningRunner(build(kind, Scale(name="scale")), SPEC, workdir=workdir)
            out[f"{kind}/weights"] = "no error"
        except UnsupportedLayerError as exc:
            out[f"{kind}/weights"] = f"UnsupportedLayerError: {exc}"
        runner = IterativePruningRunner(build(kind, Swish(name="swish")), SPEC, workdir=workdir)
        table = runner.groups.set_index("name")
        out[f"{kind}/no_weights"] = [bool(table.loc["stem", "prunable"]),
                                     str(table.loc["stem", "reason"]),
                                     bool(table.loc["body", "prunable"])]
        register_layer(Scale, out_dims={"gamma": 0}, channelwise=True)
        try:
            pr = KerasPruner(build(kind, Scale(name="scale")), SPEC)
            plan = pr.plan_for_removal(0.3, channel_divisible=1)
            slim, sparse = pr.slim_model(plan), pr.sparse_model(plan)
            a, b = (keras.ops.convert_to_numpy(m(x)) for m in (slim, sparse))
            out[f"{kind}/registered"] = [
                float(np.linalg.norm(a - b) / np.linalg.norm(b)), round(pr.removal(plan), 4),
                slim.get_layer("stem").filters]
        finally:
            unregister_layer(Scale)
    return out


def _check(out: dict) -> None:
    for kind in ("functional", "sequential"):
        assert out[f"{kind}/weights"].startswith("UnsupportedLayerError"), out
        assert "'scale'" in out[f"{kind}/weights"] and "register_layer" in out[f"{kind}/weights"]
        stem_prunable, reason, body_prunable = out[f"{kind}/no_weights"]
        assert not stem_prunable and "no pruning rule" in reason and "Swish" in reason
        assert body_prunable
        rel, removal, stem_filters = out[f"{kind}/registered"]
        assert rel <= 1e-5 and abs(removal - 0.3) <= 0.01 and stem_filters <= 32


def test_custom_layers_defined_at_module_level(tmp_path) -> None:
    _check(outcomes(str(tmp_path)))


def test_custom_layers_defined_in_a_script_run_as_main(tmp_path) -> None:
    script = "\n\n".join([
        "import json\nimport numpy as np\nimport keras\nfrom keras import layers\n"
        "from uif_explorer.keras import (IterativePruningRunner, KerasPruner, "
        "UnsupportedLayerError, register_layer, unregister_layer)\n"
        f"SPEC = {SPEC!r}",
        *(inspect.getsource(obj) for obj in (Scale, Swish, build, outcomes)),
        f"print('RESULT' + json.dumps(outcomes({str(tmp_path)!r})))",
    ])
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "notebook_script.py"
    path.write_text(script)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.split("RESULT", 1)[1])
    assert out["module"] == "__main__"
    _check(out)

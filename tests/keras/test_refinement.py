"""The Keras runner's search refined through the shared loop (issue 13 item 4): the built-in
``fine_tune`` with a batch budget per stage, the stages in the ``.search`` file, the refined
winner built by ``prune_candidate``, and the image count beside each stage's scores."""

from __future__ import annotations

import keras
import pytest
from keras import layers

from uif_explorer.core.refinement import Refinement
from uif_explorer.data import numpy_dataset
from uif_explorer.io.workspace import read_json
from uif_explorer.keras import IterativePruningRunner, top1_accuracy

pytestmark = pytest.mark.tf


def test_keras_search_refined_with_the_built_in_fine_tune(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dense(10, activation="softmax"),
    ], name="mnist")
    x_train, y_train = numpy_dataset("train", limit=256)
    x_test, y_test = numpy_dataset("test", limit=64)

    def accuracy(m):
        return top1_accuracy(m, x_test, y_test)

    runner = IterativePruningRunner(model, (1, 28, 28, 1), workdir=tmp_path)
    weights = [w.copy() for w in model.get_weights()]
    data = runner.search(eval_fn=accuracy, num_subnet=3, ratio=0.4, channel_divisible=1,
                         refine=Refinement(finetune_args=(x_train, y_train), steps=2, keep=3))
    state = data["refinement"]
    assert state["settings"]["finetune"] == "keras fine_tune"
    assert [len(s["candidates"]) for s in state["stages"]] == [3, 2]
    assert [s["budget"] for s in state["stages"]] == [2, 4]
    assert all(s["images"] == 64 for s in state["stages"])
    assert state["complete"] and state["winner"] in state["stages"][1]["candidates"]
    assert read_json(tmp_path / "mnist_ratio_0.4.search")["refinement"] == state
    runner.prune_candidate(0.4)
    assert read_json(tmp_path / "mnist_ratio_0.4_best.spec")["candidate"] == state["winner"]
    assert all((a == b).all() for a, b in zip(weights, model.get_weights(), strict=True))

"""The app's Keras fine-tune job: a fresh sparse copy from the spec, fit with progress, zeros
kept, the score measured; the session's pruned model is left alone."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from uif_explorer import zoo  # noqa: E402
from uif_explorer.keras import IterativePruningRunner  # noqa: E402
from uif_explorer.keras.finetune import fine_tune  # noqa: E402
from uif_explorer.services import eval_data, pruning_jobs  # noqa: E402
from uif_explorer.services.backends import backend_for  # noqa: E402
from uif_explorer.services.model_source import sample_source  # noqa: E402
from uif_explorer.services.pruned import PrunedModel  # noqa: E402

pytestmark = [pytest.mark.tf, pytest.mark.slow]


class _Job:
    def __init__(self) -> None:
        self.steps: list[tuple[int, int]] = []

    def progress(self, done: int, total: int, info: dict) -> None:
        self.steps.append((done, total))


def _zero_columns(model) -> dict[str, set[int]]:
    out = {}
    for layer in model.layers:
        if hasattr(layer, "kernel") and len(layer.kernel.shape) == 4:
            w = keras.ops.convert_to_numpy(layer.kernel)
            out[layer.name] = set(np.flatnonzero(np.abs(w).reshape(-1, w.shape[-1]).sum(0) == 0)
                                  .tolist())
    return out


def test_keras_finetune_job_trains_a_private_sparse_copy(tmp_path) -> None:
    model = zoo.load_keras_sample("keras_convnet")
    source = sample_source("keras_convnet")
    ev = eval_data.make_evaluator(source, model, None, 128, tmp_path)  # the app's evaluator
    runner = IterativePruningRunner(model, (1, 28, 28, 1), workdir=tmp_path)
    runner.ana(lambda m: ev.score(m), ratios=(0.5,))
    pruned = runner.prune(ratio=0.2)
    spec_path = str(runner.workspace.spec(runner.name, ratio=0.2))  # as the page stores it
    before = _zero_columns(pruned)
    weights_before = [w.copy() for w in pruned.get_weights()]
    job = _Job()
    session = PrunedModel(model=pruned, kind="sparse", model_name=runner.name,
                          framework="keras", source="test", spec_path=spec_path,
                          accuracy=ev.score(pruned), images=ev.images, score_source="test")
    work = pruning_jobs.fine_tune_job(session, source, model, runner, ev, epochs=1, lr=1e-3,
                                      batches=3)
    result = work(job)
    assert job.steps[-1] == (3, 3)
    tuned = result["model"]
    assert tuned is not pruned
    assert all(np.array_equal(a, b) for a, b in zip(weights_before, pruned.get_weights(),
                                                      strict=True))  # the original untouched
    assert _zero_columns(tuned) == before and any(before.values())  # zeros kept through fit
    assert 0.0 <= result["accuracy"] <= 100.0 and len(result["history"]) == 1
    assert "on the first 128 images" in result["score_source"]  # with the app's protocol
    # export slices the fine-tuned weights, not the runner's original ones
    tuned_session = PrunedModel(model=tuned, kind="sparse", model_name=runner.name,
                                framework="keras", source="test", spec_path=spec_path,
                                accuracy=result["accuracy"], images=ev.images,
                                score_source="test")
    slim = backend_for("keras").slim_of(tuned_session, model, runner)
    x = np.random.default_rng(1).normal(size=(4, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(slim(x, training=False)),
                               np.asarray(tuned(x, training=False)), atol=1e-4)
    assert slim.count_params() < tuned.count_params()


def test_fine_tune_picks_the_loss_for_logits_and_stops_on_request() -> None:
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))  # logits
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    losses = fine_tune(model, x, y, epochs=3, lr=0.05, batch_size=16)
    assert len(losses) == 3 and losses[-1] < losses[0]

    class Stop(Exception):
        pass

    def cancel(done: int, total: int, info: dict) -> None:
        raise Stop

    with pytest.raises(Stop):
        fine_tune(model, x, y, epochs=1, batch_size=16, progress=cancel)

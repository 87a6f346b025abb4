"""The service layer's one backend interface, on a real PyTorch and a real Keras sample: the
same calls prune, slim, count, time and export either model, so pages and CLI never branch."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from uif_explorer.services import analysis, backends, eval_data, model_source, pruning_jobs
from uif_explorer.services.pruned import PrunedModel

REPO = Path(__file__).resolve().parents[2]
SAMPLES = [pytest.param("resnet20", id="torch"),
           pytest.param("keras_convnet", id="keras", marks=[pytest.mark.tf, pytest.mark.slow])]


@pytest.mark.parametrize("sample", SAMPLES)
def test_one_interface_prunes_slims_counts_and_exports(sample: str, tmp_path: Path) -> None:
    source, model = model_source.from_model_id(sample)
    backend = source.backend
    assert backend.framework == source.framework
    ev = eval_data.make_evaluator(source, model, None, 64, tmp_path)
    runner = model_source.make_runner(source, model, "iterative", tmp_path)
    runner.ana(ev.eval_fn, args=ev.eval_args, ratios=(0.5,))
    preview, divisible = analysis.plan_preview(runner, 0.3)  # as the Sensitivity page
    pruned = pruning_jobs.prune_from_analysis(runner, source, ev, 0.3, divisible, preview)
    assert pruned.kind == "sparse" and pruned.framework == source.framework
    assert 0 <= pruned.accuracy <= 100 and Path(pruned.spec_path).is_file()

    slim, error = pruning_jobs.slim_for_export(pruned, source, model, lambda: runner)
    assert error is None and pruned.slim is slim
    before, after = backend.out_widths(model), backend.out_widths(slim)
    assert set(after) == set(before) and sum(after.values()) < sum(before.values())
    macs, params = backend.cost(slim, source.input_shape)
    full_macs, full_params = backend.cost(model, source.input_shape)
    assert macs < 0.8 * full_macs and params < full_params
    assert macs == pytest.approx(preview.macs, rel=1e-3)

    x = backend.example_input(source.input_shape)
    fmt = backend.export_formats[0]
    blob = backend.export_bytes(slim, x, fmt.fmt, tmp_path)
    assert len(blob) > 1000 and fmt.fmt in backend.file_formats

    ticks = iter(range(1000))
    lat = backends.measure_latency(backend, {"original": backend.private_copy(model),
                                             "pruned": slim}, x, repeats=3, warmup=1,
                                   clock=lambda: next(ticks) * 0.001)
    assert lat == {"original": pytest.approx(1.0), "pruned": pytest.approx(1.0)}


def test_unknown_framework_is_refused() -> None:
    with pytest.raises(ValueError, match="Expected a framework in"):
        backends.backend_for("jax")


def test_a_torch_backend_never_loads_tensorflow() -> None:
    code = ("import sys; from uif_explorer.services import model_source; "
            "s, m = model_source.from_model_id('resnet20'); b = s.backend; "
            "b.summarize(m, s.input_shape); b.groups_table(m, s.input_shape); "
            "print(sorted(k for k in sys.modules if k.split('.')[0] in "
            "('tensorflow', 'keras')))")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]"


def test_pruned_model_facts_and_a_new_model_drops_what_was_derived() -> None:
    pruned = PrunedModel(model=object(), kind="sparse", model_name="resnet20",
                         framework="torch", source="Sensitivity, 30 % of the MACs removed",
                         spec_path="x.spec", accuracy=90.0, images=64, score_source="top-1",
                         removal_ratio=0.3, subnet_setting=[{"group": "a"}])
    pruned.slim, pruned.onnx, pruned.latency = object(), {"bytes": b"x"}, {"pruned": 1.0}
    facts = pruned.facts()
    assert facts["accuracy"] == 90.0 and facts["removal_ratio"] == 0.3
    assert not {"model", "slim", "onnx", "latency", "subnet_setting"} & set(facts)
    tuned = pruned.with_model("tuned", accuracy=92.0)
    assert tuned.model == "tuned" and tuned.accuracy == 92.0
    assert tuned.slim is None and tuned.onnx is None and tuned.latency is None
    assert pruned.slim is not None  # the original record is left alone
    assert pruned.from_sensitivity and dataclasses.replace(pruned, source="x").score_title \
        == "Accuracy"

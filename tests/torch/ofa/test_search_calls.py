"""The OFA search as a guide user calls it: positional settings, the guide's names, its files.

Issue 15 items 4-6 and issue 14's one search config: the guide's positional
``run_evolutionary_search(ofa_model, calibration_fn, calib_args, eval_fn, eval_args,
evaluation_metric, min_or_max_metric, min_flops, max_flops, flops_step, parent_popu_size,
iteration, mutate_size, mutate_prob, crossover_size)``, the same settings by keyword in the
guide's or this project's spelling or as a ``SearchConfig``; entries with the guide's
``"flops"``; a default bin width fitted to the model; ``sample_random_subnet`` and
``reset_bn_running_stats_for_calibration``; a failing ``calibration_fn`` and a missing Pareto file
as errors that say what to do. Model: the small ``concat`` topology (36 subnets, 0.34-1.17 M
MACs), so each search takes seconds.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from topologies import build
from torch import nn

from uif_explorer.core.evolution import SearchConfig, bin_key, default_macs_step
from uif_explorer.core.scores import AnalysisError
from uif_explorer.torch.evaluation import adaptive_bn_calibration, batch_norms
from uif_explorer.torch.ofa import (
    OFAPruner,
    load_search,
    load_subnet_config,
    reset_bn_running_stats_for_calibration,
    run_evolutionary_search,
    run_random_search,
    sample_random_subnet,
    sample_subnet,
)

SMALL = dict(parent_popu_size=3, iteration=1, mutate_size=2, mutate_prob=0.2, crossover_size=1)


@pytest.fixture(scope="module")
def concat():
    model, x = build("concat")
    ofa_pruner = OFAPruner(model, x)
    ofa_model = ofa_pruner.ofa_model(channel_divisible=4, auto_add_excludes=False)
    space = ofa_model.ofa_space
    span = (space.cost_m(space.choice.smallest())[0], space.cost_m(space.choice.largest())[0])
    return ofa_pruner, ofa_model, x, span


class Scorer:
    """A deterministic eval_fn (mean output on fixed inputs) that counts its calls."""

    def __init__(self, x: torch.Tensor, fail_at: int | None = None) -> None:
        self.x, self.fail_at, self.calls = x, fail_at, 0

    def __call__(self, model: nn.Module) -> float:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("CUDA out of memory (simulated)")
        with torch.no_grad():
            return float(model.eval()(self.x).mean())


def _calibrate(model: nn.Module) -> None:
    model.eval()


def _ids(pareto) -> list[str]:
    return [r["net_id"] for r in pareto.history]


def test_guide_positional_call_equals_every_keyword_spelling(tmp_path, concat):
    ofa_pruner, ofa_model, x, (lo, hi) = concat
    step = 0.1
    calibration_fn, eval_fn = _calibrate, Scorer(x)
    guide = ofa_pruner.run_evolutionary_search(
        ofa_model, calibration_fn, (), eval_fn, (), 'score', 'max', lo, hi, step, 3, 1, 2, 0.2,
        1, workdir=tmp_path / "positional")
    spelled_as_guide = ofa_pruner.run_evolutionary_search(
        ofa_model, calibration_fn, (), eval_fn, (), evaluation_metric="score",
        min_or_max_metric="max", min_flops=lo, max_flops=hi, flops_step=step, **SMALL,
        workdir=tmp_path / "guide_names")
    ours = run_evolutionary_search(
        ofa_model, calibration_fn, (), eval_fn, (), metric="score", mode="max", min_macs=lo,
        max_macs=hi, macs_step=step, **SMALL, workdir=tmp_path / "our_names")
    config = SearchConfig(metric="score", min_macs=lo, max_macs=hi, macs_step=step, **SMALL)
    as_config = run_evolutionary_search(ofa_model, calibration_fn, (), eval_fn, (),
                                        config=config, workdir=tmp_path / "config")
    assert guide and len(guide.history) == 3 + 1 * (2 + 1)
    for other in (spelled_as_guide, ours, as_config):
        assert other == guide and _ids(other) == _ids(guide)
    settings = [load_search(p.path)["settings"] for p in (guide, ours, as_config)]
    assert settings[0] == settings[1] == settings[2]
    assert settings[0]["macs_step"] == step and settings[0]["kind"] == "evolution"


def test_calls_that_do_not_fit_fail_before_any_evaluation(tmp_path, concat):
    ofa_pruner, ofa_model, x, (lo, hi) = concat
    eval_fn = Scorer(x)
    base = (ofa_model, None, (), eval_fn, ())
    cases = [
        (lambda: run_evolutionary_search(*base, parent_popsize=3), TypeError,
         "unexpected keyword argument 'parent_popsize'; did you mean parent_popu_size"),
        (lambda: run_evolutionary_search(*base, *["acc1", "max", lo, hi, 1, 3, 1, 2, 0.2, 1,
                                                  None, "extra"]), TypeError, "at most 11"),
        (lambda: run_evolutionary_search(*base, "acc1", metric="acc1"), TypeError,
         "multiple values for argument 'metric'"),
        (lambda: run_evolutionary_search(*base, "acc1", evaluation_metric="top1"), ValueError,
         "not two values"),
        (lambda: run_random_search(*base, parent_popu_size=3), TypeError,
         "unexpected keyword argument 'parent_popu_size'"),
        (lambda: run_random_search(*base, num_subnets=0), ValueError, "num_subnets >= 1"),
        (lambda: run_evolutionary_search(*base, config={"metric": "acc1"}), TypeError,
         "SearchConfig"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    assert eval_fn.calls == 0 and not (tmp_path / ".vai").exists()


def test_random_search_takes_the_same_positional_settings(tmp_path, concat):
    _, ofa_model, x, (lo, hi) = concat
    eval_fn = Scorer(x)
    pareto = run_random_search(ofa_model, None, (), eval_fn, (), "score", "max", lo, hi, 0.1, 5,
                               workdir=tmp_path)
    assert eval_fn.calls == len(pareto.history) == 5
    assert {r["origin"] for r in pareto.history} == {"random"}
    saved = load_search(pareto.path)
    assert pareto.path.endswith("_random_search.json") and saved["settings"]["num_random"] == 5
    assert all(e["flops"] == e["macs"] for e in pareto.values())


def test_entries_carry_flops_and_the_default_step_fits_the_model(tmp_path, monkeypatch, concat):
    """Issue 15 item 4: ``pareto['240']['flops']`` works; the default bins follow the span."""
    ofa_pruner, ofa_model, x, (lo, hi) = concat
    monkeypatch.chdir(tmp_path)
    pareto_global = ofa_pruner.run_evolutionary_search(
        ofa_model, _calibrate, (), Scorer(x), (), 'score', 'max', parent_popu_size=8,
        iteration=2, mutate_size=4, crossover_size=2)
    step = default_macs_step(lo, hi)
    assert step == 0.05  # (1.17 - 0.34) / 20 rounded up to a readable step
    assert load_search(pareto_global.path)["settings"]["macs_step"] == step
    keys = {bin_key(r["macs"], step) for r in pareto_global.history}
    assert list(pareto_global) == sorted(keys, key=float) and len(pareto_global) >= 5
    assert len({bin_key(r["macs"], 10) for r in pareto_global.history}) == 1  # the old default
    ofa_pruner.save_subnet_config(pareto_global, 'pareto_global.txt')
    pareto_global = ofa_pruner.load_subnet_config('pareto_global.txt')
    for key, entry in pareto_global.items():  # the guide's reading, M MACs as the docs say
        assert entry['flops'] == entry["macs"] and abs(entry['flops'] - float(key)) <= step / 2
        _, _, flops, _ = ofa_pruner.get_static_subnet(ofa_model, entry['subnet_setting'])
        assert flops == pytest.approx(entry['flops'])


def test_a_failing_calibration_fn_names_itself_and_how_to_resume(tmp_path, concat):
    """Issue 15 item 6: the user's exception is wrapped, as in the Keras runner."""
    ofa_pruner, ofa_model, x, (lo, hi) = concat
    eval_fn = Scorer(x)

    def calibration_fn(model, dataloader):
        raise KeyError("no batches left in the dataloader")

    with pytest.raises(AnalysisError) as info:
        ofa_pruner.run_evolutionary_search(
            ofa_model, calibration_fn, ([],), eval_fn, (), 'score', 'max', min_flops=lo,
            max_flops=hi, **SMALL, workdir=tmp_path)
    message = str(info.value)
    assert message.startswith("calibration_fn raised KeyError on subnet net_max")
    assert "no batches left" in message and "resume" in message
    assert str(tmp_path) in message  # where the evaluated candidates are kept
    assert isinstance(info.value.__cause__, KeyError) and eval_fn.calls == 0


def test_a_failing_eval_fn_keeps_what_was_scored_and_resumes(tmp_path, concat):
    _, ofa_model, x, (lo, hi) = concat
    args = (ofa_model, _calibrate, (), Scorer(x, fail_at=4), (), "score", "max", lo, hi, 0.1)
    with pytest.raises(AnalysisError, match=r"eval_fn raised RuntimeError on subnet .*resume"):
        run_evolutionary_search(*args, **SMALL, workdir=tmp_path)
    saved = json.loads(next(tmp_path.glob("*_evolution.json")).read_text())
    assert len(saved["history"]) == 3 and not saved["complete"]
    again = Scorer(x)
    pareto = run_evolutionary_search(*args[:3], again, *args[4:], **SMALL, workdir=tmp_path)
    assert again.calls == len(pareto.history) - 3  # the three scored ones are not run again


def test_load_subnet_config_says_what_is_wrong_with_the_file(tmp_path, monkeypatch, concat):
    ofa_pruner = concat[0]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"pareto_global\.txt.*save_subnet_config"):
        ofa_pruner.load_subnet_config('pareto_global.txt')
    (tmp_path / "pareto_global.txt").write_text('{"230": {"net_id": ')  # cut short by a crash
    with pytest.raises(ValueError, match=r"pareto_global\.txt is not a subnet config: not JSON"):
        ofa_pruner.load_subnet_config('pareto_global.txt')
    (tmp_path / "pareto_global.txt").write_text("42")
    with pytest.raises(ValueError, match="Received: int 42"):
        load_subnet_config(tmp_path / "pareto_global.txt")
    with pytest.raises(IsADirectoryError, match="cannot be read"):
        load_subnet_config(tmp_path)


def test_sample_random_subnet_is_the_random_sample_subnet(concat):
    """Issue 15 item 5: the guide's text names ``sample_random_subnet()``."""
    ofa_pruner, ofa_model, x, _ = concat
    model, setting = ofa_pruner.sample_random_subnet(ofa_model, rng=3)
    assert model is ofa_model and setting == sample_subnet(ofa_model, "random", rng=3)[1]
    settings = {json.dumps(sample_random_subnet(ofa_model)[1]) for _ in range(8)}
    assert len(settings) > 1  # really random draws
    model, _ = sample_random_subnet(ofa_model, rng=5)
    model.train()
    model(x).square().mean().backward()  # "the dynamic subnetwork can do a forward/backward"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ofa_model.parameters())
    ofa_model.zero_grad()
    ofa_model.eval()
    sample_subnet(ofa_model, "max")


def test_reset_bn_running_stats_then_forward_is_adaptive_bn(concat):
    """Issue 15 item 5: the reference's calibration prologue, as its examples use it."""
    ofa_pruner, ofa_model, _, _ = concat
    _, setting = sample_random_subnet(ofa_model, rng=1)
    static_subnet, _, _, _ = ofa_pruner.get_static_subnet(ofa_model, setting)
    reference = copy.deepcopy(static_subnet)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 3, 16, 16, generator=gen) * 2 + 1 for _ in range(3)]

    with torch.no_grad():
        static_subnet.eval()
        ofa_pruner.reset_bn_running_stats_for_calibration(static_subnet)
        norms = batch_norms(static_subnet)
        assert norms and all(bn.training and bn.momentum is None for bn in norms)
        assert all(bool((bn.running_mean == 0).all()) and int(bn.num_batches_tracked) == 0
                   for bn in norms)
        assert not any(m.training for m in static_subnet.modules() if m not in norms)
        for images in batches:
            static_subnet(images)
    static_subnet.eval()

    adaptive_bn_calibration(reference, [(b, None) for b in batches], number_forward=3)
    for ours, theirs in zip(norms, batch_norms(reference), strict=True):
        assert torch.allclose(ours.running_mean, theirs.running_mean, atol=1e-6)
        assert torch.allclose(ours.running_var, theirs.running_var, atol=1e-5)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        reset_bn_running_stats_for_calibration("model")

"""The evolutionary search (torch/ofa/search.py): each candidate once, files, resume, ranges.

How the guide's call binds to the settings is in ``test_search_calls.py``; the search
itself (bins, parents, children) in ``tests/core/test_evolution.py``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from ofa_models import Counter
from topologies import build

from uif_explorer.core.evolution import SearchRangeError, bin_key, pareto_front
from uif_explorer.io.workspace import read_json
from uif_explorer.torch.evaluation import adaptive_bn_calibration, top1_accuracy
from uif_explorer.torch.ofa import OFAPruner, get_static_subnet, run_evolutionary_search


def _search(ofa, tmp_path, counter, **kw):
    args = dict(metric="score", mode="max", macs_step=0.5, parent_popu_size=4, iteration=3,
                mutate_size=3, crossover_size=2, workdir=tmp_path, name="m")
    args.update(kw)
    return run_evolutionary_search(ofa, counter.calibrate, (), counter, (), **args)


def test_search_evaluates_each_candidate_once_and_the_last_generation(tmp_path, mbv2):
    _, _, ofa = mbv2
    counter = Counter(torch.randn(2, 1, 28, 28))
    lo, hi = 3.0, 5.5
    pareto = _search(ofa, tmp_path, counter, min_macs=lo, max_macs=hi)
    history = pareto.history
    assert len(counter.calls) == len(history) == pareto.evaluations
    assert counter.calibrations == len(history)
    keys = [json.dumps(r["subnet_setting"]) for r in history]
    assert len(set(keys)) == len(keys)  # no candidate twice
    assert len(set(counter.calls)) == len(counter.calls)
    assert len(history) == 4 + 3 * (3 + 2)
    assert {r["generation"] for r in history} == {-1, 0, 1, 2}
    assert any(r["net_id"].startswith("net_evo_2_") for r in history)  # last generation
    assert all(lo <= r["macs"] <= hi for r in history)
    for r in history:
        assert r["macs"] == pytest.approx(get_static_subnet(ofa, r["subnet_setting"])[2])
    # every bin's entry is the best of its bin, in the guide's shape
    assert set(pareto) == {bin_key(r["macs"], 0.5) for r in history}
    for key, entry in pareto.items():
        in_bin = [r for r in history if bin_key(r["macs"], 0.5) == key]
        assert entry["score"] == max(r["score"] for r in in_bin)
        assert set(entry) == {"net_id", "mode", "score", "macs", "flops", "params",
                              "subnet_setting"}
        assert entry["flops"] == entry["macs"]
    saved = read_json(tmp_path / "m_evolution.json", kind="uif-explorer-evolution")
    assert saved["complete"] and len(saved["history"]) == len(history)
    assert saved["pareto_set"] == json.loads(json.dumps(pareto))
    front = pareto_front(history, "score", "max")
    assert saved["pareto_front"] == [r["net_id"] for r in front]


def test_search_resumes_without_evaluating_again(tmp_path):
    model, x = build("concat")
    ofa = OFAPruner(model, x).ofa_model(channel_divisible=4, auto_add_excludes=False)
    first = Counter(x)
    pareto = _search(ofa, tmp_path, first)
    again = Counter(first.x)
    assert _search(ofa, tmp_path, again) == pareto and again.calls == []
    path = tmp_path / "m_evolution.json"
    data = json.loads(path.read_text())
    data["history"] = data["history"][:5]
    data["complete"] = False
    path.write_text(json.dumps(data))  # as if killed after 5 evaluations
    resumed = Counter(first.x)
    assert _search(ofa, tmp_path, resumed) == pareto
    assert len(resumed.calls) == len(first.calls) - 5
    forced = Counter(first.x)
    _search(ofa, tmp_path, forced, forced=True)
    assert len(forced.calls) == len(first.calls)


def test_unreachable_range_raises_at_once(tmp_path, mbv2):
    _, _, ofa = mbv2
    counter = Counter(torch.randn(1, 1, 28, 28))
    small, large = (ofa.ofa_space.cost_m(g)[0] for g in (
        ofa.ofa_space.choice.smallest(), ofa.ofa_space.choice.largest()))
    for lo, hi in ((large + 1, large + 2), (0.1, small - 0.01)):
        with pytest.raises(SearchRangeError, match="span"):
            _search(ofa, tmp_path, counter, min_flops=lo, max_flops=hi)
    with pytest.raises(SearchRangeError, match="min_macs <= max_macs"):
        _search(ofa, tmp_path, counter, min_macs=5, max_macs=4)
    with pytest.raises(ValueError, match="not two values"):
        _search(ofa, tmp_path, counter, min_macs=3, min_flops=4)
    assert counter.calls == []


def test_range_between_subnets_and_exhausted_space_end(tmp_path):
    model, x = build("depthwise")
    ofa = OFAPruner(model, x).ofa_model(channel_divisible=4, auto_add_excludes=False)
    space = ofa.ofa_space
    all_macs = sorted({space.cost_m(g)[0] for g in
                       np.ndindex(*space.choice.sizes)})
    gaps = [(a, b) for a, b in zip(all_macs, all_macs[1:], strict=False) if b - a > 1e-4]
    lo, hi = gaps[0]
    counter = Counter(x)
    with pytest.raises(SearchRangeError, match="attempts"):  # reachable ends, empty inside
        _search(ofa, tmp_path, counter, min_macs=lo + 1e-6, max_macs=hi - 1e-6,
                max_attempts=20)
    assert counter.calls == []
    pareto = _search(ofa, tmp_path, counter, iteration=25, max_attempts=20, macs_step=0.01)
    assert len(counter.calls) == len(pareto.history) <= space.choice.size  # ends, no repeats


@pytest.mark.slow
def test_search_through_process_pool_and_ray(tmp_path, mbv2):
    _, _, ofa = mbv2
    gen = torch.Generator().manual_seed(0)
    data = [(torch.randn(16, 1, 28, 28, generator=gen), torch.randint(0, 10, (16,),
                                                                       generator=gen))]
    args = (adaptive_bn_calibration, (data, 1), top1_accuracy, (data,), "acc1", "max", 3, 5,
            0.5, 3, 1, 2, 0.2, 1)
    inline = run_evolutionary_search(ofa, *args, workdir=tmp_path / "inline")
    for executor in ("process", "ray"):
        result = run_evolutionary_search(ofa, *args, executor, workdir=tmp_path / executor)
        assert result == inline, executor
        assert [r["net_id"] for r in result.history] == [r["net_id"] for r in inline.history]
        pids = {r["worker_pid"] for r in result.history}
        assert os.getpid() not in pids, executor
    import ray

    ray.shutdown()

"""The OFA search with target='latency': the Pareto set of predicted latency vs score.

The sample MobileNetV2 supernet (28 px); its largest subnet's table is timed with 3 channel
counts per layer side, once (cached in the workspace), and every subnet is priced from it.
One intra-op thread: on a loaded machine two threads wait on each other's time slices and a
50 us layer can measure 50 ms.
"""

from __future__ import annotations

import pytest
import torch
from ofa_models import Counter

from uif_explorer.core.evolution import SearchRangeError, bin_key
from uif_explorer.io.workspace import read_json
from uif_explorer.torch.ofa.latency import subnet_latency
from uif_explorer.torch.ofa.space import space_of

X = torch.randn(1, 1, 28, 28)


@pytest.fixture(scope="module")
def timed(mbv2, tmp_path_factory):
    _, pruner, ofa = mbv2
    workdir = tmp_path_factory.mktemp("ofa_latency")
    lat = subnet_latency(ofa, X, workdir / "m-ofa_eager.latency", threads=1, max_points=3)
    return pruner, ofa, workdir, lat


def test_subnet_latency_is_priced_from_the_table_and_cached(timed, capsys):
    _, ofa, workdir, lat = timed
    space = space_of(ofa)
    small, large = lat(space.choice.smallest()), lat(space.choice.largest())
    assert 0 < small < large
    assert large == pytest.approx(lat.lat.original * 1e3)
    again = subnet_latency(ofa, X, workdir / "m-ofa_eager.latency", threads=1, max_points=3)
    assert again.lat.table.total == lat.lat.table.total  # read back, not measured again
    assert "re-measuring" not in capsys.readouterr().out


def test_search_on_latency_bins_and_ranks_on_predicted_ms(timed):
    pruner, ofa, workdir, lat = timed
    space = space_of(ofa)
    lo, hi = lat(space.choice.smallest()), lat(space.choice.largest())
    step = round((hi - lo) / 4, 3) or 0.001
    counter = Counter(torch.randn(2, 1, 28, 28))
    pareto = pruner.run_evolutionary_search(
        ofa, counter.calibrate, (), counter, (), metric="score", target="latency",
        latency_threads=1, macs_step=step, parent_popu_size=4, iteration=1, mutate_size=2,
        crossover_size=1, workdir=workdir, name="m")
    history = pareto.history
    assert len(history) == len(counter.calls) >= 4
    for r in history:  # every candidate priced by the same table, real MACs kept apart
        assert r["latency_ms"] == pytest.approx(lat(tuple(r["genome"])))
        assert r["macs"] == pytest.approx(space.cost_m(tuple(r["genome"]))[0])
    assert set(pareto) == {bin_key(r["latency_ms"], step) for r in history}
    for key, entry in pareto.items():
        in_bin = [r for r in history if bin_key(r["latency_ms"], step) == key]
        assert entry["score"] == max(r["score"] for r in in_bin)
        assert entry["flops"] == entry["macs"] and "latency_ms" in entry
    saved = read_json(workdir / "m_evolution.json")
    assert saved["target"] == "latency" and saved["range_unit"] == "ms"
    with pytest.raises(SearchRangeError, match="ms of predicted latency"):
        pruner.run_evolutionary_search(ofa, counter.calibrate, (), counter, (),
                                       metric="score", target="latency", latency_threads=1,
                                       min_macs=hi * 2,
                                       max_macs=hi * 3, workdir=workdir, name="m2")

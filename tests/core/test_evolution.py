"""core.evolution and core.pareto on their own: no torch, a toy candidate space.

The space has four genes of 2-4 options; a genome's MACs are a weighted sum of its option
indices, so every number below can be checked by hand. The scores come from a plain function:
what is tested is the search's bookkeeping (one config object, binding of the guide's call,
bins, the guide's ``flops``), not a model.
"""

from __future__ import annotations

import pytest

from uif_explorer.core.evolution import (
    GUIDE_NAMES,
    ChoiceSpace,
    EvolutionarySearch,
    SearchConfig,
    SearchRangeError,
    bin_key,
    default_macs_step,
    hypervolume,
    pareto_front,
    pareto_set,
)
from uif_explorer.core.pareto import pareto_with_flops, step_decimals, with_flops

SPACE = ChoiceSpace((2, 3, 4, 3))
WEIGHTS = (1.5, 0.75, 0.5, 1.0)
ORDER = ("metric", "mode", "min_macs", "max_macs", "macs_step", "parent_popu_size",
         "iteration", "mutate_size", "mutate_prob", "crossover_size")


def cost(genome):
    macs = 2.0 + sum(w * g for w, g in zip(WEIGHTS, genome, strict=True))
    return macs, macs / 10


def score(genome) -> float:
    """Higher for larger subnets, with a bump so that bins have a real best."""
    return cost(genome)[0] * 3 + (genome[1] == 1) * 2 - (genome[3] == 0)


def evaluate(calls):
    def run(batch):
        for i, (net_id, genome) in enumerate(batch):
            calls.append(net_id)
            yield i, score(genome)
    return run


@pytest.mark.parametrize(("lo", "hi", "step"), [
    (2.165, 6.42, 0.25),  # the bundled MobileNetV2-small supernet
    (13.0, 31.0, 1.0),  # the bundled ResNet-20 supernet
    (0.342, 1.168, 0.05),
    (100.0, 300.0, 10.0),  # MobileNetV2 at 224 px: the reference's own step
    (0.0, 3000.0, 200.0),
    (5.0, 5.0, 0.25),  # one subnet: any positive step
])
def test_default_macs_step_is_readable_and_gives_about_twenty_bins(lo, hi, step):
    got = default_macs_step(lo, hi)
    assert got == step
    mantissa = got / 10 ** (len(str(int(got))) - 1) if got >= 1 else None
    assert mantissa is None or mantissa in (1, 2, 2.5, 5)
    if hi > lo:
        assert 8 <= (hi - lo) / got <= 20
    assert step_decimals(got) <= 3


def test_pareto_entries_carry_flops_and_files_get_both_keys():
    recs = [{"net_id": f"n{i}", "macs": m, "params": 0.1, "acc1": a}
            for i, (m, a) in enumerate([(228.356192, 69.05), (243.804128, 69.22)])]
    pareto = pareto_set(recs, "acc1", "max", 10)
    assert list(pareto) == ["230", "240"]
    assert pareto["240"]["flops"] == pareto["240"]["macs"] == 243.804128
    reference = {"230": {"net_id": "a", "acc1": 69.0, "flops": 228.4}, "note": "kept"}
    assert pareto_with_flops(reference)["230"]["macs"] == 228.4
    assert pareto_with_flops(reference)["note"] == "kept"
    assert with_flops({"macs": 3.0})["flops"] == 3.0
    assert pareto_with_flops({"macs": 3.0, "subnet_setting": []})["flops"] == 3.0  # one entry


def test_bind_takes_the_guides_positional_order_and_both_spellings():
    allowed = {*ORDER, "seed"}
    positional = SearchConfig.bind("f", ORDER, ("acc1", "max", 230, 250, 10, 16, 10, 8, 0.2, 4),
                                   {}, allowed)
    assert positional == dict(zip(ORDER, ("acc1", "max", 230, 250, 10, 16, 10, 8, 0.2, 4),
                                  strict=True))
    guide = SearchConfig.bind("f", ORDER, (), {"evaluation_metric": "acc1",
                                               "min_or_max_metric": "max", "min_flops": 230,
                                               "max_flops": 250, "flops_step": 10}, allowed)
    assert guide == {"metric": "acc1", "mode": "max", "min_macs": 230, "max_macs": 250,
                     "macs_step": 10}
    assert set(GUIDE_NAMES.values()) <= set(ORDER)
    same = SearchConfig.bind("f", ORDER, ("acc1", "max", 230), {"min_flops": 230}, allowed)
    assert same["min_macs"] == 230  # both spellings, one value: fine
    with pytest.raises(ValueError, match="either min_macs or min_flops"):
        SearchConfig.bind("f", ORDER, ("acc1", "max", 230), {"min_flops": 240}, allowed)
    with pytest.raises(TypeError, match="multiple values for argument 'mode'"):
        SearchConfig.bind("f", ORDER, ("acc1", "max"), {"mode": "min"}, allowed)
    with pytest.raises(TypeError, match=r"f\(\) takes at most 10 settings"):
        SearchConfig.bind("f", ORDER, tuple(range(11)), {}, allowed)
    with pytest.raises(TypeError, match="'iterations'; did you mean iteration"):
        SearchConfig.bind("f", ORDER, (), {"iterations": 3}, allowed)


def test_config_fills_its_range_from_the_space_and_checks_itself():
    config = SearchConfig(metric="score").with_span(*(cost(g)[0] for g in (
        SPACE.smallest(), SPACE.largest())))
    assert (config.min_macs, config.max_macs) == (2.0, 2.0 + 1.5 + 1.5 + 1.5 + 2.0)
    assert config.macs_step == default_macs_step(2.0, 8.5) == 0.5
    assert SearchConfig(min_macs=3, macs_step=1).with_span(2, 8).min_macs == 3
    assert "num_subnets" not in config.as_dict() and config.as_dict()["metric"] == "score"
    bad = [(dict(mode="best"), ValueError, "mode"), (dict(metric="macs"), ValueError, "metric"),
           (dict(min_macs=6, max_macs=5), SearchRangeError, "min_macs <= max_macs"),
           (dict(num_subnets=0), ValueError, "num_subnets >= 1"),
           (dict(mutate_prob=1.5), ValueError, "mutate_prob"),
           (dict(iteration=-1), ValueError, "iteration >= 0")]
    for change, error, message in bad:
        with pytest.raises(error, match=message):
            SearchConfig(**{"min_macs": 2, "max_macs": 8, "macs_step": 1, **change}).check()


def _search(**settings) -> tuple[EvolutionarySearch, list[str]]:
    config = SearchConfig(metric="score", min_macs=3.0, max_macs=7.0, macs_step=0.5, seed=1,
                          **settings)
    calls: list[str] = []
    search = EvolutionarySearch(SPACE, cost, config)
    search.search(evaluate(calls))
    return search, calls


def test_evolution_evaluates_each_candidate_once_in_range_and_deterministically():
    search, calls = _search(parent_popu_size=4, iteration=3, mutate_size=3, crossover_size=2)
    history = search.history
    assert calls == [r["net_id"] for r in history] and len(calls) == len(set(calls))
    assert search.planned_evaluations() == 4 + 3 * (3 + 2)  # an upper bound: children of
    assert 15 <= len(history) <= 19  # 4 parents can run out of fresh crossovers
    assert {r["generation"] for r in history} == {-1, 0, 1, 2}
    assert len({tuple(r["genome"]) for r in history}) == len(history)
    assert all(3.0 <= r["macs"] <= 7.0 for r in history)
    assert [r["origin"] for r in history[4:9]] == ["mutate"] * 3 + ["crossover"] * 2
    assert history[4]["net_id"] == "net_evo_0_mutate_0"
    assert history[8]["net_id"] == "net_evo_0_crossover_1"
    again, _ = _search(parent_popu_size=4, iteration=3, mutate_size=3, crossover_size=2)
    assert again.history == history  # one seed, one search
    best = pareto_set(history, "score", "max", 0.5)
    assert all(e["score"] == max(r["score"] for r in history
                                 if bin_key(r["macs"], 0.5) == k) for k, e in best.items())


def test_random_search_is_the_same_config_with_num_subnets():
    search, calls = _search(num_subnets=7)
    assert search.planned_evaluations() == 7 and len(calls) == 7
    assert {r["origin"] for r in search.history} == {"random"}
    memo = {tuple(r["genome"]): r for r in search.history}
    resumed = EvolutionarySearch(SPACE, cost, search.cfg, memo)
    replay: list[str] = []
    resumed.search(evaluate(replay))
    assert replay == [] and resumed.history == search.history  # resumed from the memo


def test_bins_front_and_hypervolume():
    assert bin_key(228.356192, 10) == "230" and bin_key(243.8, 10) == "240"
    assert bin_key(7.1, 0.1) == "7.1" and bin_key(7.13, 0.25) == "7.25"
    recs = [{"net_id": str(i), "macs": m, "params": 0.1, "acc1": a}
            for i, (m, a) in enumerate([(1.0, 50.0), (1.2, 45.0), (2.0, 80.0), (2.1, 70.0)])]
    assert [r["net_id"] for r in pareto_front(recs, "acc1")] == ["0", "2"]
    assert list(pareto_set(recs, "acc1", "max", 1.0)) == ["1", "2"]
    assert pareto_set(recs, "acc1", "max", 1.0)["1"]["net_id"] == "0"
    assert pareto_set(recs, "acc1", "min", 1.0)["1"]["net_id"] == "1"
    pts = [(r["macs"], r["acc1"]) for r in recs]
    assert hypervolume(pts, 3.0, 0.0) == pytest.approx(2.0 * 50 + 1.0 * 30)
    assert hypervolume(pts + [(2.5, 10.0)], 3.0, 0.0) == pytest.approx(130.0)
    assert hypervolume([(4.0, 90.0)], 3.0, 0.0) == 0.0
    assert hypervolume([(1.0, 0.2)], 2.0, 1.0, mode="min") == pytest.approx(0.8)

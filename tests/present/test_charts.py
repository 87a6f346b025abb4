"""present.charts on small hand-made workspace dicts (the shapes of .sens / .search)."""

from __future__ import annotations

import sys

import plotly.graph_objects as go

from uif_explorer.present import charts

SENS = {
    "format_version": 1, "kind": "uif-explorer-sensitivity", "metric": "score",
    "baseline": 90.0, "ratios": [0.3, 0.6], "complete": False,
    "groups": [
        {"id": 0, "name": "conv1", "modules": ["conv1", "bn1", "layer1.0.conv2"],
         "num_channels": 16, "prunable": True, "curve": [[0.3, 85.0], [0.6, 60.0]]},
        {"id": 1, "name": "layer1.0.conv1", "modules": ["layer1.0.conv1", "layer1.0.bn1"],
         "num_channels": 16, "prunable": True, "curve": [[0.3, 89.0]]},
        {"id": 2, "name": "layer2.0.conv1", "modules": ["layer2.0.conv1"],
         "num_channels": 32, "prunable": True, "curve": []},  # not analysed yet
        {"id": 3, "name": "fc", "modules": ["fc"], "num_channels": 10, "prunable": False,
         "curve": []},
    ],
}

SEARCH = {
    "format_version": 1, "kind": "uif-explorer-search", "removal_ratio": 0.3,
    "higher_is_better": True,
    "baseline": {"score": 90.0, "macs": 31.0, "params": 0.27},
    "groups": [{"id": 0, "name": "conv1", "num_channels": 16, "prunable": True},
               {"id": 1, "name": "layer1.0.conv1", "num_channels": 16, "prunable": True},
               {"id": 3, "name": "fc", "num_channels": 10, "prunable": False}],
    "candidates": [
        {"id": 0, "macs": 21.7, "params": 0.18, "removal": 0.30, "score": 80.0,
         "ratios": {"0": 0.25, "1": 0.125}},
        {"id": 1, "macs": 21.6, "params": 0.19, "removal": 0.302, "score": 85.0,
         "ratios": {"0": 0.125, "1": 0.5}},
        {"id": 2, "macs": 21.8, "params": 0.17, "removal": 0.298, "score": 70.0,
         "ratios": {"0": 0.5}},
        {"id": 3, "macs": 21.7, "params": 0.18, "removal": 0.3, "score": None, "ratios": {}},
    ],
    "ranking": [1, 0, 2],
}


def test_sensitivity_figure_one_line_per_analysed_group() -> None:
    fig = charts.sensitivity_figure(SENS)
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 2  # groups with results; the others are not drawn yet
    assert fig.layout.xaxis.title.text == "Fraction of the group's channels removed"
    assert fig.layout.yaxis.title.text == "Score (top-1 accuracy, %)"
    first = fig.data[0]
    assert list(first.x) == [0.0, 0.3, 0.6] and list(first.y) == [90.0, 85.0, 60.0]
    assert "layer1.0.conv2" in first.hovertemplate and "bn1" in first.hovertemplate
    assert any(s.y0 == 90.0 for s in fig.layout.shapes)  # the baseline line


def test_sensitivity_figure_of_an_empty_analysis_has_no_lines() -> None:
    empty = {**SENS, "baseline": None, "groups": [{**g, "curve": []} for g in SENS["groups"]]}
    fig = charts.sensitivity_figure(empty)
    assert len(fig.data) == 0


def test_candidates_figure_highlights_the_best_and_carries_ids() -> None:
    fig = charts.candidates_figure(SEARCH)
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 2
    others, best = fig.data
    assert [c[0] for c in others.customdata] == [0, 2]  # unscored candidate 3 left out
    assert [c[0] for c in best.customdata] == [1] and list(best.y) == [85.0]
    assert len(others.x) + len(best.x) == len(charts.scored_candidates(SEARCH)) == 3
    assert fig.layout.xaxis.title.text == "MACs (millions)"
    assert fig.layout.yaxis.title.text == "Score (top-1 accuracy, %)"


def test_best_is_computed_when_the_ranking_is_missing() -> None:
    assert charts.best_candidate_id({k: v for k, v in SEARCH.items() if k != "ranking"}) == 1
    lower = {**SEARCH, "higher_is_better": False}
    del lower["ranking"]
    assert charts.best_candidate_id(lower) == 2


def test_candidate_ratios_figure_one_bar_set_per_chosen_candidate() -> None:
    fig = charts.candidate_ratios_figure(SEARCH, [0, 1])
    assert len(fig.data) == 2
    assert list(fig.data[0].x) == ["conv1", "layer1.0.conv1"]  # prunable groups only
    assert list(fig.data[0].y) == [0.25, 0.125]
    assert fig.data[1].name == "candidate 1 (best)"
    assert fig.layout.yaxis.title.text == "Fraction of the group's channels removed"
    assert fig.layout.xaxis.title.text == "Channel group (first layer)"
    assert list(charts.candidate_ratios_figure(SEARCH, [2]).data[0].y) == [0.5, 0.0]


def test_width_figure_before_and_after() -> None:
    before = {"conv1": 16, "layer1.0.conv1": 16, "fc": 10}
    after = {"conv1": 12, "layer1.0.conv1": 8, "fc": 10}
    fig = charts.width_figure(before, after)
    assert len(fig.data) == 2
    assert [t.name for t in fig.data] == ["before", "after"]
    assert list(fig.data[1].y) == [12, 8, 10]
    assert fig.layout.yaxis.title.text == "Output channels"
    assert fig.layout.xaxis.title.text == "Layer"


def test_charts_do_not_import_streamlit() -> None:
    import importlib
    import subprocess

    code = ("import sys, uif_explorer.present.charts; "
            "print('streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
    assert importlib.import_module("uif_explorer.present.charts") is charts


def _evolution() -> dict:
    hist = [
        {"net_id": "a", "macs": 1.0, "params": 0.1, "acc1": 80.0, "generation": 0},
        {"net_id": "b", "macs": 2.0, "params": 0.2, "acc1": 85.0, "generation": 0},
        {"net_id": "c", "macs": 2.5, "params": 0.2, "acc1": 84.0, "generation": 1},  # dominated
        {"net_id": "d", "macs": 3.0, "params": 0.3, "acc1": 90.0, "generation": 1},
    ]
    return {"metric": "acc1", "mode": "max", "history": hist}


def test_evolution_figure_draws_every_subnet_and_the_non_dominated_front() -> None:
    fig = charts.evolution_figure(_evolution(), highlight=["c"])
    points, front, chosen = fig.data
    assert len(points.x) == 4
    assert [c[0] for c in front.customdata] == ["a", "b", "d"]
    assert [c[0] for c in chosen.customdata] == ["c"]
    assert fig.layout.xaxis.title.text == "MACs (millions)"
    assert "accuracy" in fig.layout.yaxis.title.text


def test_evolution_figure_filters_by_macs_and_recomputes_the_front() -> None:
    fig = charts.evolution_figure(_evolution(), macs_range=(2.2, 3.0))
    points, front = fig.data
    assert sorted(c[0] for c in points.customdata) == ["c", "d"]
    assert [c[0] for c in front.customdata] == ["c", "d"]  # c is cheaper, so on the front now


def _brute_front(points: list[tuple[float, float]], mode: str) -> set[int]:
    """Indices of the points no other point dominates (fewer-or-equal MACs, better-or-equal
    score, one strictly): the definition, checked pair by pair."""
    sign = 1.0 if mode == "max" else -1.0
    front = set()
    for i, (m, s) in enumerate(points):
        dominated = any(
            m2 <= m and sign * s2 >= sign * s and (m2 < m or sign * s2 > sign * s)
            for j, (m2, s2) in enumerate(points) if j != i)
        if not dominated:
            front.add(i)
    return front


def test_evolution_front_is_the_brute_force_non_dominated_set() -> None:
    import numpy as np

    for seed in range(6):
        rng = np.random.default_rng(seed)
        mode = "max" if seed % 2 == 0 else "min"
        n = int(rng.integers(5, 60))
        macs = rng.uniform(1.0, 10.0, n).round(2)  # rounding gives some equal MACs (ties)
        score = rng.uniform(50.0, 95.0, n).round(1)
        hist = [{"net_id": f"n{i}", "macs": float(m), "params": 0.1, "acc1": float(s),
                 "generation": i % 3} for i, (m, s) in enumerate(zip(macs, score))]
        fig = charts.evolution_figure({"metric": "acc1", "mode": mode, "history": hist})
        points, front = fig.data[:2]
        assert len(points.x) == n
        got = {int(c[0][1:]) for c in front.customdata}
        assert got == _brute_front(list(zip(macs.tolist(), score.tolist())), mode), seed
        assert list(front.x) == sorted(front.x)  # drawn left to right as a step line
        assert front.line.shape == "hv"


def test_figure_of_picks_the_figure_from_a_dict_or_a_file(tmp_path) -> None:
    import json

    assert charts.figure_of(SENS).layout.xaxis.title.text == \
        charts.sensitivity_figure(SENS).layout.xaxis.title.text
    assert len(charts.figure_of(SEARCH).data) == 2
    evo = {**_evolution(), "kind": "uif-explorer-evolution"}
    front = charts.figure_of(evo, macs_range=(2.2, 3.0)).data[1]
    assert [c[0] for c in front.customdata] == ["c", "d"]
    for name, data, title in (("a.sens", SENS, "Sensitivity"), ("b.search", SEARCH, "One-step"),
                              ("c_evolution.json", evo, "OFA search")):
        path = tmp_path / name
        path.write_text(json.dumps(data))
        assert charts.figure_of(path).layout.title.text.startswith(title)
        assert charts.figure_of(str(path)).layout.title.text.startswith(title)


def test_figure_of_a_pareto_set_draws_its_history() -> None:
    from uif_explorer.torch.ofa.search import ParetoSet

    evo = _evolution()
    pareto = ParetoSet({"2": {**evo["history"][1], "subnet_setting": []}})
    pareto.history = evo["history"]
    fig = charts.figure_of(pareto)
    assert len(fig.data[0].x) == 4
    assert [c[0] for c in fig.data[1].customdata] == ["a", "b", "d"]


def test_figure_of_rejects_what_it_cannot_draw() -> None:
    import pytest

    with pytest.raises(TypeError, match="workspace dict"):
        charts.figure_of(3)
    with pytest.raises(ValueError, match="Expected a .sens"):
        charts.figure_of({"kind": "uif-explorer-spec"})


def test_model_width_figure_of_real_models_sparse_equals_slim() -> None:
    from uif_explorer.torch.pruner import ChannelPruner
    from uif_explorer.zoo import example_input, load_torch_sample

    model = load_torch_sample("resnet20")
    pruner = ChannelPruner(model, example_input("resnet20"))
    plan = pruner.plan_for_removal(0.4)
    sparse, slim = pruner.sparse_model(plan), pruner.slim_model(plan)
    fig = charts.model_width_figure(model, sparse)
    before, after = fig.data
    assert list(before.x) == [n for n, m in model.named_modules()
                              if type(m).__name__ in ("Conv2d", "Linear")]
    assert list(after.y) == list(charts.model_width_figure(model, slim).data[1].y)
    assert sum(after.y) < sum(before.y) and all(a <= b for a, b in zip(after.y, before.y))
    assert fig.layout.yaxis.title.text == "Output channels"

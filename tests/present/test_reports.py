"""Notebook summaries (present.reports and the runner / ParetoSet methods over it) on real
runners of the sample models, with tiny budgets: 64 test images, two ratios, four candidates.
Tests on the shared analysed runners are ``slow`` (an analysis and a search, about 30 s)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from uif_explorer.data import torch_loader
from uif_explorer.io.workspace import WorkspaceError
from uif_explorer.present import charts, reports
from uif_explorer.torch import adaptive_bn_calibration, get_pruning_runner, top1_accuracy
from uif_explorer.zoo import example_input, load_torch_sample

RATIOS = (0.3, 0.6)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory):
    """One analysed ResNet-20 runner and one searched one-step runner, sharing a workspace."""
    workdir = tmp_path_factory.mktemp("reports")
    model = load_torch_sample("resnet20")
    val = torch_loader("test", limit=64, batch_size=64)
    runner = get_pruning_runner(model, example_input("resnet20"), "iterative", workdir=workdir)
    sens = runner.ana(top1_accuracy, args=(val,), ratios=RATIOS)
    one_step = get_pruning_runner(model, example_input("resnet20"), "one_step",
                                  workdir=workdir)
    calib = torch_loader("train", limit=64, batch_size=64, shuffle=False)
    search = one_step.search(calibration_fn=adaptive_bn_calibration, calib_args=(calib,),
                             eval_fn=top1_accuracy, eval_args=(val,), num_subnet=4,
                             removal_ratio=0.3)
    return model, runner, sens, one_step, search


@pytest.mark.slow
def test_groups_frame_lists_every_group(analysed) -> None:
    _, runner, _, _, _ = analysed
    frame = runner.groups_frame()
    groups = runner.pruner.graph.groups
    assert list(frame["group"]) == [g.id for g in groups]
    assert frame["prunable"].sum() == len(runner.pruner.graph.prunable_groups) == 12
    fc = frame[frame["name"] == "fc"].iloc[0]
    assert not fc["prunable"] and "output" in fc["reason"]


@pytest.mark.slow
def test_sensitivity_frame_holds_the_curves_and_worst_drops(analysed) -> None:
    _, runner, sens, _, _ = analysed
    frame = runner.sensitivity_frame()
    assert list(frame.columns) == ["group", "name", "channels", "prunable", "baseline",
                                   "removed 30%", "removed 60%", "worst_drop"]
    assert len(frame) == len(sens["groups"])
    for g, (_, row) in zip(sens["groups"], frame.iterrows()):
        curve = dict((round(r, 3), s) for r, s in g["curve"])
        if not g["prunable"]:
            assert math.isnan(row["removed 30%"]) and math.isnan(row["worst_drop"])
            continue
        assert row["removed 30%"] == curve[0.3] and row["removed 60%"] == curve[0.6]
        assert row["worst_drop"] == pytest.approx(max(sens["baseline"] - s
                                                      for s in curve.values()))
        assert row["baseline"] == sens["baseline"]


@pytest.mark.slow
def test_sensitivity_frame_of_an_unfinished_analysis_has_gaps(analysed) -> None:
    _, _, sens, _, _ = analysed
    partial = json.loads(json.dumps(sens))
    partial["groups"][1]["curve"] = partial["groups"][1]["curve"][:1]
    partial["complete"] = False
    frame = reports.sensitivity_frame(partial)
    assert not math.isnan(frame.loc[1, "removed 30%"]) and math.isnan(frame.loc[1, "removed 60%"])


@pytest.mark.slow
def test_search_frame_ranks_by_score_and_picks_the_newest_file(analysed) -> None:
    _, _, _, one_step, search = analysed
    frame = one_step.search_frame(0.3)
    assert list(frame["id"]) == [0, 1, 2, 3]
    assert frame.loc[frame["rank"] == 1, "id"].item() == search["ranking"][0]
    assert list(frame.sort_values("rank")["id"]) == search["ranking"]
    assert frame["best"].sum() == 1
    assert frame["removed_pct"].between(29.0, 31.0).all()  # each within 1 point of the target
    assert one_step.search_frame().equals(frame)  # no ratio: the newest search of the model
    wide = one_step.search_frame(0.3, group_ratios=True)
    assert "layer1.0.conv1" in wide.columns and wide.shape[1] == frame.shape[1] + 12
    with pytest.raises(WorkspaceError, match="No search"):
        one_step.search_frame(0.5)


@pytest.mark.slow
def test_runner_repr_and_html_say_what_the_runner_is(analysed) -> None:
    _, runner, _, one_step, _ = analysed
    text = repr(runner)
    assert text.startswith(f"IterativePruningRunner({runner.name!r}, torch)")
    assert "31.022 M MACs" in text and "12/13 groups prunable" in text
    assert "analysis: finished" in text and f"{runner.name}_ratio_0.3.search" in repr(one_step)
    page = runner._repr_html_()
    assert "<table" in page and "layer3.2.conv1" in page and "31.02" in page


@pytest.mark.slow
def test_figure_of_a_runner_follows_its_kind(analysed) -> None:
    _, runner, sens, one_step, search = analysed
    assert len(charts.figure_of(runner).data) == 12  # one curve per analysed group
    fig = charts.figure_of(one_step)
    assert sum(len(t.x) for t in fig.data) == len(search["candidates"])


@pytest.mark.slow
def test_layer_widths_and_width_frame_of_a_pruned_model(analysed) -> None:
    model, runner, _, _, _ = analysed
    sparse = runner.prune(removal_ratio=0.3)
    slim = runner.prune(spec_path=runner.workspace.latest_spec(), mode="slim")
    before, after = reports.layer_widths(model), reports.layer_widths(sparse)
    assert after == reports.layer_widths(slim)  # zeroed channels do not count
    assert slim.layer1[0].conv1.out_channels == after["layer1.0.conv1"]
    frame = reports.width_frame(before, after)
    assert list(frame["layer"]) == list(before) and (frame["after"] <= frame["before"]).all()
    assert (frame["removed"] > 0).any()
    with pytest.raises(TypeError, match="nn.Module or a keras.Model"):
        reports.layer_widths(object())


def test_pareto_set_table_and_repr_from_the_bundled_search() -> None:
    from uif_explorer.torch.ofa import ParetoSet, bundled_search

    evo = bundled_search("mobilenetv2_small")
    pareto = ParetoSet.from_search(evo)
    assert dict(pareto) == evo["pareto_set"]  # still the guide's dict
    assert json.loads(json.dumps(pareto)) == evo["pareto_set"]
    frame = pareto.to_frame()
    assert list(frame.columns) == ["bin", "net_id", "acc1", "macs_m", "params_m", "widths"]
    assert list(frame["bin"]) == list(evo["pareto_set"])  # bins ascending, like the file
    assert list(frame["macs_m"]) == sorted(frame["macs_m"])
    first = evo["pareto_set"][frame.loc[0, "bin"]]
    assert frame.loc[0, "acc1"] == first["acc1"] and frame.loc[0, "net_id"] == first["net_id"]
    entry = first["subnet_setting"][0]
    assert f"{entry['group']}={entry['width']}" in frame.loc[0, "widths"]
    assert repr(pareto).startswith(f"ParetoSet({len(pareto)} bins from "
                                   f"{evo['evaluations']} evaluated subnets)")
    assert "<table" in pareto._repr_html_()
    assert reports.pareto_frame(evo).equals(frame)  # a whole search file reads the same


def test_reports_and_charts_import_neither_torch_nor_tensorflow() -> None:
    code = ("import sys, uif_explorer.present.reports, uif_explorer.present.charts; "
            "print('torch' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False False", out.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.tf
def test_keras_runner_reports(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    from uif_explorer.data import numpy_dataset
    from uif_explorer.keras import IterativePruningRunner
    from uif_explorer.keras import top1_accuracy as keras_top1
    from uif_explorer.zoo import load_keras_sample

    model = load_keras_sample("keras_convnet")
    x, y = numpy_dataset("test", limit=64)
    runner = IterativePruningRunner(model, (1, 28, 28, 1), workdir=tmp_path)
    assert "keras" in repr(runner) and "analysis: none" in repr(runner)
    sens = runner.ana(keras_top1, args=(x, y), ratios=RATIOS)
    frame = runner.sensitivity_frame()
    assert list(frame["name"]) == ["conv2d", "conv2d_1", "dense"]
    assert frame.loc[0, "removed 60%"] == dict(map(tuple, sens["groups"][0]["curve"]))[0.6]
    sparse = runner.prune(ratio=0.2)
    widths = reports.layer_widths(sparse)
    assert widths == reports.layer_widths(runner.get_slim_model())
    assert widths["conv2d_1"] < reports.layer_widths(model)["conv2d_1"] == 64
    runner.search(eval_fn=keras_top1, eval_args=(x, y), num_subnet=2, ratio=0.2)
    table = runner.search_frame(0.2)
    assert len(table) == 2 and set(table["rank"]) == {1, 2}

"""Latency tables of PyTorch models and latency as a pruning target.

Sample ResNet-20 (28 px Fashion-MNIST) timed at a few channel counts per layer; the machine is
shared, so tests assert reuse, ordering and monotonicity, and only print the prediction error.
At 28 px and batch 1 most of ResNet-20's eager time is per-op overhead (norms, activations,
dispatch), so the latency targets here are small: pruning every group to 10 % leaves most of it.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from uif_explorer import get_pruning_runner
from uif_explorer.core.latency import count_grid
from uif_explorer.data import torch_loader
from uif_explorer.io.workspace import read_json
from uif_explorer.torch.evaluation import adaptive_bn_calibration, top1_accuracy
from uif_explorer.torch.latency import latency_model, measure_latency_table
from uif_explorer.torch.pruner import ChannelPruner

SHAPE = (1, 1, 28, 28)
POINTS = 4
THREADS = 1  # two threads on a loaded machine wait on each other's time slices (docs/latency.md)


@pytest.fixture(scope="module")
def loader():
    return torch_loader("test", limit=64, batch_size=64)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("latency")


def test_table_is_reused_and_rebuilt_when_machine_or_model_change(resnet20, workdir, capsys):
    x = torch.randn(*SHAPE)
    pr = ChannelPruner(resnet20, x)
    path = workdir / "resnet20_eager.latency"
    lat = latency_model(pr, resnet20, x, path, threads=THREADS, max_points=POINTS)
    timed = [c for c in lat.table.ops if c is not None]
    assert len(timed) == len([m for m in resnet20.modules()
                              if isinstance(m, (nn.Conv2d, nn.Linear))])
    assert all(c.time > 0 and c.out_counts[-1] == c.full_out for c in timed)
    assert lat.original == pytest.approx(lat.table.total)
    saved = path.read_bytes()

    again = latency_model(pr, resnet20, x, path, threads=THREADS, max_points=POINTS)
    assert path.read_bytes() == saved and again.original == pytest.approx(lat.original)

    data = json.loads(saved)  # the same model on "another machine": measured again
    data["fingerprint"]["cpu"] = "another CPU"
    path = workdir / "copy_eager.latency"  # (the runner tests below reuse the first table)
    path.write_text(json.dumps(data))
    capsys.readouterr()
    latency_model(pr, resnet20, x, path, threads=THREADS, max_points=POINTS)
    assert "cpu changed" in capsys.readouterr().out
    assert read_json(path)["fingerprint"]["cpu"] != "another CPU"

    other = nn.Sequential(nn.Conv2d(1, 24, 3), nn.ReLU(), nn.Conv2d(24, 8, 3))
    other_pr = ChannelPruner(other, x)
    latency_model(other_pr, other, x, path, threads=THREADS, max_points=POINTS)
    assert "graph changed" in capsys.readouterr().out
    assert read_json(path)["graph_digest"] == other_pr.graph.graph_digest()


def test_onnxruntime_table_times_one_node_graphs():
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.ReLU(),
                          nn.Conv2d(32, 16, 1), nn.Flatten(), nn.Linear(16 * 16 * 16, 10)).eval()
    x = torch.randn(1, 3, 16, 16)
    pr = ChannelPruner(model, x)
    seen = []
    table = measure_latency_table(pr, model, x, "onnxruntime", threads=1, max_points=3,
                                  progress=lambda done, total, name: seen.append(done))
    assert seen[-1] == len(pr.graph.mac_ops) and table.runtime == "onnxruntime"
    assert "onnxruntime" in table.fingerprint
    depthwise = next(c for c, op in zip(table.ops, pr.graph.mac_ops, strict=True)
                     if op.depthwise)
    assert depthwise.in_counts == [] and depthwise.out_counts == count_grid(32, 3)
    assert len(depthwise.out_times) == len(depthwise.out_counts)
    assert all(t > 0 for c in table.ops if c for t in c.in_times + c.out_times)


def test_latency_target_is_monotone_and_builds_the_planned_slim_model(resnet20, loader, workdir):
    runner = get_pruning_runner(resnet20, torch.randn(*SHAPE), "iterative", workdir=workdir,
                                name="resnet20")
    runner.latency_points, runner.latency_threads = POINTS, THREADS
    runner.ana(top1_accuracy, args=(loader,), ratios=(0.5, 0.9))
    with warnings.catch_warnings():  # approximate targets: the closest plan is fine here
        warnings.simplefilter("ignore", UserWarning)
        previews = [runner.plan(r, target="latency", strict=False) for r in (0.05, 0.1, 0.15)]
    predicted = [p.latency_ms for p in previews]
    assert predicted == sorted(predicted, reverse=True)
    assert predicted[0] < previews[0].original_latency_ms
    assert all(p.target == "latency" for p in previews)
    # at this machine's fast widths only: every kept count is one the table says is fast
    lat = runner._latency_model(runner.pruner)
    for gid, keep in previews[-1].plan.kept.items():
        assert len(keep) in lat.fast_widths(gid)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        slim = runner.prune(removal_ratio=0.15, mode="slim", target="latency")
    spec = read_json(workdir / "resnet20_ratio_0.15_latency.spec")
    assert spec["target"] == "latency"
    assert spec["latency_ms"]["predicted"] == pytest.approx(predicted[-1])
    # measured speed-ups belong to bench/latency.py (a timed assert flakes on a shared machine):
    # here the slim model is the plan's, smaller, and computes
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in resnet20.parameters())
    with torch.inference_mode():
        assert slim.eval()(torch.randn(*SHAPE)).shape == resnet20.eval()(torch.randn(*SHAPE)).shape


def test_one_step_search_samples_latency_candidates(resnet20, loader, workdir):
    runner = get_pruning_runner(resnet20, torch.randn(*SHAPE), "one_step", workdir=workdir,
                                name="resnet20")
    runner.latency_points, runner.latency_threads = POINTS, THREADS
    data = runner.search(calibration_fn=adaptive_bn_calibration, calib_args=(loader,),
                         eval_fn=top1_accuracy, eval_args=(loader,), num_subnet=2,
                         removal_ratio=0.1, target="latency")
    assert data["target"] == "latency"
    assert (workdir / "resnet20_ratio_0.1_latency.search").exists()
    original_ms = runner._latency_model(runner.pruner).original * 1e3
    for c in data["candidates"]:  # each lands on the target of the predicted latency
        assert abs(c["removal"] - 0.1) <= 0.01
        assert c["latency_ms"] == pytest.approx(original_ms * (1 - c["removal"]))
    slim = runner.prune(removal_ratio=0.1, target="latency")
    assert sum(p.numel() for p in slim.parameters()) < sum(
        p.numel() for p in resnet20.parameters())


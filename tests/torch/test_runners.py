"""The guide's PyTorch coarse-grained pruning code, runner files, resumption and bad input.

The guide's calls run with its function and argument names on the sample ResNet-20 and the
bundled Fashion-MNIST subset (values scaled down: a few hundred images, fewer ratios and
candidates; its ``.cuda()`` calls dropped).
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from guide_code import guide_calibration_fn as calibration_fn
from guide_code import guide_eval_fn as eval_fn
from killing import kill_when_counted, start_child

from uif_explorer import get_pruning_runner
from uif_explorer.core.estimate import WHOLE_MODEL_RATIOS
from uif_explorer.core.plan import PlanError
from uif_explorer.data import torch_loader
from uif_explorer.io.workspace import WorkspaceError, read_json
from uif_explorer.torch.evaluation import adaptive_bn_calibration, top1_accuracy
from uif_explorer.torch.macs import count_macs
from uif_explorer.torch.runners import AnalysisError
from uif_explorer.zoo import load_torch_sample

RATIOS = (0.3, 0.6, 0.9)
REPO = Path(__file__).resolve().parents[2]


# -- the guide's eval_fn and calibration_fn come from tests/support/guide_code.py ------------
@pytest.fixture(scope="module")
def val_loader():
    return torch_loader("test", limit=256, batch_size=128)


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, resnet20, val_loader):
    """One finished analysis of the sample ResNet-20, shared by the tests below."""
    workdir = tmp_path_factory.mktemp("vai")
    input_signature = torch.randn([1, 1, 28, 28], dtype=torch.float32)
    runner = get_pruning_runner(resnet20, input_signature, "iterative", workdir=workdir)
    runner.ana(eval_fn, args=(val_loader,), ratios=RATIOS)
    return runner, workdir


@pytest.mark.slow
def test_guide_iterative_flow(analysed, resnet20, val_loader, tmp_path):
    runner, workdir = analysed
    before = copy.deepcopy(resnet20.state_dict())
    model = runner.prune(removal_ratio=0.2)
    assert abs(runner.pruner.removal(model.uif_plan) - 0.2) <= 0.01
    assert json.loads((workdir / "latest_spec").read_text()).endswith("_ratio_0.2.spec")

    # Retraining, as the guide shows it (a few batches), saving both state dicts.
    optimizer = torch.optim.Adam(model.parameters(), 1e-3, weight_decay=5e-4)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    for images, target in torch_loader("train", limit=256, batch_size=64):
        optimizer.zero_grad()
        criterion(model(images), target).backward()
        optimizer.step()
    torch.save(model.state_dict(), tmp_path / "model_pruned.pth")
    if hasattr(model, "slim_state_dict"):
        torch.save(model.slim_state_dict(), tmp_path / "model_slim.pth")

    # Prune again from the same analysis: a new runner on the fine-tuned sparse model.
    fine_tuned = load_torch_sample("resnet20")
    fine_tuned.load_state_dict(torch.load(tmp_path / "model_pruned.pth", weights_only=True))
    runner2 = get_pruning_runner(fine_tuned, torch.randn(1, 1, 28, 28), "iterative",
                                 workdir=workdir)
    runner2.ana(eval_fn, args=(val_loader,))  # finished analysis: reused, nothing evaluated
    model2 = runner2.prune(removal_ratio=0.5, mode="slim")
    x = torch.randn(4, 1, 28, 28)
    assert abs(1 - count_macs(model2, x[:1]) / runner2.pruner.original_macs - 0.5) <= 0.01
    # channels zeroed by the first prune are removed again by the second
    first = model.uif_plan
    second = model2.uif_plan
    for gid, kept in second.kept.items():
        if gid in first.kept:
            assert set(kept.tolist()) <= set(first.kept[gid].tolist())
    assert all(torch.equal(before[k], resnet20.state_dict()[k]) for k in before)


@pytest.mark.slow
def test_sens_file_shape_and_preview(analysed):
    runner, workdir = analysed
    sens = read_json(workdir / f"{runner.name}.sens", kind="uif-explorer-sensitivity")
    assert sens["complete"] and sens["baseline"] > 80
    assert sens["num_groups"] == len(sens["groups"])
    prunable = [g for g in sens["groups"] if g["prunable"]]
    assert all([r for r, _ in g["curve"]] == list(RATIOS) for g in prunable)
    preview = runner.plan(0.35)
    assert abs(preview.achieved_removal - 0.35) <= 0.01
    assert preview.predicted_score <= sens["baseline"]
    assert preview.macs < preview.original_macs
    assert set(preview.groups.columns) >= {"name", "channels", "kept", "ratio"}


@pytest.mark.slow
def test_threshold_and_spec_path(analysed):
    runner, workdir = analysed
    sparse = runner.prune(threshold=0.05)
    assert (workdir / f"{runner.name}_threshold_0.05.spec").exists()
    spec = workdir / f"{runner.name}_ratio_0.2.spec"
    if not spec.exists():
        runner.prune(removal_ratio=0.2)
    again = runner.prune(spec_path=spec, mode="slim")
    assert sparse is not None and again is not None


@pytest.mark.slow
def test_guide_one_step_flow(resnet20, val_loader, tmp_path):
    runner = get_pruning_runner(resnet20, torch.randn(1, 1, 28, 28), "one_step", workdir=tmp_path)
    runner.search(gpus=["0"], calibration_fn=calibration_fn, calib_args=(val_loader,),
                  eval_fn=eval_fn, eval_args=(val_loader,), num_subnet=4, removal_ratio=0.5)
    model = runner.prune(removal_ratio=0.5, index=None)
    result = read_json(tmp_path / f"{runner.name}_ratio_0.5.search")
    assert [c["id"] for c in result["candidates"]] == [0, 1, 2, 3]
    assert all(abs(c["removal"] - 0.5) <= 0.01 for c in result["candidates"])
    best = max(result["candidates"], key=lambda c: c["score"])
    assert model.uif_plan.kept.keys() == {int(k) for k in best["kept_channels"]}
    first = runner.prune(removal_ratio=0.5, index=0)  # candidate 0, not "best"
    counts = {g: len(k) for g, k in first.uif_plan.kept.items()}
    assert counts == {int(g): n for g, n in result["candidates"][0]["kept_channels"].items()}
    assert (tmp_path / f"{runner.name}_ratio_0.5_0.spec").exists()
    assert (tmp_path / f"{runner.name}_ratio_0.5_best.spec").exists()
    with pytest.raises(ValueError, match="candidate id"):
        runner.prune(removal_ratio=0.5, index=7)


@pytest.mark.slow
def test_ready_made_functions_with_adaptive_bn(resnet20, val_loader, tmp_path):
    runner = get_pruning_runner(resnet20, torch.randn(1, 1, 28, 28), "one_step", workdir=tmp_path)
    result = runner.search(calibration_fn=adaptive_bn_calibration, calib_args=(val_loader, 4),
                           eval_fn=top1_accuracy, eval_args=(val_loader,), num_subnet=2,
                           removal_ratio=0.3)
    assert all(0 <= c["score"] <= 100 for c in result["candidates"])


@pytest.mark.parametrize("bad", [-1, 0, 1, 2, float("nan")])
def test_bad_ratios(analysed, bad):
    runner, _ = analysed
    with pytest.raises(PlanError, match="removal_ratio"):
        runner.prune(removal_ratio=bad)


@pytest.mark.parametrize("bad", [0, 10**9, -3, 2.5])
def test_bad_num_subnet(resnet20, val_loader, tmp_path, bad):
    runner = get_pruning_runner(resnet20, torch.randn(1, 1, 28, 28), "one_step", workdir=tmp_path)
    with pytest.raises(ValueError, match="num_subnet"):
        runner.search(eval_fn=eval_fn, eval_args=(val_loader,), num_subnet=bad,
                      removal_ratio=0.5)


def test_eval_fn_errors_keep_saved_results(resnet20, tmp_path):
    loader = torch_loader("test", limit=64, batch_size=64)
    runner = get_pruning_runner(resnet20, torch.randn(1, 1, 28, 28), "iterative",
                                workdir=tmp_path)
    calls = {"n": 0}

    def flaky(model, dl):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk on fire")
        return top1_accuracy(model, dl)

    with pytest.raises(AnalysisError, match="disk on fire"):
        runner.ana(flaky, args=(loader,), ratios=(0.5,))
    saved = read_json(tmp_path / f"{runner.name}.sens")
    assert saved["baseline"] is not None
    assert sum(len(g["curve"]) for g in saved["groups"]) == 1
    for value, exc in [(None, TypeError), ("abc", TypeError), (math.nan, ValueError)]:
        with pytest.raises(exc, match="eval_fn"):
            runner.ana(lambda m, dl, v=value: v, args=(loader,), ratios=(0.5,), forced=True)


def test_unfinished_analysis_of_other_weights_is_refused(resnet20, tmp_path):
    loader = torch_loader("test", limit=64, batch_size=64)
    runner = get_pruning_runner(resnet20, torch.randn(1, 1, 28, 28), "iterative",
                                workdir=tmp_path, name="r20")
    calls = {"n": 0}

    def stop_early(model, dl):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return top1_accuracy(model, dl)

    with pytest.raises(KeyboardInterrupt):
        runner.ana(stop_early, args=(loader,), ratios=(0.5,))
    other = copy.deepcopy(resnet20)
    with torch.no_grad():
        other.conv1.weight.mul_(1.5)
    runner2 = get_pruning_runner(other, torch.randn(1, 1, 28, 28), "iterative",
                                 workdir=tmp_path, name="r20")
    with pytest.raises(WorkspaceError, match="forced=True"):
        runner2.ana(top1_accuracy, args=(loader,), ratios=(0.5,))
    runner2.ana(top1_accuracy, args=(loader,), ratios=(0.5,), forced=True)
    from uif_explorer.models.torch_models import vgg_small

    runner3 = get_pruning_runner(vgg_small(), torch.randn(1, 1, 28, 28), "iterative",
                                 workdir=tmp_path, name="r20")
    with pytest.raises(WorkspaceError, match="another architecture"):
        runner3.ana(top1_accuracy, args=(loader,), ratios=(0.5,))


# -- real SIGKILLs of a real subprocess -------------------------------------------------------
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    import torch
    from uif_explorer import get_pruning_runner
    from uif_explorer.data import torch_loader
    from uif_explorer.torch.evaluation import top1_accuracy, adaptive_bn_calibration
    from uif_explorer.zoo import load_torch_sample
    import uif_explorer.io.workspace as ws

    workdir, what, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    counter = os.path.join(workdir, "evals.count")
    loader = torch_loader("test", limit=64, batch_size=64)
    if what.endswith("rename"):
        real, calls = os.replace, {"n": 0}
        def replace(src, dst):
            calls["n"] += 1
            if calls["n"] == kill_at:  # written and fsynced, not yet renamed
                os.kill(os.getpid(), signal.SIGKILL)
            real(src, dst)
        ws.os.replace = replace

    def counted(model, dl):
        with open(counter, "a") as fh:
            fh.write("x")
        return top1_accuracy(model, dl)

    model = load_torch_sample("resnet20")
    if what.startswith("ana"):
        r = get_pruning_runner(model, torch.randn(1, 1, 28, 28), "iterative", workdir=workdir,
                               name="r20")
        r.ana(counted, args=(loader,), ratios=(0.4, 0.8))
    else:
        r = get_pruning_runner(model, torch.randn(1, 1, 28, 28), "one_step", workdir=workdir,
                               name="r20")
        r.search(calibration_fn=adaptive_bn_calibration, calib_args=(loader, 2),
                 eval_fn=counted, eval_args=(loader,), num_subnet=5, removal_ratio=0.4)
""")


def _run_child(workdir: Path, what: str, kill_at: int) -> None:
    proc = start_child(workdir, CHILD, str(workdir), what, str(kill_at))
    # a "rename" child kills itself inside the workspace write
    kill_when_counted(proc, workdir / "evals.count", None if what.endswith("rename") else kill_at,
                      timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("what", ["ana", "ana_rename", "search", "search_rename"])
def test_sigkill_then_resume(tmp_path, resnet20, what):
    loader = torch_loader("test", limit=64, batch_size=64)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    killed.mkdir()
    clean.mkdir()
    _run_child(killed, what, 5)
    suffix = ".sens" if what.startswith("ana") else "_ratio_0.4.search"
    path = killed / f"r20{suffix}"
    saved = read_json(path)  # old or new, never half-written
    calls = {"n": 0}

    def counted(model, dl):
        calls["n"] += 1
        return top1_accuracy(model, dl)

    def run(workdir: Path, fn) -> dict:
        if what.startswith("ana"):
            r = get_pruning_runner(resnet20, torch.randn(1, 1, 28, 28), "iterative",
                                   workdir=workdir, name="r20")
            return r.ana(fn, args=(loader,), ratios=(0.4, 0.8))
        r = get_pruning_runner(resnet20, torch.randn(1, 1, 28, 28), "one_step",
                               workdir=workdir, name="r20")
        return r.search(calibration_fn=adaptive_bn_calibration, calib_args=(loader, 2),
                        eval_fn=fn, eval_args=(loader,), num_subnet=5, removal_ratio=0.4)

    if what.startswith("ana"):
        done = (saved["baseline"] is not None) + sum(len(g["curve"]) for g in saved["groups"])
        done += len(saved["whole_model"]["points"])  # the whole-model plans measured last
        total = 1 + 2 * sum(g["prunable"] for g in saved["groups"]) + len(WHOLE_MODEL_RATIOS)
    else:
        done = (saved["baseline"]["score"] is not None) + sum(
            c["score"] is not None for c in saved["candidates"])
        total = 1 + 5
    assert 0 < done < total
    run(killed, counted)
    assert calls["n"] == total - done  # only the steps not yet saved
    run(clean, counted)  # the same eval_fn: the files record its name in "protocol"
    a, b = read_json(path), read_json(clean / f"r20{suffix}")
    if not what.startswith("ana"):
        for c in a["candidates"] + b["candidates"]:
            c.pop("worker_pid", None)
    assert a == b


@pytest.mark.slow
def test_process_pool_and_ray_run_elsewhere(resnet20, tmp_path):
    loader = torch_loader("test", limit=64, batch_size=64)
    runner = get_pruning_runner(resnet20, torch.randn(1, 1, 28, 28), "one_step",
                                workdir=tmp_path)
    for executor, ratio in (("process", 0.3), ("ray", 0.4)):
        result = runner.search(eval_fn=top1_accuracy, eval_args=(loader,), num_subnet=6,
                               removal_ratio=ratio, executor=executor)
        pids = {c["worker_pid"] for c in result["candidates"]}
        assert os.getpid() not in pids and len(pids) >= 2, (executor, pids)
        assert all(c["score"] is not None for c in result["candidates"])
    import ray

    ray.shutdown()


@pytest.mark.slow
def test_worked_example_runs(tmp_path):
    res = subprocess.run(
        [sys.executable, str(REPO / "examples" / "pytorch_resnet20.py"), "--quick",
         "--workdir", str(tmp_path / "vai"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "one-step best" in res.stdout
    assert (tmp_path / "out" / "model_slim.pth").exists()

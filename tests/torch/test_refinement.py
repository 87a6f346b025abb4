"""Refined one-step search on the sample ResNet-20 (issue 13 item 4): successive halving with
short fine-tunes, every stage in the ``.search`` file, resumable after SIGKILL mid-stage, and
``prune()`` building the refined winner.

A child process runs ``search(..., refine=...)`` and is killed once it is fine-tuning; the
rerun here fine-tunes only the candidates whose stage score was not saved.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

from uif_explorer import get_pruning_runner
from uif_explorer.core.refinement import Refinement
from uif_explorer.data import torch_loader
from uif_explorer.io.workspace import read_json
from uif_explorer.torch.evaluation import adaptive_bn_calibration, top1_accuracy
from uif_explorer.torch.finetune import fine_tune
from uif_explorer.zoo import load_torch_sample

REPO = Path(__file__).resolve().parents[2]
SEARCH = dict(num_subnet=4, removal_ratio=0.4)
STEPS, KEEP = 2, 4  # stages: 4 candidates x 2 batches, then 2 x 4 batches

CHILD = textwrap.dedent("""
    import os, sys
    import torch
    from uif_explorer import get_pruning_runner
    from uif_explorer.core.refinement import Refinement
    from uif_explorer.data import torch_loader
    from uif_explorer.torch.evaluation import adaptive_bn_calibration, top1_accuracy
    from uif_explorer.torch.finetune import fine_tune
    from uif_explorer.zoo import load_torch_sample

    workdir = sys.argv[1]
    counter = os.path.join(workdir, "finetunes.count")
    loader = torch_loader("test", limit=64, batch_size=32)
    train = torch_loader("train", limit=256, batch_size=32)

    def counted_finetune(model, dl, max_batches=None):
        with open(counter, "a") as fh:
            fh.write("x")
        fine_tune(model, dl, max_batches=max_batches)

    runner = get_pruning_runner(load_torch_sample("resnet20"), torch.randn(1, 1, 28, 28),
                                "one_step", workdir=workdir, name="r20")
    runner.search(calibration_fn=adaptive_bn_calibration, calib_args=(loader, 2),
                  eval_fn=top1_accuracy, eval_args=(loader,), num_subnet=4, removal_ratio=0.4,
                  refine=Refinement(finetune_fn=counted_finetune, finetune_args=(train,),
                                    steps=2, keep=4))
""")


def _kill_child_while_fine_tuning(workdir: Path, after: int) -> None:
    script = workdir / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), str(workdir)],
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    counter = workdir / "finetunes.count"
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            if counter.exists() and len(counter.read_text()) >= after:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL


def test_refinement_resumes_after_sigkill_and_prune_builds_the_winner(tmp_path):
    _kill_child_while_fine_tuning(tmp_path, after=2)
    path = tmp_path / "r20_ratio_0.4.search"
    saved = read_json(path)
    assert saved["complete"] and not saved["refinement"]["complete"]
    first = saved["refinement"]["stages"][0]
    assert first["budget"] == STEPS and len(first["candidates"]) == KEEP
    assert first["candidates"] == saved["ranking"][:KEEP]  # the best by adaptive-BN score
    done = len(first["scores"])
    assert 1 <= done < KEEP

    loader = torch_loader("test", limit=64, batch_size=32)
    train = torch_loader("train", limit=256, batch_size=32)
    calls = []

    def counted_finetune(model, dl, max_batches=None):  # the child's name: same settings
        calls.append(max_batches)
        fine_tune(model, dl, max_batches=max_batches)

    refine = Refinement(finetune_fn=counted_finetune, finetune_args=(train,), steps=STEPS,
                        keep=KEEP)
    runner = get_pruning_runner(load_torch_sample("resnet20"), torch.randn(1, 1, 28, 28),
                                "one_step", workdir=tmp_path, name="r20")
    data = runner.search(calibration_fn=adaptive_bn_calibration, calib_args=(loader, 2),
                         eval_fn=top1_accuracy, eval_args=(loader,), refine=refine, **SEARCH)
    assert calls == [STEPS] * (KEEP - done) + [2 * STEPS] * 2  # only what was not saved
    state = data["refinement"]
    assert state["complete"] and [s["budget"] for s in state["stages"]] == [STEPS, 2 * STEPS]
    assert {k: first["scores"][k] for k in first["scores"]} == {
        k: state["stages"][0]["scores"][k] for k in first["scores"]}  # saved scores kept
    second = state["stages"][1]
    stage1 = {int(k): v for k, v in state["stages"][0]["scores"].items()}
    assert set(second["candidates"]) == set(sorted(stage1, key=lambda c: -stage1[c])[:2])
    assert second["images"] == 64
    winner = state["winner"]
    scores2 = {int(k): v for k, v in second["scores"].items()}
    assert scores2[winner] == max(scores2.values())
    assert read_json(path) == data

    pruned = runner.prune(removal_ratio=0.4)  # index=None: the refined winner
    spec = read_json(tmp_path / "r20_ratio_0.4_best.spec")
    assert spec["candidate"] == winner
    by_index = runner.prune(removal_ratio=0.4, index=winner)
    assert {k: v.shape for k, v in pruned.state_dict().items()} == {
        k: v.shape for k, v in by_index.state_dict().items()}

    calls.clear()
    runner.search(calibration_fn=adaptive_bn_calibration, calib_args=(loader, 2),
                  eval_fn=top1_accuracy, eval_args=(loader,), refine=refine, **SEARCH)
    assert calls == []  # finished: nothing is fine-tuned again

"""Refined one-step search on the sample ResNet-20 (issue 13 item 4): successive halving with
short fine-tunes, every stage in the ``.search`` file, resumable after SIGKILL mid-stage, and
``prune()`` building the refined winner.

A child process runs ``search(..., refine=...)`` and is killed once it is fine-tuning; the
rerun here fine-tunes only the candidates whose stage score was not saved.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch
from killing import kill_when_counted, start_child

from uif_explorer import get_pruning_runner
from uif_explorer.core.refinement import Refinement, _prefer_anchor, first_stage
from uif_explorer.core.uncertainty import Measured, within_noise
from uif_explorer.data import torch_loader
from uif_explorer.io.workspace import read_json
from uif_explorer.torch.evaluation import adaptive_bn_calibration, top1_accuracy
from uif_explorer.torch.finetune import fine_tune
from uif_explorer.zoo import load_torch_sample

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
    proc = start_child(workdir, CHILD, str(workdir))
    kill_when_counted(proc, workdir / "finetunes.count", after, timeout=600)


def test_refinement_resumes_after_sigkill_and_prune_builds_the_winner(tmp_path):
    _kill_child_while_fine_tuning(tmp_path, after=2)
    path = tmp_path / "r20_ratio_0.4.search"
    saved = read_json(path)
    assert saved["complete"] and not saved["refinement"]["complete"]
    first = saved["refinement"]["stages"][0]
    assert first["budget"] == STEPS and len(first["candidates"]) == KEEP
    uniform = next(c["id"] for c in saved["candidates"] if c.get("origin") == "uniform")
    # the best by adaptive-BN score, the uniform plan taking the last place when not among them
    assert first["candidates"] == first_stage(saved["ranking"], KEEP, uniform)
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
    assert winner == expected_winner(second, uniform)
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


def expected_winner(stage: dict, uniform: int) -> int:
    """The best of the last stage, or the uniform plan when the best beats it within noise."""
    scores = {int(k): v for k, v in stage["scores"].items()}
    best = max(scores, key=lambda c: (scores[c], -c))
    if uniform not in scores or best == uniform:
        return best
    a, b = (Measured.of(scores[c], stage["images"]) for c in (best, uniform))
    return uniform if within_noise(a, b) else best


def test_first_stage_always_carries_the_uniform_plan():
    assert first_stage([3, 1, 4, 0], 2, 4) == [3, 4]  # last place goes to the anchor
    assert first_stage([3, 1, 4, 0], 3, 1) == [3, 1, 4]  # already among the best
    assert first_stage([3, 1, 4, 0], 1, 0) == [3, 0]  # keep=1: added, the last stage has two
    assert first_stage([3, 1, 4, 0], 2, None) == [3, 1]  # Refinement(uniform=False)
    assert "uniform" not in Refinement(uniform=False).settings(8, "torch")  # old files match
    close = {"scores": {"2": 88.6, "12": 88.4}, "images": 500}  # the bench's seed 0
    assert _prefer_anchor({}, close, 2, 12) == 12  # within noise: uniform
    assert _prefer_anchor({}, {**close, "scores": {"2": 95.0, "12": 80.0}}, 2, 12) == 2
    assert _prefer_anchor({}, close, 2, None) == 2  # no uniform candidate


def test_refinement_scores_the_uniform_plan_and_can_pick_it(tmp_path):
    """The uniform L1 plan (the bench's baseline) is one more candidate, scored with the
    search's protocol and fine-tuned in the first stage, so prune() can build it."""
    loader = torch_loader("test", limit=16, batch_size=16)
    train = torch_loader("train", limit=16, batch_size=16)
    runner = get_pruning_runner(load_torch_sample("vgg_small"), torch.randn(1, 1, 28, 28),
                                "one_step", workdir=tmp_path, name="vgg")
    job = dict(calibration_fn=adaptive_bn_calibration, calib_args=(loader, 1),
               eval_fn=top1_accuracy, eval_args=(loader,), num_subnet=2, removal_ratio=0.75)
    refine = Refinement(finetune_args=(train,), steps=1, keep=1)
    data = runner.search(refine=refine, **job)
    uniform = [c for c in data["candidates"] if c.get("origin") == "uniform"]
    assert len(uniform) == 1 and uniform[0]["id"] == 2 and uniform[0]["score"] is not None
    pr = runner.pruner
    plan = pr.plan_for_removal(0.75, strict=False)  # what bench/quality.py calls uniform L1
    assert uniform[0]["kept_channels"] == {str(g): len(k) for g, k in plan.kept.items()}
    assert abs(uniform[0]["removal"] - 0.75) < 0.01
    stage = data["refinement"]["stages"][0]
    assert 2 in stage["candidates"] and len(stage["candidates"]) == 2
    assert data["refinement"]["winner"] == expected_winner(stage, 2)
    again = runner.search(refine=refine, **job)  # resumed: no second uniform candidate
    assert [c["id"] for c in again["candidates"]] == [0, 1, 2]
    runner.prune(removal_ratio=0.75)
    spec = read_json(tmp_path / "vgg_ratio_0.75_best.spec")
    assert spec["candidate"] == data["refinement"]["winner"]

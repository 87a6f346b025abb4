"""Sandwich-rule training (torch/ofa/training.py): determinism, clipping, two DDP processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from ofa_models import state_digest
from topologies import build

from uif_explorer.torch.ofa import OFAPruner, sandwich_step, train

REPO = Path(__file__).resolve().parents[3]


def test_train_sandwich_rule_is_deterministic_and_reports_progress():
    model, x = build("concat")
    pruner = OFAPruner(model, x)
    a, b = (pruner.ofa_model(channel_divisible=4) for _ in range(2))
    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(12, 3, 16, 16, generator=gen),
                                          torch.randint(0, 5, (12,), generator=gen))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    calls = []
    table = train(a, model, loader, epochs=2, lr=0.05,
                  progress=lambda done, total, info: calls.append((done, total, info)))
    train(b, model, loader, epochs=2, lr=0.05, progress=lambda *_: None)
    assert [c[:2] for c in calls] == [(i, 6) for i in range(1, 7)]
    assert {"epoch", "loss", "lr"} <= set(calls[0][2])
    assert list(table["epoch"]) == [1, 2] and np.isfinite(table["loss"]).all()
    assert state_digest(a) == state_digest(b)  # same seed, same subnets, same weights
    assert state_digest(a) != state_digest(pruner.ofa_model(channel_divisible=4))
    assert not a.training and a.ofa_space.active == a.ofa_space.choice.largest()


def test_sandwich_step_clips_and_seeds_per_step():
    model, x = build("depthwise")
    ofa = OFAPruner(model, x).ofa_model(channel_divisible=4)
    seen = []
    apply = ofa.ofa_space.apply
    ofa.ofa_space.apply = lambda m, g: (seen.append(g), apply(m, g))[1]
    opt = torch.optim.SGD(ofa.parameters(), lr=0.0)
    y = torch.tensor([0, 1])
    out = sandwich_step(ofa, model, x * 100, y, opt, step=5)
    assert set(out) == {"loss", "max", "min", "random0", "random1"}
    assert all(p.grad is None or p.grad.abs().max() <= 1.0 for p in ofa.parameters())
    sandwich_step(ofa, model, x, y, opt, step=5)
    assert seen[:5] == seen[5:10]  # the same step draws the same subnets
    assert seen[0] == ofa.ofa_space.choice.largest() and seen[1] == ofa.ofa_space.choice.smallest()


def test_ddp_two_processes_train_identically(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO / "tests" / "support" / "ofa_ddp_worker.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == 2 and r0["pid"] != r1["pid"]
    assert r0["before"] == r1["before"]
    assert r0["after"] != r0["before"] and r1["after"] != r1["before"]  # both trained
    assert r0["after_params"] == r1["after_params"] and r0["after"] == r1["after"]
    assert r0["activated"] == r1["activated"] and r0["steps"] == 3 * 5
    assert r0["loss"] != r1["loss"]  # each rank saw its own data

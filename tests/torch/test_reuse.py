"""Scoring with reused activations (uif_explorer.torch.fastscore) gives the very scores of full
evaluation, on the sample models and a torchvision model, and falls back when it cannot."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from fastscore_cases import full_scores, one_group_items
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from uif_explorer.core.scores import ScoreJob
from uif_explorer.data import torch_loader
from uif_explorer.torch.apply import make_sparse
from uif_explorer.torch.evaluation import adaptive_bn_calibration, top1_accuracy
from uif_explorer.torch.fastscore import fast_scores, reuse_scorer, suggest_batch_size
from uif_explorer.torch.pruner import ChannelPruner
from uif_explorer.torch.runners import get_pruning_runner
from uif_explorer.zoo import load_torch_sample

_items, _full = one_group_items, full_scores


def _reused(model: nn.Module, pr: ChannelPruner, items: list, loader, **kw) -> dict:
    scores = fast_scores(model, pr.capture, items, ScoreJob.of(top1_accuracy, (loader,)), **kw)
    assert scores is not None, "expected the reuse path to apply"
    return {i: s for i, s, _ in scores}


def test_analysis_file_is_the_same_with_and_without_reuse(tmp_path, capsys):
    model = load_torch_sample("resnet20")
    loader = torch_loader(limit=64, batch_size=32)
    files = {}
    for reuse in (True, False):
        runner = get_pruning_runner(model, (1, 1, 28, 28), workdir=tmp_path / str(reuse))
        seen: list[dict] = []
        runner.ana(top1_accuracy, args=(loader,), ratios=(0.3, 0.6), reuse_activations=reuse,
                   progress=lambda done, total, info, seen=seen: seen.append(info))
        path = next((tmp_path / str(reuse)).rglob("*.sens"))
        files[reuse] = json.loads(path.read_text())
        assert all(info["eta_s"] >= 0 for info in seen) and seen[-1]["eta_s"] == 0
    fast, full = files[True], files[False]
    assert fast["baseline"] == full["baseline"]
    assert [g["curve"] for g in fast["groups"]] == [g["curve"] for g in full["groups"]]
    assert sum(len(g["curve"]) for g in fast["groups"]) >= 20
    assert fast == full  # nothing in the file says which way it was scored


def test_mobilenetv2_sample_scores_identical():
    model = load_torch_sample("mobilenetv2_small")
    loader = torch_loader(limit=48, batch_size=16)
    pr = ChannelPruner(model, torch.zeros(1, 1, 28, 28), [])
    items = _items(pr, ratios=(0.5,), every=3)
    assert _reused(model, pr, items, loader) == _full(model, pr, items, loader)


def test_torchvision_resnet18_logits_and_scores_identical():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    data = TensorDataset(torch.randn(16, 3, 64, 64), torch.randint(0, 10, (16,)))
    loader = DataLoader(data, batch_size=8)
    pr = ChannelPruner(model, torch.zeros(1, 3, 64, 64), [])
    items = _items(pr, ratios=(0.5,), every=4)
    scorer = reuse_scorer(model, pr.capture, ScoreJob.of(top1_accuracy, (loader,)))
    x = data.tensors[0][:8]
    step = scorer.step(1, items[1][0])
    cache, logits = scorer._record(x, set(step.frontier), full=True)
    with torch.no_grad():
        assert torch.equal(logits, model(x))
        sparse = make_sparse(model, pr.capture, items[1][0]).eval()
        assert torch.equal(scorer._changed_logits(step, cache), sparse(x))
    assert len(step.order) < len(scorer.program.nodes)  # only the changed part ran
    assert _reused(model, pr, items, loader) == _full(model, pr, items, loader)


def test_small_memory_budget_splits_the_work_or_falls_back():
    model = load_torch_sample("resnet20")
    loader = torch_loader(limit=32, batch_size=16)
    pr = ChannelPruner(model, torch.zeros(1, 1, 28, 28), [])
    items = _items(pr, ratios=(0.6,), every=2)
    expected = _full(model, pr, items, loader)
    job = ScoreJob.of(top1_accuracy, (loader,))
    # room for the largest group's activations (3.2 MB) but not all (9.3 MB): same scores
    scorer = reuse_scorer(model, pr.capture, job, budget_bytes=4_000_000)
    assert {i: s for i, s, _ in scorer.score(items)} == expected
    assert scorer.n_chunks > 1
    assert fast_scores(model, pr.capture, items, job, budget_bytes=1000) is None


def test_jobs_it_cannot_run_exactly_fall_back():
    model = load_torch_sample("resnet20")
    loader = torch_loader(limit=16, batch_size=16)
    pr = ChannelPruner(model, torch.zeros(1, 1, 28, 28), [])
    items = _items(pr, every=6)

    def own_eval(m, data):
        return top1_accuracy(m, data)

    for job in (ScoreJob.of(own_eval, (loader,)),  # arbitrary user code
                ScoreJob.of(top1_accuracy, (loader,), adaptive_bn_calibration, (loader, 1)),
                ScoreJob.of(top1_accuracy, (loader,), mode="slim")):
        assert fast_scores(model, pr.capture, items, job) is None
    job = ScoreJob.of(top1_accuracy, (loader,))
    assert fast_scores(model, pr.capture, items, job, enabled=False) is None
    assert fast_scores(model, pr.capture, items, job, executor="process") is None
    one_shot = ScoreJob.of(top1_accuracy, (iter(loader),))
    assert fast_scores(model, pr.capture, items, one_shot) is None


class _ReadsAfterInPlace(nn.Module):
    """Reads ``a`` after ``relu_`` overwrote it: a copy kept from before would differ."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        b = torch.relu_(a)
        y = self.head(b) + a
        return self.fc(y.mean(dim=(2, 3)))


def test_values_read_after_in_place_ops_fall_back():
    torch.manual_seed(0)
    model = _ReadsAfterInPlace().eval()
    data = TensorDataset(torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,)))
    loader = DataLoader(data, batch_size=4)
    pr = ChannelPruner(model, torch.zeros(1, 3, 8, 8), [])
    items = _items(pr)
    assert fast_scores(model, pr.capture, items, ScoreJob.of(top1_accuracy, (loader,))) is None


@pytest.mark.parametrize("budget, expected", [(10**12, 256), (1, 1)])
def test_suggested_batch_size_follows_the_memory_budget(budget, expected):
    model = load_torch_sample("resnet20")
    assert suggest_batch_size(model, torch.zeros(1, 1, 28, 28), budget) == expected
    middle = suggest_batch_size(model, torch.zeros(1, 1, 28, 28), 20_000_000)
    assert 1 < middle < 256

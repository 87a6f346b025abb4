"""Attempt 2 of the analysis speed-up (torch/fastscore/fused.py): the changed layers of each
step run with Conv+BatchNorm folded, channels-last; scores stay those of full evaluation, the
per-item costs feed the time estimate, and a fold that misses falls back to exact reuse."""

from __future__ import annotations

import torch
from fastscore_cases import full_scores, one_group_items

from uif_explorer.core.scores import ScoreJob
from uif_explorer.data import torch_loader
from uif_explorer.torch.evaluation import top1_accuracy
from uif_explorer.torch.fastscore import fused, reuse_scorer
from uif_explorer.torch.pruner import ChannelPruner
from uif_explorer.zoo import load_torch_sample


def _case():
    model = load_torch_sample("resnet20")
    loader = torch_loader(limit=16, batch_size=8)
    pr = ChannelPruner(model, torch.zeros(1, 1, 28, 28), [])
    return model, loader, pr, one_group_items(pr, ratios=(0.5,), every=4)


def test_folded_suffix_gives_the_scores_of_full_evaluation():
    model, loader, pr, items = _case()
    scorer = reuse_scorer(model, pr.capture, ScoreJob.of(top1_accuracy, (loader,)), fused=True)
    scores = scorer.score(items)
    assert scorer.folder is not None, "the folded layers should pass the first-batch check"
    step = scorer.step(1, items[1][0])
    assert any(isinstance(m, torch.nn.Identity) for m in step.modules.values())  # BN folded
    got = {i: s for i, s, _ in scores}
    assert got == full_scores(model, pr, items, loader)
    assert set(scores.costs) == set(got) and all(c > 0 for c in scores.costs.values())
    assert scores.costs[0] == max(scores.costs.values())  # the baseline runs everything


def test_a_fold_off_the_mark_falls_back_to_exact_reuse(monkeypatch):
    model, loader, pr, items = _case()
    monkeypatch.setattr(fused, "RTOL", -1.0)  # no folded logits can be this close
    scorer = reuse_scorer(model, pr.capture, ScoreJob.of(top1_accuracy, (loader,)), fused=True)
    got = {i: s for i, s, _ in scorer.score(items[:2])}
    assert scorer.folder is None
    assert got == full_scores(model, pr, items[:2], loader)

"""The ready-made functions of the PyTorch runners: top-1 eval, adaptive BN, label-free score,
score checking and fine-tuning (dense, distilled and sparse), on tiny models and the bundled
Fashion-MNIST subset."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uif_explorer.data import torch_loader
from uif_explorer.torch.evaluation import (
    adaptive_bn_calibration,
    calibrate_and_evaluate,
    check_score,
    label_free_score,
    make_label_free_eval,
    top1_accuracy,
)
from uif_explorer.torch.finetune import fine_tune
from uif_explorer.torch.pruner import ChannelPruner

MASK_SUFFIX = "_uif_mask"


class TinyCNN(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(2 * width * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(self.drop(F.adaptive_avg_pool2d(x, 4).flatten(1)))


class Constant(nn.Module):
    """Always predicts class ``k``."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.fc = nn.Linear(28 * 28, 10)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.fill_(-5.0)
            self.fc.bias[k] = 5.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def tiny(seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    return TinyCNN()


def train_data(batch_size: int = 64):
    return torch_loader("train", source="bundled", batch_size=batch_size, limit=512)


def eval_data(batch_size: int = 64):
    return torch_loader("test", source="bundled", batch_size=batch_size, limit=256)


def mean_ce(model: nn.Module, loader) -> float:
    model.eval()
    with torch.no_grad():
        losses = [F.cross_entropy(model(x), y, reduction="sum") for x, y in loader]
    return float(sum(losses)) / sum(len(y) for _, y in loader)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core machine two threads
    make them many times slower. Restored after this module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained():
    """A tiny CNN fine-tuned from scratch for 2 epochs on 512 bundled images (shared)."""
    model = tiny(0)
    loader = train_data()
    before = mean_ce(model, loader)
    calls = []
    table = fine_tune(
        model, loader, epochs=2, lr=0.1, eval_loader=eval_data(),
        progress=lambda done, total, info: calls.append((done, total, dict(info))),
    )
    return {"model": model, "table": table, "calls": calls, "ce_before": before,
            "ce_after": mean_ce(model, loader), "loader": loader}


# -- top-1 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [0, 7])
def test_top1_of_constant_model_is_share_of_its_class(k):
    loader = eval_data()
    labels = torch.cat([y for _, y in loader])
    model = Constant(k).train()
    acc = top1_accuracy(model, loader)
    assert acc == pytest.approx(100.0 * float((labels == k).float().mean()))
    assert model.training  # mode restored
    first = next(iter(loader))[1]
    assert top1_accuracy(model, loader, max_batches=1) == pytest.approx(
        100.0 * float((first == k).float().mean()))


def test_top1_percent_and_guide_shaped_loaders(trained):
    model = copy.deepcopy(trained["model"])
    acc = top1_accuracy(model, eval_data())
    assert 0.0 <= acc <= 100.0
    assert acc > 30.0  # trained above chance (10 %)
    batches = [(x, y) for x, y in eval_data()]  # any iterable of (images, labels) works
    assert top1_accuracy(model, batches) == pytest.approx(acc)
    assert top1_accuracy.score_name == "top-1 accuracy (%)"


# -- adaptive BN -----------------------------------------------------------------------------
def bn_input_stats(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, tuple]:
    """Per BN: mean over batches of the batch mean and unbiased batch variance of its input,
    computed directly with the network in train mode (what cumulative BN averaging gives)."""
    probe = copy.deepcopy(model).train()
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for name, m in probe.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            def hook(_m, args, name=name):
                x = args[0]
                seen.setdefault(name, []).append(
                    (x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=True)))
            m.register_forward_pre_hook(hook)
    with torch.no_grad():
        for x in batches:
            probe(x)
    return {name: (torch.stack([m for m, _ in v]).mean(0), torch.stack([v_ for _, v_ in v]).mean(0))
            for name, v in seen.items()}


def test_adaptive_bn_sets_data_statistics_and_restores_momentum_and_mode():
    model = tiny(1)
    model.bn1.momentum = 0.3
    model.eval()
    loader = eval_data()  # not shuffled: the same batches twice
    expected = bn_input_stats(model, [x for x, _ in loader][:3])
    adaptive_bn_calibration(model, loader, number_forward=3)
    for name, (mean, var) in expected.items():
        bn = model.get_submodule(name)
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-4, atol=1e-5)
        assert int(bn.num_batches_tracked) == 3
    assert model.bn1.momentum == 0.3 and model.bn2.momentum == 0.1
    assert not any(m.training for m in model.modules())

    # bare-tensor batches, and a mixed train/eval state comes back exactly
    model.train()
    model.drop.eval()
    adaptive_bn_calibration(model, [x for x, _ in loader], number_forward=100)
    assert int(model.bn1.num_batches_tracked) == 4  # the loader's 4 batches, no more
    assert model.training and model.bn1.training and not model.drop.training


def test_calibrate_and_evaluate_returns_percent(trained):
    model = copy.deepcopy(trained["model"])
    acc = calibrate_and_evaluate(model, train_data(), eval_data(), number_forward=4)
    assert 0.0 <= acc <= 100.0
    assert int(model.bn1.num_batches_tracked) == 4


# -- label-free ------------------------------------------------------------------------------
def test_label_free_scores(trained):
    reference = trained["model"]
    reference.train()  # whatever mode it is in comes back, and its statistics stay
    before = snapshot(reference)
    inputs = [x for x, _ in eval_data()]  # unlabelled: bare tensors
    same = copy.deepcopy(reference)
    assert label_free_score(same, reference, inputs, "agreement") == 100.0
    assert label_free_score(same, reference, inputs, "kl") == pytest.approx(0.0, abs=1e-6)

    torch.manual_seed(3)
    noisy = copy.deepcopy(reference)
    with torch.no_grad():
        for p in noisy.parameters():
            p.add_(torch.randn_like(p) * p.std().clamp_min(1e-3))
    agreement = label_free_score(noisy, reference, eval_data(), "agreement")  # tuples too
    kl = label_free_score(noisy, reference, inputs, "kl")
    assert 0.0 <= agreement < 100.0
    assert kl < -1e-3
    assert reference.training
    assert_same(reference, before)
    reference.eval()


def test_make_label_free_eval_labels_and_caches(trained):
    reference = copy.deepcopy(trained["model"])
    loader = eval_data()
    eval_agree = make_label_free_eval(reference, "agreement")
    eval_kl = make_label_free_eval(reference, metric="kl")
    assert eval_agree.score_name == "label-free agreement with the original model (%)"
    assert eval_kl.score_name == "label-free -KL to the original model"
    model = copy.deepcopy(reference)
    assert eval_agree(model, loader) == 100.0
    assert eval_kl(model, loader) == pytest.approx(0.0, abs=1e-6)
    assert eval_kl(model, loader) == pytest.approx(0.0, abs=1e-6)  # from the cache
    with torch.no_grad():  # the reference changes in place: cached outputs are dropped
        reference.fc.bias.add_(torch.linspace(-2, 2, 10))
    assert eval_kl(model, loader) < -1e-3


# -- scores from user code -------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    (1, 1.0), (72.5, 72.5), (np.float32(3.5), 3.5), (np.int64(4), 4.0),
    (torch.tensor(5.25), 5.25), (torch.tensor([6.0]), 6.0), (np.array(7.0), 7.0),
])
def test_check_score_accepts_numbers(value, expected):
    assert check_score(value, "eval_fn") == expected


@pytest.mark.parametrize("value, error", [
    (None, TypeError), ("abc", TypeError), (True, TypeError), (float("nan"), ValueError),
    (math.inf, ValueError), (-math.inf, ValueError), (torch.tensor(float("nan")), ValueError),
    (torch.tensor([1.0, 2.0]), ValueError),
])
def test_check_score_rejects_non_finite_and_non_numbers(value, error):
    with pytest.raises(error, match=r"eval_fn returned .*; it must return a finite number "
                                    r"\(higher is better unless higher_is_better=False\)"):
        check_score(value, "eval_fn")


# -- fine-tuning -----------------------------------------------------------------------------
def test_fine_tune_lowers_loss_and_reports_progress(trained):
    table, calls = trained["table"], trained["calls"]
    assert list(table.columns) == [
        "epoch", "train_loss", "train_accuracy", "eval_accuracy", "lr", "seconds"]
    assert list(table["epoch"]) == [1, 2]
    assert table["train_loss"].iloc[1] < table["train_loss"].iloc[0]
    assert trained["ce_after"] < trained["ce_before"]
    assert table["eval_accuracy"].between(0, 100).all()
    assert [done for done, _, _ in calls] == list(range(1, 17))  # 2 epochs x 8 batches
    assert {total for _, total, _ in calls} == {16}
    lrs = [info["lr"] for _, _, info in calls]
    assert lrs[0] == pytest.approx(0.1) and all(a > b for a, b in zip(lrs, lrs[1:]))  # cosine
    assert all(math.isfinite(info["loss"]) for _, _, info in calls)
    assert not trained["model"].training  # left in eval mode


def test_fine_tune_distillation_runs_and_leaves_teacher_alone(trained):
    teacher = trained["model"]
    teacher.train()
    before = snapshot(teacher)
    student = tiny(5)
    table = fine_tune(student, train_data(), epochs=1, lr=0.02, optimizer="adam",
                      teacher=teacher, distill_weight=0.7, temperature=2.0, max_batches=3)
    assert len(table) == 1 and math.isfinite(table["train_loss"].iloc[0])
    assert "eval_accuracy" not in table.columns
    assert teacher.training
    assert_same(teacher, before)
    teacher.eval()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_sparse_model_keeps_zeros_through_fine_tune(trained, optimizer):
    model = copy.deepcopy(trained["model"]).eval()
    pr = ChannelPruner(model, torch.randn(1, 1, 28, 28))
    plan = pr.plan(0.5, channel_divisible=1)
    sparse = pr.sparse_model(plan)
    pruned: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for mod_name, module in sparse.named_modules():
        for buf_name, mask in module.named_buffers(recurse=False):
            if buf_name.endswith(MASK_SUFFIX) and buf_name != "kept" + MASK_SUFFIX:
                target = getattr(module, buf_name[: -len(MASK_SUFFIX)])
                zero = target.detach() == 0
                assert zero[mask == 0].all()
                pruned[f"{mod_name}.{buf_name}"] = (target, zero)
    assert any(zero.any() for _, zero in pruned.values())
    weight_before = sparse.conv2.weight.detach().clone()
    fine_tune(sparse, train_data(), epochs=1, lr=0.05, optimizer=optimizer,
              weight_decay=5e-4, max_batches=3)
    adaptive_bn_calibration(sparse, train_data(), number_forward=2)
    for name, (target, zero) in pruned.items():
        assert (target.detach()[zero] == 0).all(), name
    assert not torch.equal(sparse.conv2.weight, weight_before)  # kept entries did train


# -- clear errors ----------------------------------------------------------------------------
def test_empty_loader_errors():
    model = tiny(0)
    empty = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
        torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long)), batch_size=8)
    for call in (
        lambda: top1_accuracy(model, empty),
        lambda: adaptive_bn_calibration(model, empty),
        lambda: label_free_score(model, model, [], "kl"),
        lambda: fine_tune(model, empty),
    ):
        with pytest.raises(ValueError, match=r"Expected at least one batch .*Received: "):
            call()


def test_labels_out_of_range_and_unknown_metric():
    model = tiny(0)
    x, y = next(iter(eval_data()))
    y_bad = y.clone()
    y_bad[0] = 14
    bad = [(x, y_bad)]
    pattern = r"Expected labels in the range 0\.\.9: the model has 10 outputs\. Received: .*14"
    with pytest.raises(ValueError, match=pattern):
        top1_accuracy(model, bad)
    with pytest.raises(ValueError, match=pattern):
        fine_tune(model, bad)
    with pytest.raises(ValueError, match=r"Expected metric .*Received: metric='cosine'"):
        label_free_score(model, model, [x], metric="cosine")
    with pytest.raises(ValueError, match=r"Received: metric='cosine'"):
        make_label_free_eval(model, "cosine")
    with pytest.raises(ValueError, match=r"Received: optimizer='rmsprop'"):
        fine_tune(model, [(x, y)], optimizer="rmsprop")

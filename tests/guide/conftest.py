"""The guide's PyTorch helper code, as a guide user would have it, for the guide-conformance tests.

The UIF 1.2 guide (``/work/shared/reference/uif-optimizer-guide.md``) calls ``eval_fn``,
``calibration_fn``, ``train`` and ``evaluate`` without defining all of them; they are written
here the way its snippets and the PyTorch ImageNet example (which the guide's ``AverageMeter``
and ``accuracy`` come from) write them, with the ``.cuda()`` calls dropped: these tests run on a
CPU. ``eval_fn`` returns ``top1.avg``, a tensor, exactly as the guide's does.

Each fixture returns the function itself, so a test reads ``runner.ana(eval_fn,
args=(val_loader,))`` word for word as the guide writes it; ``retraining`` is the guide's
"Retraining the Pruned Model" loop, written once for the iterative and one-step tests. Data:
the bundled Fashion-MNIST subset, a few batches (values scaled to the sample models, as
``conventions.md`` allows).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from guide_code import (
    guide_calibration_fn,
    guide_eval_fn,
    guide_evaluate,
    guide_train,
)

from uif_explorer.data import torch_loader


def guide_retraining(model, train_loader, val_loader, epoches: int = 1) -> None:
    """The guide's "Retraining the Pruned Model" section verbatim (it follows both iterative and
    one-step pruning): train, evaluate, save ``model_pruned.pth`` and, for a sparse model,
    ``model_slim.pth`` in the working directory."""
    train, evaluate = guide_train, guide_evaluate
    criterion = torch.nn.CrossEntropyLoss()

    optimizer = torch.optim.Adam(model.parameters(), 1e-3, weight_decay=5e-4)
    best_acc1 = 0

    for epoch in range(epoches):
        train(train_loader, model, criterion, optimizer, epoch)
        acc1, acc5 = evaluate(val_loader, model, criterion)

        is_best = acc1 > best_acc1
        best_acc1 = max(acc1, best_acc1)
        if is_best:
            torch.save(model.state_dict(), "model_pruned.pth")
            # Sparse model has one more special method in iterative pruning.
            if hasattr(model, "slim_state_dict"):
                torch.save(model.slim_state_dict(), "model_slim.pth")


@pytest.fixture(scope="session")
def retraining():
    return guide_retraining


@pytest.fixture(scope="session")
def eval_fn():
    return guide_eval_fn


@pytest.fixture(scope="session")
def calibration_fn():
    return guide_calibration_fn


@pytest.fixture(scope="session")
def val_loader():
    """64 test images in one batch: the guide's ``val_loader``, scaled down."""
    return torch_loader("test", limit=64, batch_size=64)


@pytest.fixture(scope="session")
def train_loader():
    """128 training images in batches of 64: the guide's ``train_loader``, scaled down."""
    return torch_loader("train", limit=128, batch_size=64)


def in_dir(path: Path) -> Iterator[Path]:
    """Work in ``path`` (so the guide's relative ``.vai`` lands there) until the caller ends."""
    mp = pytest.MonkeyPatch()
    mp.chdir(path)
    try:
        yield path
    finally:
        mp.undo()


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models run faster on one thread: with two OpenMP threads on a busy 2-core machine,
    a MobileNetV2-small forward of 64 images took 3-4 s instead of 0.5 s (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def guide_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One temporary working directory per test module: the guide's ``.vai`` lands in it.

    Module-scoped because a section's files (``.sens``, weights) feed the next section.
    """
    yield from in_dir(tmp_path_factory.mktemp("guide"))


@pytest.fixture(autouse=True)
def _stay_in_guide_dir(guide_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test of a module runs in its module's directory (fixtures may have left it)."""
    monkeypatch.chdir(guide_dir)

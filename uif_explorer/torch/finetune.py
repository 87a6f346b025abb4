"""Fine-tune a pruned PyTorch model in place: the guide's "Retraining the Pruned Model".

:func:`fine_tune` trains the model it is given (the caller copies first if the original must
be kept) with SGD (momentum) or Adam/AdamW, a cosine learning-rate schedule over all steps and
optional knowledge distillation from a teacher (usually the original model). Parameters are
never replaced, so a sparse model from :class:`~uif_explorer.torch.pruner.ChannelPruner`
keeps its pruned entries at exactly zero (its gradient hooks zero their gradients, so no
optimizer step moves them).
"""

from __future__ import annotations

import math
import numbers
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from uif_explorer.torch.evaluation import (
    _check_positive_int,
    _empty_error,
    _forward,
    _split_batch,
    class_targets,
    model_device,
    module_modes,
    top1_accuracy,
)

OptimizerName = Literal["sgd", "adam", "adamw"]
Progress = Callable[[int, "int | None", dict[str, Any]], object]
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")


def _make_optimizer(
    params: list[nn.Parameter], name: str, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _loader_length(loader: Iterable, max_batches: int | None) -> int | None:
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        return max_batches
    return n if max_batches is None else min(n, max_batches)


def _check_number(value: object, name: str, low: float, high: float = math.inf,
                  low_open: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(
        value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = f"{'>' if low_open else '>='} {low:g}" + (
            f" and <= {high:g}" if math.isfinite(high) else "")
        raise ValueError(f"Expected {name} to be a finite number {bound}. "
                         f"Received: {name}={value!r}")
    return float(value)  # type: ignore[arg-type]


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) * T^2, averaged over predictions."""
    t = temperature
    log_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    kl = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(dim=1)
    return kl.mean() * (t * t)


def fine_tune(
    model: nn.Module,
    train_loader: Iterable,
    epochs: int = 1,
    lr: float = 0.01,
    *,
    optimizer: OptimizerName = "sgd",
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    teacher: nn.Module | None = None,
    distill_weight: float = 0.5,
    temperature: float = 1.0,
    eval_loader: Iterable | None = None,
    max_batches: int | None = None,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
) -> pd.DataFrame:
    """Train ``model`` in place; one row per epoch in the returned table.

    Columns: ``epoch`` (1-based), ``train_loss`` (mean training objective over the epoch's
    samples; with a teacher, the mixed loss), ``train_accuracy`` (% on the training batches,
    as seen during the epoch), ``eval_accuracy`` (top-1 % on ``eval_loader``, only when given),
    ``lr`` (learning rate of the epoch's last step) and ``seconds`` (wall time of the epoch,
    evaluation included).

    * ``optimizer``: ``"sgd"`` (with ``momentum``), ``"adam"`` or ``"adamw"``, over the
      trainable ``model.parameters()``, with ``weight_decay``; the learning rate follows a
      cosine schedule from ``lr`` over all steps.
    * ``teacher``: distil from it: loss = (1 - w) * CE + w * KL(teacher/T || student/T) * T^2
      with ``w = distill_weight`` and ``T = temperature``; the teacher runs in eval mode under
      ``torch.no_grad()`` on its own device and gets its modes back.
    * ``max_batches``: batches per epoch (all when None).
    * ``progress(done_steps, total_steps, info)`` is called after every step, ``info`` holding
      ``epoch``, ``step`` (in the epoch), ``loss``, ``lr``; ``total_steps`` is None only for a
      loader without ``len()`` and no ``max_batches``. Without a callback a tqdm bar is shown
      when stderr is a terminal.
    * ``device``: where batches go (default: the model's device); the model is not moved.

    The model is left in eval mode. Raises ``ValueError`` for an empty loader, labels outside
    the model's outputs, a diverging loss (NaN/inf) and invalid arguments.
    """
    _check_positive_int(epochs, "epochs", allow_none=False)
    _check_positive_int(max_batches, "max_batches")
    lr = _check_number(lr, "lr", 0.0, low_open=True)
    weight_decay = _check_number(weight_decay, "weight_decay", 0.0)
    momentum = _check_number(momentum, "momentum", 0.0, 1.0)
    distill_weight = _check_number(distill_weight, "distill_weight", 0.0, 1.0)
    temperature = _check_number(temperature, "temperature", 0.0, low_open=True)
    if optimizer not in OPTIMIZERS:
        raise ValueError("Expected optimizer 'sgd', 'adam' or 'adamw'. "
                         f"Received: optimizer={optimizer!r}")
    if progress is not None and not callable(progress):
        raise ValueError(f"Expected progress to be a callable or None. Received: "
                         f"progress={progress!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("Expected a model with trainable parameters. Received: a model whose "
                         "parameters all have requires_grad=False")

    device = model_device(model) if device is None else torch.device(device)
    teacher_device = model_device(teacher) if teacher is not None else None
    opt = _make_optimizer(params, optimizer, lr, weight_decay, momentum)
    per_epoch = _loader_length(train_loader, max_batches)
    total_steps = None if per_epoch is None else per_epoch * epochs

    bar = None
    if progress is None and sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, desc="fine-tune", unit="step", leave=False)

    schedule_start = 0  # > 0 only for a loader without len(): cosine after the first epoch

    def lr_at(step: int) -> float:
        if total_steps is None:  # length unknown until the first epoch ends: constant
            return lr
        span = max(1, total_steps - schedule_start)
        t = min(max(step - schedule_start, 0), span)
        return 0.5 * lr * (1.0 + math.cos(math.pi * t / span))

    rows: list[dict[str, Any]] = []
    done = 0
    try:
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            model.train()
            loss_sum = 0.0
            correct = seen = steps = 0
            current_lr = lr
            for step, batch in enumerate(train_loader):
                if max_batches is not None and step >= max_batches:
                    break
                current_lr = lr_at(done)
                for group in opt.param_groups:
                    group["lr"] = current_lr
                inputs, labels = _split_batch(batch, need_labels=True)
                logits = _forward(model, inputs, device)
                targets = class_targets(logits, labels)
                loss = F.cross_entropy(logits.float(), targets)
                if teacher is not None and distill_weight > 0:
                    with module_modes(teacher, False), torch.no_grad():
                        t_logits = _forward(teacher, inputs, teacher_device).to(logits.device)
                    loss = (1.0 - distill_weight) * loss + distill_weight * distillation_loss(
                        logits, t_logits, temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise ValueError(
                        "Expected a finite training loss. Received: loss="
                        f"{loss_value} at epoch {epoch}, step {step + 1}; lower lr "
                        f"(lr={lr:g}) or check the data"
                    )
                opt.step()
                n = targets.numel()
                loss_sum += loss_value * n
                correct += int((logits.detach().argmax(dim=1) == targets).sum())
                seen += n
                steps += 1
                done += 1
                info = {"epoch": epoch, "step": step + 1, "loss": loss_value, "lr": current_lr}
                if progress is not None:
                    progress(done, total_steps, info)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{loss_value:.4f}")
            if steps == 0:
                raise _empty_error(train_loader)
            if total_steps is None:  # learned the epoch length: cosine over what is left
                per_epoch = steps
                total_steps = steps * epochs
                schedule_start = done
                if bar is not None:
                    bar.total = total_steps
            row: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": loss_sum / seen,
                "train_accuracy": 100.0 * correct / seen,
            }
            if eval_loader is not None:
                row["eval_accuracy"] = top1_accuracy(model, eval_loader, device=device)
            row["lr"] = current_lr
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
    finally:
        if bar is not None:
            bar.close()
        opt.zero_grad(set_to_none=True)
        model.eval()
    return pd.DataFrame(rows)

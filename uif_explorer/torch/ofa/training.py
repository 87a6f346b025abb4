"""Sandwich-rule training of an OFA model (Yu et al., BigNAS / "sandwich rule").

Per batch: the max subnet, the min subnet and ``num_random`` random subnets each run forward
and backward on the same batch; their gradients add up, are clipped by value (1.0) and one
optimizer step updates the shared weights. The loss of each subnet is cross-entropy plus
knowledge distillation (KL to the teacher's softmax; the teacher, usually the original model,
runs in eval mode without gradients).

Works inside ``torchrun`` with ``DistributedDataParallel``: pass the DDP wrapper as
``ofa_model``. Random subnets are drawn from a generator seeded by ``(seed, step, slot)``, so
every rank trains the same subnets in the same step (different shapes per rank would make the
gradients meaningless to average); gradients are all-reduced once per step, on the last
backward (the others run under ``no_sync``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from uif_explorer.torch.evaluation import (
    _check_positive_int,
    _split_batch,
    _to_device,
    logits_of,
    model_device,
    module_modes,
)
from uif_explorer.torch.finetune import distillation_loss
from uif_explorer.torch.ofa.space import space_of, unwrap

Progress = Callable[[int, int, dict[str, Any]], object]


def _is_ddp(model: nn.Module) -> bool:
    return isinstance(model, nn.parallel.DistributedDataParallel)


def _call(model: nn.Module, inputs: Any) -> torch.Tensor:
    out = model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)
    return logits_of(out)


def sandwich_step(
    ofa_model: nn.Module,
    teacher: nn.Module | None,
    images: Any,
    target: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    step: int | None = None,
    seed: int = 0,
    num_random: int = 2,
    distill_weight: float = 1.0,
    temperature: float = 1.0,
    clip_value: float | None = 1.0,
) -> dict[str, float]:
    """One sandwich-rule update; returns the mean loss and each subnet's loss.

    ``step`` seeds this step's random subnets (default: a counter kept on the OFA model,
    identical on every rank). ``teacher=None`` trains on cross-entropy alone. The max subnet
    is active again afterwards. The model's train/eval mode is left as given.
    """
    inner = unwrap(ofa_model)
    space = space_of(inner)
    if step is None:
        step = space.steps
    space.steps = int(step) + 1
    soft = None
    if teacher is not None:
        with torch.no_grad(), module_modes(teacher, False):
            soft = _call(teacher, images).detach()
    optimizer.zero_grad(set_to_none=True)
    slots = ["max", "min"] + ["random"] * int(num_random)
    losses: dict[str, float] = {}
    ddp = _is_ddp(ofa_model)
    for i, mode in enumerate(slots):
        rng = np.random.default_rng([int(seed), int(step), i])
        space.apply(inner, space.sample(mode, rng))
        sync = nullcontext() if not ddp or i == len(slots) - 1 else ofa_model.no_sync()
        with sync:
            out = _call(ofa_model, images)
            loss = F.cross_entropy(out.float(), target)
            if soft is not None:
                loss = loss + distill_weight * distillation_loss(out, soft.to(out.device),
                                                                  temperature)
            loss.backward()
        losses[mode if mode != "random" else f"random{i - 2}"] = float(loss.detach())
    if clip_value is not None:
        torch.nn.utils.clip_grad_value_(inner.parameters(), clip_value)
    optimizer.step()
    space.apply(inner, space.choice.largest())
    return {"loss": float(np.mean(list(losses.values()))), **losses}


def _loader_len(loader: Iterable, max_batches: int | None) -> int:
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        if max_batches is None:
            raise ValueError("Expected a train_loader with len() or max_batches.") from None
        return max_batches
    return n if max_batches is None else min(n, max_batches)


def train(
    ofa_model: nn.Module,
    teacher: nn.Module | None,
    train_loader: Iterable,
    epochs: int = 1,
    lr: float = 0.05,
    progress: Progress | None = None,
    *,
    momentum: float = 0.9,
    weight_decay: float = 4e-5,
    seed: int = 0,
    max_batches: int | None = None,
    num_random: int = 2,
    distill_weight: float = 1.0,
    temperature: float = 1.0,
    clip_value: float | None = 1.0,
    device: torch.device | str | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> pd.DataFrame:
    """Train ``ofa_model`` in place with the sandwich rule; one row per epoch.

    SGD (Nesterov momentum, weight decay on weights only) with a cosine learning rate from
    ``lr`` over all steps, unless an ``optimizer`` is given. ``progress(done, total, info)``
    is called after every step (``info``: epoch, step, loss, lr); without a callback a tqdm bar
    is shown when stderr is a terminal. Columns: ``epoch``, ``loss`` (mean sandwich loss),
    ``lr`` (last step's), ``seconds``. Ends in eval mode with the max subnet active.
    """
    _check_positive_int(epochs, "epochs", allow_none=False)
    _check_positive_int(max_batches, "max_batches")
    inner = unwrap(ofa_model)
    space_of(inner)
    device = model_device(inner) if device is None else torch.device(device)
    per_epoch = _loader_len(train_loader, max_batches)
    total = per_epoch * epochs
    if optimizer is None:
        decay = [p for p in inner.parameters() if p.requires_grad and p.ndim > 1]
        rest = [p for p in inner.parameters() if p.requires_grad and p.ndim <= 1]
        optimizer = torch.optim.SGD(
            [{"params": decay, "weight_decay": weight_decay},
             {"params": rest, "weight_decay": 0.0}],
            lr=lr, momentum=momentum, nesterov=momentum > 0)
    base = [g["lr"] for g in optimizer.param_groups]
    bar = None
    if progress is None and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc="sandwich training", unit="step")
    rows = []
    done = 0
    try:
        inner.train()
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            loss_sum, n = 0.0, 0
            cur_lr = base[0]
            for i, batch in enumerate(train_loader):
                if max_batches is not None and i >= max_batches:
                    break
                factor = 0.5 * (1.0 + math.cos(math.pi * done / max(1, total)))
                for g, b in zip(optimizer.param_groups, base, strict=True):
                    g["lr"] = b * factor
                cur_lr = optimizer.param_groups[0]["lr"]
                images, target = _split_batch(batch, need_labels=True)
                images = _to_device(images, device)
                target = torch.as_tensor(target).to(device)
                out = sandwich_step(ofa_model, teacher, images, target, optimizer, step=done,
                                    seed=seed, num_random=num_random,
                                    distill_weight=distill_weight, temperature=temperature,
                                    clip_value=clip_value)
                loss_sum += out["loss"]
                n += 1
                done += 1
                info = {"epoch": epoch, "step": i + 1, "loss": out["loss"], "lr": cur_lr}
                if progress is not None:
                    progress(done, total, info)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{out['loss']:.3f}")
            rows.append({"epoch": epoch, "loss": loss_sum / max(1, n), "lr": cur_lr,
                         "seconds": time.perf_counter() - start})
    finally:
        if bar is not None:
            bar.close()
        for g, b in zip(optimizer.param_groups, base, strict=True):
            g["lr"] = b
    if _is_ddp(ofa_model) and torch.distributed.is_initialized():
        # DDP syncs buffers at the start of a forward: after the last step each rank holds
        # its own BatchNorm statistics. Take rank 0's so every rank ends with the same model.
        with torch.no_grad():
            for buf in inner.buffers():
                torch.distributed.broadcast(buf, 0)
    inner.eval()
    return pd.DataFrame(rows, columns=["epoch", "loss", "lr", "seconds"])


__all__ = ["sandwich_step", "train"]

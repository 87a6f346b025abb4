"""The guide's PyTorch helper code as a guide user writes it (the ImageNet example's
``AverageMeter`` and ``accuracy``, the guide's ``eval_fn`` returning ``top1.avg`` as a tensor,
``calibration_fn``, ``train`` and ``evaluate``), on the CPU. Shared by tests/guide and the
runner tests so the guide's code exists once in the test suite."""

from __future__ import annotations

import torch


class AverageMeter:
    """Computes and stores the average and current value (the ImageNet example's)."""

    def __init__(self, name: str, fmt: str = ":f") -> None:
        self.name, self.fmt = name, fmt
        self.val = self.avg = self.sum = 0
        self.count = 0

    def update(self, val, n: int = 1) -> None:
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count


def accuracy(output: torch.Tensor, target: torch.Tensor, topk=(1,)) -> list[torch.Tensor]:
    """Top-k accuracies in percent, each a one-element tensor (the ImageNet example's)."""
    with torch.no_grad():
        maxk = max(topk)
        batch_size = target.size(0)
        _, pred = output.topk(maxk, 1, True, True)
        pred = pred.t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        res = []
        for k in topk:
            correct_k = correct[:k].reshape(-1).float().sum(0, keepdim=True)
            res.append(correct_k.mul_(100.0 / batch_size))
        return res


def guide_eval_fn(model, dataloader):
    top1 = AverageMeter("Acc@1", ":6.2f")
    model.eval()
    with torch.no_grad():
        for _i, (images, targets) in enumerate(dataloader):
            outputs = model(images)
            acc1, _ = accuracy(outputs, targets, topk=(1, 5))
            top1.update(acc1[0], images.size(0))
    return top1.avg


def guide_calibration_fn(model, dataloader, number_forward=100):
    model.train()
    with torch.no_grad():
        for index, (images, _target) in enumerate(dataloader):
            model(images)
            if index > number_forward:
                break


def guide_train(train_loader, model, criterion, optimizer, epoch) -> None:
    """One epoch of plain training (the guide's ``train``, left to the user)."""
    model.train()
    for images, target in train_loader:
        optimizer.zero_grad()
        loss = criterion(model(images), target)
        loss.backward()
        optimizer.step()


def guide_evaluate(val_loader, model, criterion) -> tuple[float, float]:
    """Top-1 and top-5 accuracy in percent (the guide's ``evaluate``, left to the user)."""
    top1, top5 = AverageMeter("Acc@1"), AverageMeter("Acc@5")
    model.eval()
    with torch.no_grad():
        for images, target in val_loader:
            output = model(images)
            criterion(output, target)
            acc1, acc5 = accuracy(output, target, topk=(1, 5))
            top1.update(float(acc1[0]), images.size(0))
            top5.update(float(acc5[0]), images.size(0))
    return top1.avg, top5.avg

"""Ready-made evaluation and calibration functions for the PyTorch runners.

Everything here has the guide's shapes (section 4.1.3.1): an ``eval_fn(model, dataloader)``
returns a score (higher is better), a ``calibration_fn(model, dataloader, number_forward)``
re-estimates BatchNorm statistics (EagleEye's adaptive BN). On top of that:

* :func:`top1_accuracy`: top-1 accuracy in percent (0-100) over ``(images, labels)`` batches.
* :func:`adaptive_bn_calibration`: reset every BatchNorm's running statistics and re-estimate
  them as a cumulative average over up to ``number_forward`` batches.
* :func:`label_free_score` / :func:`make_label_free_eval`: a score for users who have inputs but
  no labels: agreement with (or minus the KL divergence to) the original model's predictions.
* :func:`check_score`: the check runners apply to whatever a user's ``eval_fn`` returns.

Conventions shared by all functions:

* Batches are ``(inputs, labels, ...)`` tuples/lists; where labels are not needed a bare tensor
  is accepted too. ``inputs`` may itself be a tuple of tensors (multi-input models).
* Model outputs are ``(batch, classes, ...)``: the class axis is dimension 1, so dense
  predictions (segmentation) work the same way. A tuple output (torchvision's GoogLeNet and
  Inception in train mode) is read at element 0, a dict output at ``"out"``.
* ``device`` is where inputs are moved; it defaults to the device of the model's first parameter
  (or buffer, else the CPU). Models are never moved.
* Each module's train/eval flag is restored on exit, so a model comes back in the exact mode
  (also mixed modes) it was given in.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from uif_explorer.core.scores import check_score  # noqa: F401 - part of this module's API
from uif_explorer.core.uncertainty import note_images

Metric = Literal["agreement", "kl"]
METRICS: tuple[str, ...] = ("agreement", "kl")
TOP1_SCORE_NAME = "top-1 accuracy (%)"
LABEL_FREE_SCORE_NAMES = {
    "agreement": "label-free agreement with the original model (%)",
    "kl": "label-free -KL to the original model",
}
# Cached reference outputs of a label-free eval_fn are capped at this many elements (~256 MB
# in float32); past it, the reference is simply run again on the batches that did not fit.
REFERENCE_CACHE_ELEMENTS = 64 * 1024 * 1024


# -- small helpers ---------------------------------------------------------------------------
def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (else first buffer, else the CPU)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _resolve_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    return model_device(model) if device is None else torch.device(device)


@contextmanager
def module_modes(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Put ``model`` in train or eval mode; restore every submodule's own flag on exit."""
    saved = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield model
    finally:
        for m, flag in saved:
            m.training = flag


def _check_positive_int(value: object, name: str, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"Expected {name} to be a positive integer"
                         f"{' or None' if allow_none else ''}. Received: {name}={value!r}")


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (tuple, list)):
        return type(x)(_to_device(v, device) for v in x)
    return x


def _split_batch(batch: Any, need_labels: bool) -> tuple[Any, Any]:
    """``(inputs, labels)`` of one batch; ``labels`` is None for a bare-tensor batch."""
    if isinstance(batch, (tuple, list)):
        if len(batch) >= 2:
            return batch[0], batch[1]
        if len(batch) == 1 and not need_labels:
            return batch[0], None
    elif isinstance(batch, torch.Tensor) and not need_labels:
        return batch, None
    what = f"{type(batch).__name__} of length {len(batch)}" if isinstance(
        batch, (tuple, list)) else type(batch).__name__
    raise ValueError(
        "Expected batches of (inputs, labels)" + ("" if need_labels else " or bare input tensors")
        + f" from the dataloader. Received: batch={what}"
    )


def _call(model: nn.Module, inputs: Any, device: torch.device) -> Any:
    inputs = _to_device(inputs, device)
    return model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)


def _forward(model: nn.Module, inputs: Any, device: torch.device) -> torch.Tensor:
    return logits_of(_call(model, inputs, device))


def logits_of(output: Any) -> torch.Tensor:
    """The class scores in a model's output (tuple -> element 0, dict -> ``"out"``)."""
    if isinstance(output, dict):
        if "out" in output:
            output = output["out"]
        elif len(output) == 1:
            output = next(iter(output.values()))
        else:
            raise ValueError("Expected a tensor, a tuple or a dict with key 'out' as model "
                             f"output. Received: output=dict with keys {list(output)}")
    elif isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise ValueError("Expected the model to return a tensor of class scores. "
                         f"Received: output={type(output).__name__}")
    if output.ndim < 2:
        raise ValueError("Expected model outputs of shape (batch, classes, ...). "
                         f"Received: output shape={tuple(output.shape)}")
    return output


def _limited(dataloader: Iterable, max_batches: int | None) -> Iterator[tuple[int, Any]]:
    for i, batch in enumerate(dataloader):
        if max_batches is not None and i >= max_batches:
            return
        yield i, batch


def _empty_error(dataloader: object) -> ValueError:
    return ValueError("Expected at least one batch from the dataloader. "
                      f"Received: dataloader={_short(dataloader)} that yielded no batch")


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def class_targets(logits: torch.Tensor, labels: Any) -> torch.Tensor:
    """Integer class targets on ``logits``' device, checked against the number of outputs.

    Integer labels must lie in ``[0, classes)``; one-hot or probability labels of the
    outputs' shape are reduced to their argmax.
    """
    labels = torch.as_tensor(labels).to(logits.device, non_blocking=True)
    n = logits.shape[1]
    if labels.is_floating_point() and labels.shape == logits.shape:
        return labels.argmax(dim=1)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError("Expected integer class labels (or one-hot labels of the outputs' "
                         f"shape). Received: labels of dtype {labels.dtype} and shape "
                         f"{tuple(labels.shape)} for outputs of shape {tuple(logits.shape)}")
    expected_shape = (logits.shape[0], *logits.shape[2:])
    if tuple(labels.shape) != expected_shape:
        raise ValueError(f"Expected labels of shape {expected_shape} for outputs of shape "
                         f"{tuple(logits.shape)}. Received: labels shape={tuple(labels.shape)}")
    if labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= n:
            raise ValueError(
                f"Expected labels in the range 0..{n - 1}: the model has {n} outputs. "
                f"Received: labels in the range {lo}..{hi}"
            )
    return labels.long()


# -- accuracy --------------------------------------------------------------------------------
def top1_accuracy(
    model: nn.Module,
    dataloader: Iterable,
    device: torch.device | str | None = None,
    max_batches: int | None = None,
) -> float:
    """Top-1 accuracy in percent (0-100) over ``(images, labels)`` batches.

    The model runs in eval mode under ``torch.no_grad()``; its previous modes are restored.
    ``max_batches`` limits the number of batches read.
    """
    _check_positive_int(max_batches, "max_batches")
    device = _resolve_device(model, device)
    correct = total = 0
    with module_modes(model, False), torch.no_grad():
        for _, batch in _limited(dataloader, max_batches):
            inputs, labels = _split_batch(batch, need_labels=True)
            logits = _forward(model, inputs, device)
            targets = class_targets(logits, labels)
            correct += int((logits.argmax(dim=1) == targets).sum())
            total += targets.numel()
    if total == 0:
        raise _empty_error(dataloader)
    note_images(total)  # the runner records the image count beside the score
    return 100.0 * correct / total


top1_accuracy.score_name = TOP1_SCORE_NAME  # type: ignore[attr-defined]
top1_accuracy.higher_is_better = True  # type: ignore[attr-defined]


# -- adaptive BN -----------------------------------------------------------------------------
def batch_norms(model: nn.Module) -> list[_BatchNorm]:
    """BatchNorm layers (1d/2d/3d, Sync, Lazy) that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def adaptive_bn_calibration(
    model: nn.Module,
    dataloader: Iterable,
    number_forward: int = 100,
    device: torch.device | str | None = None,
) -> None:
    """EagleEye's adaptive BN: re-estimate every BatchNorm's statistics on the data.

    Each BatchNorm's running statistics are reset and then accumulated as a cumulative
    average (momentum ``None``) over up to ``number_forward`` batches, forwarded in train
    mode under ``torch.no_grad()`` (labels are ignored; batches may be bare tensors). Momenta
    and every module's train/eval flag are restored afterwards; only the statistics change.
    A sparse model's masks are applied again at the end. A model without BatchNorm is left
    as is (nothing to calibrate, no batch is read).
    """
    _check_positive_int(number_forward, "number_forward", allow_none=False)
    norms = batch_norms(model)
    if not norms:
        return
    device = _resolve_device(model, device)
    momenta = [bn.momentum for bn in norms]
    seen = 0
    try:
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None
        with module_modes(model, True), torch.no_grad():
            for _, batch in _limited(dataloader, number_forward):
                inputs, _labels = _split_batch(batch, need_labels=False)
                _call(model, inputs, device)
                seen += 1
    finally:
        for bn, momentum in zip(norms, momenta, strict=True):
            bn.momentum = momentum
    if seen == 0:
        raise _empty_error(dataloader)
    _reapply_masks(model)


def _reapply_masks(model: nn.Module) -> None:
    """Keep a sparse model's pruned statistics at zero (no-op for other models)."""
    from uif_explorer.torch.apply import MASK_SUFFIX, apply_masks

    if any(name.endswith(MASK_SUFFIX) for name, _ in model.named_buffers()):
        apply_masks(model)


def calibrate_and_evaluate(
    model: nn.Module,
    calib_loader: Iterable,
    eval_loader: Iterable,
    number_forward: int = 100,
    device: torch.device | str | None = None,
    max_batches: int | None = None,
) -> float:
    """:func:`adaptive_bn_calibration` on ``calib_loader``, then :func:`top1_accuracy` (%)."""
    adaptive_bn_calibration(model, calib_loader, number_forward=number_forward, device=device)
    return top1_accuracy(model, eval_loader, device=device, max_batches=max_batches)


# -- label-free score ------------------------------------------------------------------------
def _check_metric(metric: object) -> str:
    if metric not in METRICS:
        raise ValueError(f"Expected metric 'agreement' or 'kl'. Received: metric={metric!r}")
    return str(metric)


def _fingerprint(inputs: Any) -> tuple:
    """A cheap, practically collision-free key for one batch of inputs."""
    parts: list[object] = []
    for t in inputs if isinstance(inputs, (tuple, list)) else (inputs,):
        if not isinstance(t, torch.Tensor):
            return (object(),)  # unhashable content: never matches
        flat = t.detach().reshape(-1).double()
        ramp = torch.linspace(1.0, 2.0, flat.numel(), dtype=torch.float64, device=flat.device)
        parts += [tuple(t.shape), str(t.dtype), float(flat.sum()), float((flat * ramp).sum()),
                  float(flat.square().sum())]
    return tuple(parts)


def _tensor_versions(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer of ``model`` is replaced or updated in place."""
    return tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))


class _ReferenceCache:
    """Reference log-probabilities per batch, dropped when the reference's tensors change."""

    def __init__(self, capacity: int = REFERENCE_CACHE_ELEMENTS) -> None:
        self.capacity = capacity
        self.entries: dict[tuple, torch.Tensor] = {}
        self.size = 0
        self.versions: tuple | None = None

    def check(self, reference: nn.Module) -> None:
        versions = _tensor_versions(reference)
        if versions != self.versions:
            self.entries.clear()
            self.size = 0
            self.versions = versions

    def get(self, key: tuple) -> torch.Tensor | None:
        return self.entries.get(key)

    def put(self, key: tuple, value: torch.Tensor) -> None:
        if self.size + value.numel() <= self.capacity:
            self.entries[key] = value
            self.size += value.numel()


def label_free_score(
    model: nn.Module,
    reference: nn.Module,
    dataloader: Iterable,
    metric: Metric = "agreement",
    device: torch.device | str | None = None,
    max_batches: int | None = None,
    *,
    _cache: _ReferenceCache | None = None,
) -> float:
    """How closely ``model`` follows ``reference`` (the original model) on unlabelled inputs.

    ``metric="agreement"``: percent of predictions (argmax over the class axis) equal to the
    reference's. ``metric="kl"``: minus the mean KL(reference || model) of the softmax outputs,
    so 0 is a perfect match and higher is better for both. Batches may be bare tensors or
    tuples (element 0 is the input, labels are ignored). Both models run in eval mode under
    ``torch.no_grad()`` and get their modes back; the reference is otherwise untouched and
    runs on its own device.
    """
    metric = _check_metric(metric)
    _check_positive_int(max_batches, "max_batches")
    device = _resolve_device(model, device)
    ref_device = model_device(reference)
    if _cache is not None:
        _cache.check(reference)
    agree = 0
    kl_sum = 0.0
    total = 0
    with module_modes(model, False), module_modes(reference, False), torch.no_grad():
        for _, batch in _limited(dataloader, max_batches):
            inputs, _labels = _split_batch(batch, need_labels=False)
            key = _fingerprint(inputs) if _cache is not None else None
            ref_logp = _cache.get(key) if _cache is not None else None
            if ref_logp is None:
                ref_logp = F.log_softmax(_forward(reference, inputs, ref_device).float(), dim=1)
                if _cache is not None:
                    _cache.put(key, ref_logp)
            logits = _forward(model, inputs, device).float()
            ref_logp = ref_logp.to(logits.device)
            if ref_logp.shape != logits.shape:
                raise ValueError(
                    "Expected the model and the reference to give outputs of the same shape. "
                    f"Received: model output {tuple(logits.shape)}, reference output "
                    f"{tuple(ref_logp.shape)}"
                )
            n = logits.numel() // logits.shape[1]  # predictions in this batch
            if metric == "agreement":
                agree += int((logits.argmax(dim=1) == ref_logp.argmax(dim=1)).sum())
            else:
                logp = F.log_softmax(logits, dim=1)
                kl = F.kl_div(logp, ref_logp, reduction="none", log_target=True).sum(dim=1)
                kl_sum += float(kl.clamp_min(0).double().sum())
            total += n
    if total == 0:
        raise _empty_error(dataloader)
    note_images(total)
    if metric == "agreement":
        return 100.0 * agree / total
    return 0.0 - kl_sum / total


def make_label_free_eval(
    reference: nn.Module,
    metric: Metric = "agreement",
    device: torch.device | str | None = None,
    max_batches: int | None = None,
) -> Callable[[nn.Module, Iterable], float]:
    """An ``eval_fn(model, dataloader)`` (the guide's signature) scoring against ``reference``.

    The returned function carries ``score_name`` (how the app labels the score) and
    ``higher_is_better = True``. The reference's outputs are cached per batch of inputs
    (keyed by a fingerprint of the batch), so evaluating many candidates on one loader runs
    the reference once; the cache empties itself when the reference's weights change.
    """
    metric = _check_metric(metric)
    _check_positive_int(max_batches, "max_batches")
    cache = _ReferenceCache()

    def eval_fn(model: nn.Module, dataloader: Iterable) -> float:
        return label_free_score(model, reference, dataloader, metric, device=device,
                                max_batches=max_batches, _cache=cache)

    eval_fn.score_name = LABEL_FREE_SCORE_NAMES[metric]  # type: ignore[attr-defined]
    eval_fn.higher_is_better = True  # type: ignore[attr-defined]
    eval_fn.metric = metric  # type: ignore[attr-defined]
    eval_fn.__name__ = f"label_free_{metric}"
    eval_fn.__qualname__ = eval_fn.__name__
    return eval_fn



"""One object over the core for PyTorch: capture once, then plan, cost and build models.

Runners (iterative, one-step, OFA) and the app stand on :class:`ChannelPruner`; it holds no
model state of its own beyond a reference to the user's model, which it never mutates.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from uif_explorer.core.plan import PruningPlan
from uif_explorer.core.pruner import BasePruner
from uif_explorer.torch import apply as _apply
from uif_explorer.torch.apply import MASK_SUFFIX, make_slim, make_sparse
from uif_explorer.torch.capture import Capture, capture, digest_weights

_SPARSE_ATTRS = ("uif_plan", "uif_capture", "slim_state_dict")


def example_inputs(inputs: object) -> object:
    """An example input, or (as the Keras runner accepts) its shape: ``(1, 3, 32, 32)``
    becomes a random tensor of that shape. Anything else is passed through unchanged."""
    if isinstance(inputs, (tuple, list, torch.Size)) and len(inputs) > 0 and all(
            isinstance(d, int) and not isinstance(d, bool) for d in inputs):
        if any(d < 1 for d in inputs):
            raise ValueError("Expected input_signature to be an example input tensor or a "
                             "shape of positive sizes such as (1, 3, 32, 32). Received: "
                             f"input_signature={tuple(inputs)!r}")
        return torch.randn(*inputs)
    return inputs


def unmasked(model: nn.Module) -> nn.Module:
    """The architecture without what ``prune()`` adds to a sparse model (mask buffers, hooks,
    plan attributes), with its current weights; any other model is returned as is.

    A runner made on the sparse model then captures the same graph (the same name and graph
    digest) as one made on the original model, so the guide's loop finds its analysis.
    """
    if not any(hasattr(model, a) for a in _SPARSE_ATTRS):
        return model
    clean = copy.deepcopy(model)
    for module in clean.modules():
        for name in [n for n in module._buffers if n.endswith(MASK_SUFFIX)]:
            del module._buffers[name]
            module._non_persistent_buffers_set.discard(name)
        for hooks in (module._forward_pre_hooks, module._forward_hooks):
            for key in [k for k, h in hooks.items()
                        if getattr(h, "__module__", None) == _apply.__name__]:
                del hooks[key]
    for attr in _SPARSE_ATTRS:
        clean.__dict__.pop(attr, None)
    return clean


def slice_stats(model: nn.Module, cap: Capture) -> list[dict[str, np.ndarray] | None]:
    """Per slice of the graph: L1 and L2 magnitude of each position along its channel axis."""
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    out: list[dict[str, np.ndarray] | None] = []
    for sl in cap.graph.slices:
        t = tensors.get(sl.param)
        if t is None or not t.is_floating_point():
            out.append(None)
            continue
        t = t.detach().float().cpu()
        if sl.blocks > 1:
            rows = t.shape[0]
            per_block = t.reshape(sl.blocks, rows // sl.blocks, *t.shape[1:])
            dims = [d for d in range(per_block.ndim) if d not in (0, sl.dim + 1)]
            l1 = per_block.abs().sum(dim=dims).reshape(-1)
            l2 = per_block.pow(2).sum(dim=dims).sqrt().reshape(-1)
        else:
            dims = [d for d in range(t.ndim) if d != sl.dim]
            l1 = t.abs().sum(dim=dims) if dims else t.abs()
            l2 = t.pow(2).sum(dim=dims).sqrt() if dims else t.abs()
        out.append({"l1": l1.numpy(), "l2": l2.numpy()})
    return out


class ChannelPruner(BasePruner):
    """Capture ``model`` at ``inputs`` and offer plans, costs, sparse and slim models.

    ``model`` may be a sparse model from ``prune()``; its masks and hooks are left out.
    """

    framework = "torch"

    def __init__(
        self,
        model: nn.Module,
        inputs: torch.Tensor | Sequence[torch.Tensor],
        excludes: Iterable[object] | None = None,
    ) -> None:
        self.model = unmasked(model)
        if self.model is not model and excludes:  # modules of the sparse model -> their names
            names = {id(m): n for n, m in model.named_modules()}
            excludes = [names.get(id(e), e) for e in excludes]
        self.inputs = example_inputs(inputs)
        self.capture = capture(self.model, self.inputs, excludes)
        super().__init__(self.capture.graph)

    def slice_stats(self) -> list[dict[str, np.ndarray] | None]:
        return slice_stats(self.model, self.capture)

    def weights_digest(self) -> str:
        return digest_weights(self.model)

    def sparse_model(self, plan: PruningPlan) -> nn.Module:
        return make_sparse(self.model, self.capture, plan)

    def slim_model(self, plan: PruningPlan) -> nn.Module:
        return make_slim(self.model, self.capture, plan)

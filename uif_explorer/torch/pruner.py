"""One object over the core for PyTorch: capture once, then plan, cost and build models.

Runners (iterative, one-step, OFA) and the app stand on :class:`ChannelPruner`; it holds no
model state of its own beyond a reference to the user's model, which it never mutates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from uif_explorer.core.plan import PruningPlan
from uif_explorer.core.pruner import BasePruner
from uif_explorer.torch.apply import make_slim, make_sparse
from uif_explorer.torch.capture import Capture, capture, digest_weights


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
    """Capture ``model`` at ``inputs`` and offer plans, costs, sparse and slim models."""

    framework = "torch"

    def __init__(
        self,
        model: nn.Module,
        inputs: torch.Tensor | Sequence[torch.Tensor],
        excludes: Iterable[object] | None = None,
    ) -> None:
        self.model = model
        self.inputs = inputs
        self.capture = capture(model, inputs, excludes)
        super().__init__(self.capture.graph)

    def slice_stats(self) -> list[dict[str, np.ndarray] | None]:
        return slice_stats(self.model, self.capture)

    def weights_digest(self) -> str:
        return digest_weights(self.model)

    def sparse_model(self, plan: PruningPlan) -> nn.Module:
        return make_sparse(self.model, self.capture, plan)

    def slim_model(self, plan: PruningPlan) -> nn.Module:
        return make_slim(self.model, self.capture, plan)

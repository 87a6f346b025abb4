"""Branches combined per channel: selective-kernel convolutions (SKNet) and their kin.

Selective kernels stack the outputs of several convolution paths on a new dim
(``torch.stack(paths, dim=1)``: ``(B, paths, C, H, W)``), compute one attention logit per path
and channel with a convolution of ``paths * C`` outputs viewed as ``(B, paths, C, 1, 1)``, take
a softmax over the paths and sum the weighted paths. Channel ``k`` of every path is then one
channel: it goes from all paths at once.

- ``stack`` ties its inputs channel by channel (like an element-wise op); the new dim carries
  no channels.
- A reshape that splits a channel dim into ``(n, C)`` whose every user reduces or normalises
  over the outer ``n`` dim (a softmax or sum over the paths) ties part ``p``'s channel ``k``
  to part 0's, like an equal chunk: the slim model views ``n * kept`` channels as ``(n,
  kept)`` where its code computes ``C`` from the input (``C // self.num_paths``); a width
  written as a constant breaks the narrowed model, and the capture's probe freezes it with
  the model's error. Any other split of channels (a channel shuffle's transpose) stays a
  barrier.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from uif_explorer.core.channels import Val, channel_list, varying_dims
from uif_explorer.core.rules import Barrier, unify_elementwise
from uif_explorer.torch.rules.base import module_path, op_name, op_rule

if TYPE_CHECKING:
    from uif_explorer.torch.walk import Walker

# ops that combine the parts of a split dim channel by channel (their dims are args[1])
ACROSS_PARTS = ("softmax", "_softmax", "log_softmax", "_log_softmax", "sum", "mean", "amax")


@op_rule("stack")
def stack(w: Walker, node: torch.fx.Node) -> Val:
    """Inputs stacked on a new dim are tied channel by channel (the new dim has no channels)."""
    srcs = node.args[0]
    dim = int(node.args[1]) if len(node.args) > 1 else int(node.kwargs.get("dim", 0))
    out = w.shape(node)
    parts = []
    for item, src in zip(w.arg(srcs), srcs, strict=True):
        s = w.shape(src) if isinstance(src, torch.fx.Node) else None
        if s is None:
            raise Barrier("stack of non-tensors")
        parts.append(item if isinstance(item, Val) else w.fixed_val(s, "stacked constant"))
    shape = tuple(parts[0].shape)
    tied = unify_elementwise(w.b, parts, shape, module_path(node))
    return Val(out, np.expand_dims(tied.cls, dim % len(out)))


def _parts_combined(node: torch.fx.Node, d: int, nd: int) -> bool:
    """Whether every user of ``node`` combines its dim ``d`` channel by channel."""
    def over(user: torch.fx.Node) -> bool:
        if op_name(user) not in ACROSS_PARTS:
            return False
        dims = user.args[1] if len(user.args) > 1 else user.kwargs.get("dim")
        dims = [dims] if isinstance(dims, int) else dims
        return isinstance(dims, (list, tuple)) and all(isinstance(k, int) for k in dims) and [
            k % nd for k in dims] == [d]

    return bool(node.users) and all(over(u) for u in node.users)


def part_split(w: Walker, node: torch.fx.Node, x: Val, out: tuple[int, ...]) -> Val:
    """A channel dim split into ``(n, C)`` parts that its users combine per channel (see the
    module docstring): part ``p``'s channel ``k`` is tied to part 0's; the output's channels
    are on the ``C`` dim. Raises :class:`Barrier` for any other reshape."""
    vary = varying_dims(x.cls)
    nd = len(x.shape)
    if len(vary) != 1 or len(out) != nd + 1:
        raise Barrier("not a split into parts")
    d = vary[0]
    n, c = out[d], out[d + 1]
    if out[:d] + out[d + 2:] != x.shape[:d] + x.shape[d + 1:] or n * c != x.shape[d] or (
            n == 1 or not _parts_combined(node, d, nd + 1)):
        raise Barrier("not a split into parts")
    lst = channel_list(x, d).reshape(n, c)
    for p in range(1, n):
        w.b.unify(lst[0], lst[p])
    cls = np.expand_dims(np.take(x.cls, range(c), axis=d), d)
    return Val(out, np.ascontiguousarray(cls))

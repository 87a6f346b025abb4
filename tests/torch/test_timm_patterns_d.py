"""timm patterns of issue 18, attempt 3, helper D (twins, SAM, NesT): self-written modules.

- A position embedding held channels-last ``(1, H, W, C)`` and resized to the input's grid
  before it is added (timm's ``resample_abs_pos_embed_nhwc``, used by SAM: ``.float()``,
  permute to NCHW, bicubic antialiased ``F.interpolate``, permute back, ``.to(dtype)``). The
  resize works per channel, so dropping channels of the weight commutes with it: the weight is
  sliced with the residual stream it is added to (before, the resized weight was a constant
  broadcast against the channels and froze the whole stream). A weight resized along the dim
  that meets the channels is not sliceable and freezes them with the reason.

Each: slim == sparse on random inputs and the plan's MACs equal PyTorch's FLOP counter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from slim_checks import group_of, slim_matches_sparse
from torch import nn

from uif_explorer.torch.pruner import ChannelPruner

DIM, HIDDEN, GRID = 16, 32, 8


def resample_nhwc(pos: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """timm's ``resample_abs_pos_embed_nhwc`` as it runs under export."""
    dtype = pos.dtype
    pos = pos.float().reshape(1, pos.shape[-3], pos.shape[-2], pos.shape[-1]).permute(0, 3, 1, 2)
    pos = F.interpolate(pos, size=size, mode="bicubic", antialias=True)
    return pos.permute(0, 2, 3, 1).to(dtype)


class SamLike(nn.Module):
    """Patch conv to channels-last tokens, plus a resized position embedding, one residual
    MLP block, a mean-pooled classifier. ``along_channels``: the embedding is resized over its
    last dim instead (``(1, H, W, C/2)`` stretched to C, its dim 1 read as channels), which a
    narrower model cannot follow."""

    def __init__(self, along_channels: bool = False) -> None:
        super().__init__()
        self.along_channels = along_channels
        self.proj = nn.Conv2d(3, DIM, 4, 4)
        shape = (1, 4, 4, DIM // 2) if along_channels else (1, GRID, GRID, DIM)  # 16 px input
        self.pos_embed = nn.Parameter(torch.randn(shape))
        self.norm = nn.LayerNorm(DIM)
        self.fc1, self.fc2 = nn.Linear(DIM, HIDDEN), nn.Linear(HIDDEN, DIM)
        self.head = nn.Linear(DIM, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).permute(0, 2, 3, 1)
        if self.along_channels:
            pos = F.interpolate(self.pos_embed, size=(x.shape[2], DIM), mode="bilinear")
        else:
            pos = resample_nhwc(self.pos_embed, x.shape[1:3])
        x = x + pos
        x = x + self.fc2(F.gelu(self.fc1(self.norm(x))))
        return self.head(x.mean((1, 2)))


def test_resized_position_embedding_is_sliced_with_the_residual_stream() -> None:
    torch.manual_seed(0)
    model, x = SamLike().eval(), torch.randn(1, 3, 16, 16)
    pr = ChannelPruner(model, x)
    stream = group_of(pr, "proj")
    assert stream.prunable, stream.excluded_reason
    plan = pr.plan({stream.id: 0.5})
    slim = slim_matches_sparse(x, pr, plan)
    assert slim.pos_embed.shape == (1, GRID, GRID, DIM // 2)
    assert slim.proj.out_channels == DIM // 2


def test_weight_resized_along_the_channel_dim_freezes_them() -> None:
    torch.manual_seed(0)
    model, x = SamLike(along_channels=True).eval(), torch.randn(1, 3, 16, 16)
    pr = ChannelPruner(model, x)
    stream = group_of(pr, "proj")
    assert not stream.prunable
    assert "weight resampled along the channel dim" in stream.excluded_reason
    plan = pr.plan(0.5)  # the MLP width still prunes
    slim_matches_sparse(x, pr, plan)

"""The capture's probe slims a ``meta`` copy of the model (issue 18: inception_v4 timing out).

The probe narrows groups and runs the slim copy; its search (``tests/torch/test_probe.py``) may
slim the model a dozen times. Each step slims a meta copy, so no weight is copied or sliced
however large the model: a meta slim has exactly the real slim's shapes and sizes.
"""

from __future__ import annotations

import torch
from torch import nn

from uif_explorer.torch.apply import make_slim
from uif_explorer.torch.pruner import ChannelPruner


def test_a_meta_slim_has_the_real_slim_shapes_without_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 24, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5))
    x = torch.randn(2, 3, 8, 8)
    model(x)
    model.eval()
    pr = ChannelPruner(model, x)
    plan = pr.plan_for_removal(0.4, channel_divisible=1, tolerance=0.05)
    real = make_slim(model, pr.capture, plan)
    meta = make_slim(model.to("meta"), pr.capture, plan)
    shapes = {n: p.shape for n, p in real.state_dict().items()}
    assert {n: p.shape for n, p in meta.state_dict().items()} == shapes
    assert all(p.is_meta for p in meta.parameters())
    assert (meta[0].out_channels, meta[3].out_channels) == (real[0].out_channels,
                                                             real[3].out_channels)
    assert real[0].out_channels < 16 and meta[1].num_features == real[0].out_channels

"""The app's and CLI's default widths: this CPU's vector width unless the user sets one."""

from __future__ import annotations

import warnings

import pytest
import torch

from uif_explorer.core.latency import simd_lanes
from uif_explorer.services.latency_target import default_divisible, prune_options, removed_text
from uif_explorer.torch.pruner import ChannelPruner
from uif_explorer.zoo import load_torch_sample


def test_default_widths_are_multiples_of_the_vector_width_and_explicit_wins() -> None:
    lanes = simd_lanes()
    assert lanes in (2, 4, 8, 16)
    assert default_divisible() == lanes and default_divisible(3) == 3
    assert prune_options("latency") == {"target": "latency", "channel_divisible": lanes}
    with pytest.raises(ValueError, match="target="):
        prune_options("flops")
    with pytest.raises(ValueError, match="positive integer"):
        default_divisible(0)
    pr = ChannelPruner(load_torch_sample("resnet20").eval(), torch.randn(1, 1, 28, 28))
    with warnings.catch_warnings():  # coarse widths land near the target, not on it
        warnings.simplefilter("ignore", UserWarning)
        plan = pr.plan_for_removal(0.3, channel_divisible=default_divisible(), strict=False)
    assert plan.kept and all(len(k) % lanes == 0 for k in plan.kept.values())


def test_removed_text_is_the_one_wording_of_a_ratio() -> None:
    """The pruned model's source and the pages' captions say a ratio the same way."""
    assert removed_text(0.3, "macs") == "30 % of the MACs removed"
    assert removed_text(0.29, "latency") == "29 % of this machine's predicted latency removed"
    with pytest.raises(ValueError, match="target="):
        removed_text(0.3, "flops")

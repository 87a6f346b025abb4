"""The PyTorch rule registries: one call teaches a new layer, built-in rules are entries.

A producer and a channel-wise custom layer are each registered with one ``register_layer`` call
and pruned: the slim model equals the sparse one on random inputs and its counted MACs equal
the plan's. The registries are public and hold every built-in rule; a scale layer written as
``x * w.view(1, -1, 1, 1)`` needs no registration (a view of a weight stays a weight), and one
the op rules cannot follow freezes its producer with the producer's real channel count in the
groups table (issue 15, item 8).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from topologies import Head
from torch import nn

from uif_explorer.core.rules import LayerRule, UnsupportedLayerError
from uif_explorer.torch import register_layer, unregister_layer
from uif_explorer.torch.macs import count_macs
from uif_explorer.torch.pruner import ChannelPruner
from uif_explorer.torch.rules import LAYERS, OP_RULES, register_op


class PointwiseMix(nn.Module):
    """A custom producer: a 1x1 channel mix written with einsum (no conv module inside)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.mix = nn.Parameter(torch.randn(cout, cin) * 0.3)
        self.shift = nn.Parameter(torch.randn(cout) * 0.1)
        self.cin, self.cout = cin, cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("oc,nchw->nohw", self.mix, x) + self.shift[:, None, None]


class ChannelScale(nn.Module):
    """A custom channel-wise layer: a learned scale per channel through a view of its weight."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.rand(channels) + 0.5)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w.view(1, -1, 1, 1)


class CustomNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.scale = ChannelScale(16)
        self.mix = PointwiseMix(16, 12)
        self.body = nn.Conv2d(12, 10, 3, padding=1)
        self.head = Head(10)

    def forward(self, x):
        x = F.relu(self.scale(self.stem(x)))
        return self.head(F.relu(self.body(F.relu(self.mix(x)))))


def _set_mix(m: PointwiseMix, kept_in: int, kept_out: int) -> None:
    m.cin, m.cout = kept_in, kept_out


def _set_channels(m: ChannelScale, kept_in: int, kept_out: int) -> None:
    assert kept_in == kept_out
    m.channels = kept_out


@pytest.fixture
def registered():
    register_layer(PointwiseMix, out_dims={"mix": 0, "shift": 0}, in_dims={"mix": 1},
                   update=_set_mix)
    register_layer(ChannelScale, channelwise=True, out_dims={"w": 0}, update=_set_channels)
    yield
    unregister_layer(PointwiseMix)
    unregister_layer(ChannelScale)


def _check_slim_equals_sparse(pr: ChannelPruner, plan, x: torch.Tensor) -> nn.Module:
    slim, sparse = pr.slim_model(plan).eval(), pr.sparse_model(plan).eval()
    with torch.no_grad():
        ys, yl = sparse(x), slim(x)
    assert float((yl - ys).norm() / ys.norm()) <= 1e-5
    assert count_macs(slim, x) == pr.macs(plan) < pr.original_macs
    return slim


def test_custom_producer_and_channelwise_layers_prune_with_one_call_each(registered):
    torch.manual_seed(0)
    model, x = CustomNet().eval(), torch.randn(2, 3, 12, 12)
    pr = ChannelPruner(model, x)
    by_name = {g.name: g for g in pr.graph.groups}
    assert by_name["stem"].prunable and by_name["mix"].prunable
    assert "scale" in by_name["stem"].modules  # the scale follows the stem's channels
    assert by_name["mix"].num_channels == 12
    plan = pr.plan(0.5, channel_divisible=1)
    slim = _check_slim_equals_sparse(pr, plan, x)
    assert slim.scale.w.shape == (8,) and slim.scale.channels == 8
    assert slim.mix.mix.shape == (6, 8) and (slim.mix.cin, slim.mix.cout) == (8, 6)
    assert slim.mix.shift.shape == (6,)
    assert model.scale.w.shape == (16,)  # the user's model is untouched


class FlippedScale(ChannelScale):
    """A scale through an op without a rule (``flip``): the op rules cannot follow it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w.flip(0).view(1, -1, 1, 1)


def test_unregistered_view_scale_is_followed_by_the_op_rules():
    torch.manual_seed(0)
    model, x = CustomNet().eval(), torch.randn(2, 3, 12, 12)
    register_layer(PointwiseMix, out_dims={"mix": 0}, in_dims={"mix": 1})
    try:
        pr = ChannelPruner(model, x)
        (stem,) = [g for g in pr.graph.groups if g.name == "stem"]
        assert stem.prunable, stem.excluded_reason
        slim = _check_slim_equals_sparse(pr, pr.plan(0.5, channel_divisible=1), x)
    finally:
        unregister_layer(PointwiseMix)
    assert slim.scale.w.shape[0] == slim.stem.out_channels < 16


def test_unregistered_unfollowable_scale_freezes_producer_with_its_real_width():
    model, x = CustomNet().eval(), torch.randn(1, 3, 8, 8)
    model.scale = FlippedScale(16)
    register_layer(PointwiseMix, out_dims={"mix": 0}, in_dims={"mix": 1})
    try:
        table = ChannelPruner(model, x).groups_table().set_index("name")
    finally:
        unregister_layer(PointwiseMix)
    stem = table.loc["stem"]
    assert not stem["prunable"]
    assert stem["channels"] == 16
    assert "broadcast against channels" in stem["reason"]


def test_unregistered_weighted_custom_layer_says_how_to_register():
    model = nn.Sequential(nn.Conv2d(3, 16, 1), PointwiseMix(16, 4)).eval()
    with pytest.raises(UnsupportedLayerError, match="'1'.*excludes.*register_layer"):
        ChannelPruner(model, torch.randn(1, 3, 8, 8))


class Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.fc = nn.Linear(16, 24)
        self.out = nn.Linear(24, 3)

    def forward(self, idx):
        return self.out(F.gelu(self.fc(self.embed(idx))).mean(1))


def test_embedding_is_a_producer():
    torch.manual_seed(0)
    model, idx = Tokens().eval(), torch.randint(0, 20, (2, 5))
    pr = ChannelPruner(model, idx)
    assert {"embed", "fc"} <= {g.name for g in pr.graph.prunable_groups}
    slim = _check_slim_equals_sparse(pr, pr.plan(0.5, channel_divisible=1), idx)
    assert slim.embed.embedding_dim == slim.embed.weight.shape[1] == 8


def test_builtin_rules_are_registry_entries():
    for typ in (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm2d,
                nn.GroupNorm, nn.LayerNorm, nn.PReLU, nn.Embedding, nn.InstanceNorm2d):
        rule = LAYERS.lookup(typ)
        assert isinstance(rule, LayerRule) and rule.traced and rule.update is not None, typ
    assert LAYERS.lookup(nn.ConvTranspose2d).out_dims == {"weight": 1}

    class MyConv(nn.Conv2d):
        pass

    assert LAYERS.lookup(MyConv) is LAYERS.lookup(nn.Conv2d)  # found along the MRO
    for op in ("conv2d", "linear", "add", "cat", "view", "batch_norm", "embedding"):
        assert op in OP_RULES
    builtin = LAYERS.lookup(nn.Conv2d)
    register_layer(nn.Conv2d, out_dims={"weight": 0}, in_dims={"weight": 1})  # an override
    assert not LAYERS.lookup(nn.Conv2d).traced
    unregister_layer(nn.Conv2d)  # dropping it brings the built-in rule back
    assert LAYERS.lookup(nn.Conv2d) is builtin


def test_a_new_aten_op_is_one_registry_entry():
    """``pixel_shuffle`` has no built-in rule (a barrier); one entry makes it pass channels."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.b = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.b(torch.nn.functional.hardshrink(self.a(x)))

    x = torch.randn(1, 3, 4, 4)
    assert "hardshrink" not in OP_RULES
    assert not ChannelPruner(Net().eval(), x).graph.groups[0].prunable
    register_op("hardshrink", OP_RULES["relu"])
    try:
        assert ChannelPruner(Net().eval(), x).graph.groups[0].prunable
    finally:
        OP_RULES.pop("hardshrink")


def test_register_layer_checks_its_arguments():
    with pytest.raises(ValueError, match="out_dims"):
        register_layer(PointwiseMix)
    with pytest.raises(TypeError, match="layer class"):
        register_layer("PointwiseMix", out_dims={"mix": 0})

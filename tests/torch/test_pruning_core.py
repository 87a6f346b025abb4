"""The PyTorch pruning core on one small model per coupling rule.

For every topology: groups are what the rule says, slim == sparse on random inputs, the slim
model's counted MACs and params equal what the plan predicts, sparse masks survive optimizer
steps, and state dicts round-trip between the sparse, slim and original architectures.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from topologies import TOPOLOGIES, Head, build
from torch import nn

from uif_explorer.core.plan import PlanError
from uif_explorer.torch.capture import (
    CaptureError,
    UnsupportedLayerError,
    register_layer,
    unregister_layer,
)
from uif_explorer.torch.macs import count_macs, count_params
from uif_explorer.torch.pruner import ChannelPruner


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def group_of(pruner: ChannelPruner, module: str):
    hits = [g for g in pruner.graph.groups if module in g.producers]
    assert hits, f"{module} is in no group"
    return hits


@pytest.fixture(scope="module")
def pruned():
    """Each topology captured and pruned by 40% of its prunable channels."""
    out = {}
    for name in TOPOLOGIES:
        model, x = build(name)
        pr = ChannelPruner(model, x)
        plan = pr.plan(0.4, channel_divisible=1)
        out[name] = (model, x, pr, plan)
    return out


@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_slim_equals_sparse_and_costs_match(pruned, name):
    model, x, pr, plan = pruned[name]
    sparse, slim = pr.sparse_model(plan).eval(), pr.slim_model(plan).eval()
    with torch.no_grad():
        ys, yl = sparse(x), slim(x)
    assert ys.shape == yl.shape == model(x).shape
    assert rel_err(yl, ys) <= 1e-5
    assert count_macs(slim, x) == pr.macs(plan)
    assert count_params(slim) == pr.params(plan)
    if name != "channel_shuffle":
        assert pr.macs(plan) < pr.original_macs
        assert count_params(slim) < count_params(model)


@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_user_model_not_mutated(pruned, name):
    model, x, pr, plan = pruned[name]
    before = copy.deepcopy(model.state_dict())
    pr.sparse_model(plan)
    pr.slim_model(plan)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_three_way_add_couples_all_inputs(pruned):
    pr = pruned["three_way_add"][2]
    (g,) = group_of(pr, "stem.0")
    assert {"stem.0", "a.0", "b.0"} <= set(g.producers)
    assert g.prunable


def test_squeeze_excite_gate_coupled_with_block(pruned):
    pr = pruned["squeeze_excite"][2]
    (g,) = group_of(pr, "body.0")
    assert "fc2" in g.producers  # the gate's producer follows the gated channels
    (hidden,) = [h for h in pr.graph.groups if h.name == "fc1"]
    assert hidden.prunable and "fc2" in hidden.modules


def test_depthwise_follows_producer(pruned):
    pr = pruned["depthwise"][2]
    names = [g.name for g in pr.graph.groups]
    assert "dw.0" not in names and "dw2" not in names  # depthwise never leads a group
    (g,) = group_of(pr, "expand.0")
    assert {"dw.0", "dw2"} <= set(g.modules)


def test_grouped_conv_removes_evenly_per_group(pruned):
    model, x, pr, plan = pruned["grouped"]
    slim = pr.slim_model(plan)
    conv = slim.grouped[0]
    assert conv.groups == 4
    assert conv.in_channels % 4 == 0 and conv.out_channels % 4 == 0
    assert conv.in_channels < 16 and conv.out_channels < 24


def test_concat_inputs_pruned_on_their_own(pruned):
    pr = pruned["concat"][2]
    names = {g.name for g in pr.graph.prunable_groups}
    assert {"stem.0", "a.0", "b.0"} <= names
    slim = pr.slim_model(pruned["concat"][3])
    assert slim.fuse[0].in_channels == (
        slim.stem[0].out_channels + slim.a[0].out_channels + slim.b[0].out_channels
    )


def test_flatten_linear_removes_per_position(pruned):
    model, x, pr, plan = pruned["flatten_linear"]
    slim = pr.slim_model(plan)
    kept = slim.features[2][0].out_channels
    assert slim.fc1.in_features == kept * 16
    assert slim.fc1.out_features < 32 and slim.act.num_parameters == slim.fc1.out_features


def test_norms_follow_and_span_kept_channels_only(pruned):
    model, x, pr, plan = pruned["norms"]
    slim = pr.slim_model(plan)
    assert slim.gn.num_channels == slim.conv1.out_channels and slim.gn.num_groups == 4
    assert slim.conv1.out_channels % 4 == 0
    assert slim.ln.normalized_shape == (slim.conv2.out_channels,)


def test_channel_shuffle_excluded_cleanly(pruned):
    pr = pruned["channel_shuffle"][2]
    (g,) = group_of(pr, "a.0")
    assert not g.prunable and "channel" in g.excluded_reason


def test_shared_module_and_layer_scale(pruned):
    model, x, pr, plan = pruned["shared_control_flow"]
    (g,) = group_of(pr, "stem.0")
    assert "shared.0" in g.producers
    slim = pr.slim_model(plan)
    assert slim.scale.shape[0] == slim.stem[0].out_channels


def test_mlp_hidden_units(pruned):
    pr = pruned["mlp"][2]
    (hidden,) = [g for g in pr.graph.groups if g.name == "fc1"]
    assert hidden.prunable
    (tokens,) = group_of(pr, "embed")
    assert "fc2" in tokens.producers


@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("name", ["squeeze_excite", "norms", "grouped", "flatten_linear"])
def test_masks_survive_optimizer_steps(pruned, name, opt):
    model, x, pr, plan = pruned[name]
    sparse = pr.sparse_model(plan).train()
    optim = {
        "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
        "adam": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=5e-4),
        "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.05),
    }[opt](sparse.parameters())
    zero_before = {k: v == 0 for k, v in sparse.state_dict().items() if v.is_floating_point()}
    for _ in range(3):
        optim.zero_grad()
        out = sparse(torch.randn_like(x))
        out.pow(2).mean().backward()
        optim.step()
    state = sparse.state_dict()
    masked = 0
    for k, was_zero in zero_before.items():
        if k.endswith(("running_var", "running_mean")):
            continue
        mask_entries = was_zero & (_mask_of(sparse, k) == 0)
        masked += int(mask_entries.sum())
        assert torch.all(state[k][mask_entries] == 0), k
    assert masked > 0


def _mask_of(model: nn.Module, key: str) -> torch.Tensor:
    mod_name, _, attr = key.rpartition(".")
    owner = model.get_submodule(mod_name) if mod_name else model
    mask = getattr(owner, attr + "_uif_mask", None)
    return mask if mask is not None else torch.ones_like(getattr(owner, attr))


@pytest.mark.parametrize("name", ["three_way_add", "depthwise", "concat", "norms", "mlp"])
def test_state_dicts_round_trip(pruned, name):
    model, x, pr, plan = pruned[name]
    sparse = pr.sparse_model(plan).eval()
    state = sparse.state_dict()
    ref = model.state_dict()
    assert list(state) == list(ref)
    assert all(state[k].shape == ref[k].shape for k in ref)
    fresh = copy.deepcopy(model)
    fresh.load_state_dict(state)  # loads into the original architecture
    slim = pr.slim_model(plan).eval()
    slim.load_state_dict(sparse.slim_state_dict())
    with torch.no_grad():
        assert rel_err(slim(x), sparse(x)) <= 1e-5
    back = slim.sparse_state_dict()
    assert all(torch.allclose(back[k], state[k]) for k in state)


def test_slim_is_rebuilt_from_spec_in_a_fresh_pruner(pruned):
    model, x, pr, plan = pruned["concat"]
    spec = pr.to_spec(plan, removal_ratio=None)
    again = ChannelPruner(copy.deepcopy(model), x)
    plan2 = again.plan_from_spec(spec)
    slim = again.slim_model(plan2)
    slim.load_state_dict(pr.sparse_model(plan).slim_state_dict())
    with torch.no_grad():
        assert rel_err(slim(x), pr.slim_model(plan)(x)) <= 1e-6


def test_plan_for_removal_lands_within_one_point(pruned):
    for name in ("concat", "flatten_linear"):
        pr = pruned[name][2]
        for target in (0.2, 0.35):
            plan = pr.plan_for_removal(target, channel_divisible=1)
            assert abs(pr.removal(plan) - target) <= 0.01


@pytest.mark.parametrize("bad", [-1, 0, 1, 2, float("nan")])
def test_bad_removal_ratio(pruned, bad):
    pr = pruned["three_way_add"][2]
    with pytest.raises(PlanError, match="removal_ratio"):
        pr.plan_for_removal(bad)


def test_unreachable_removal_is_a_clear_error(pruned):
    pr = pruned["flatten_linear"][2]
    with pytest.raises(PlanError, match="Cannot remove"):
        pr.plan_for_removal(0.99)


def test_importance_reduced_over_whole_group(pruned):
    model, x, pr, plan = pruned["three_way_add"]
    (g,) = group_of(pr, "stem.0")
    base = pr.scores("l1")[g.id].copy()
    bumped = copy.deepcopy(model)
    with torch.no_grad():
        bumped.b[0].weight[3].mul_(100.0)  # not the group's first conv
    score = ChannelPruner(bumped, x).scores("l1")[g.id]
    assert np.argmax(score) == 3 and np.argmax(base) != 3 or score[3] > base[3]
    for crit in ("l2", "bn_scale", "random"):
        assert pr.scores(crit)[g.id].shape == (g.num_channels,)


def test_channel_divisible_rounds_kept_channels(pruned):
    pr = pruned["three_way_add"][2]
    plan = pr.plan(0.3, channel_divisible=4)
    slim = pr.slim_model(plan)
    assert slim.stem[0].out_channels % 4 == 0


def test_excludes_by_name_and_module():
    model, x = build("concat")
    by_name = ChannelPruner(model, x, excludes=["a.0"])
    assert not [g for g in by_name.graph.groups if "a.0" in g.modules][0].prunable
    by_obj = ChannelPruner(model, x, excludes=[model.b[0]])
    assert not [g for g in by_obj.graph.groups if "b.0" in g.modules][0].prunable
    with pytest.raises(ValueError, match="did you mean"):
        ChannelPruner(model, x, excludes=["a.9"])


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:  # depends on values: cannot be captured for every input
            return y.relu()
        return y


def test_uncapturable_model_says_why():
    with pytest.raises(CaptureError, match="torch.export could not capture DataDependent"):
        ChannelPruner(DataDependent(), torch.randn(1, 3, 8, 8))


def test_wrong_input_signature_says_what_to_check():
    model, _ = build("three_way_add")
    with pytest.raises(CaptureError, match="input signature"):
        ChannelPruner(model, torch.randn(1, 5, 16, 16))


class Bilinear(nn.Module):
    """A weighted op without a rule (aten.bilinear) fed by prunable channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.weight = nn.Parameter(torch.randn(4, 8, 8))

    def forward(self, x):
        v = self.conv(x).mean(dim=(2, 3))
        return F.bilinear(v, v, self.weight)


def test_weighted_op_without_rule_names_module_and_hint():
    with pytest.raises(UnsupportedLayerError, match="excludes.*register_layer"):
        ChannelPruner(Bilinear(), torch.randn(1, 3, 8, 8))


class ScaledConv(nn.Module):
    """A custom layer: a conv whose filters carry a learned per-channel scale."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) * 0.2)
        self.scale = nn.Parameter(torch.rand(cout) + 0.5)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale[:, None, None, None], padding=1)


class CustomNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.custom = ScaledConv(8, 12)
        self.head = Head(12)

    def forward(self, x):
        return self.head(F.relu(self.custom(F.relu(self.stem(x)))))


def test_register_custom_layer_in_one_call():
    torch.manual_seed(0)
    model, x = CustomNet().eval(), torch.randn(2, 3, 8, 8)
    register_layer(
        ScaledConv,
        out_dims={"weight": 0, "scale": 0},
        in_dims={"weight": 1},
        update=lambda m, cin, cout: None,
    )
    try:
        pr = ChannelPruner(model, x)
        names = {g.name for g in pr.graph.prunable_groups}
        assert {"stem", "custom"} <= names
        plan = pr.plan(0.5, channel_divisible=1)
        slim, sparse = pr.slim_model(plan).eval(), pr.sparse_model(plan).eval()
        assert slim.custom.weight.shape == (6, 4, 3, 3)
        with torch.no_grad():
            assert rel_err(slim(x), sparse(x)) <= 1e-5
        assert count_macs(slim, x) == pr.macs(plan)
    finally:
        unregister_layer(ScaledConv)


@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_macs_from_counts_equal_macs_from_plan(pruned, name):
    _, _, pr, plan = pruned[name]
    if not pr.cost.count_model_exact:
        pytest.fail(f"{name}: expected every op to see whole groups")
    counts = {gid: len(k) for gid, k in plan.kept.items()}
    assert pr.cost.macs_of_counts(counts) == pr.macs(plan)


def test_depthwise_after_concat_keeps_inputs_separate(pruned):
    pr = pruned["concat_depthwise"][2]
    (a,) = group_of(pr, "a.0")
    (b,) = group_of(pr, "b.0")
    assert a.id != b.id and a.prunable and b.prunable
    assert "dw.0" in a.modules and "dw.0" in b.modules

"""The supernet (torch/ofa/space.py, dynamic.py): reordering, static == dynamic subnets, kernels.

Contract checks on the trained samples and on small models from ``tests/support/topologies.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ofa_models import kernels_model, rel_err, sample_model, state_digest
from topologies import TOPOLOGIES, build
from torch import nn

from uif_explorer.torch.macs import count_macs, count_params
from uif_explorer.torch.ofa import OFAPruner, get_static_subnet, sample_subnet, set_subnet
from uif_explorer.torch.ofa.dynamic import is_dynamic
from uif_explorer.torch.ofa.space import plain_copy


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_reordering_keeps_the_full_model_outputs(name):
    model, x = build(name)
    before = state_digest(model)
    ofa = OFAPruner(model, x).ofa_model(channel_divisible=4, auto_add_excludes=False)
    space = ofa.ofa_space
    with torch.no_grad():
        ref = model(x)
        assert rel_err(plain_copy(ofa)(x), ref) <= 1e-5
        assert rel_err(ofa.eval()(x), ref) <= 1e-5  # max subnet == the full model
    assert state_digest(model) == before
    if space.groups:  # channels really moved (random weights have no sorted order)
        assert any(not torch.equal(a, b) for a, b in zip(
            model.state_dict().values(), ofa.state_dict().values(), strict=True))


@pytest.mark.parametrize("name", ["mobilenetv2_small", "resnet20"])
def test_reordering_keeps_sample_outputs(name):
    model = sample_model(name)
    x = torch.randn(2, 1, 28, 28)
    ofa = OFAPruner(model, x[:1]).ofa_model()
    with torch.no_grad():
        assert rel_err(plain_copy(ofa).eval()(x), model(x)) <= 1e-5


def _static_vs_dynamic(model: nn.Module, x: torch.Tensor, divisible: int, seeds=(0, 1),
                       auto: bool = True):
    ofa = OFAPruner(model, x[:1]).ofa_model(channel_divisible=divisible,
                                            auto_add_excludes=auto).eval()
    settings = [sample_subnet(ofa, "max")[1], sample_subnet(ofa, "min")[1]]
    settings += [sample_subnet(ofa, "random", rng=s)[1] for s in seeds]
    assert settings[0] != settings[1]
    for setting in settings:
        set_subnet(ofa, setting)
        with torch.no_grad():
            dynamic = ofa(x)
        static, config, macs, params = get_static_subnet(ofa, setting)
        static.eval()
        with torch.no_grad():
            out = static(x)
        assert rel_err(out, dynamic) <= 1e-5, setting
        assert not any(is_dynamic(m) for m in static.modules())
        assert type(static) is type(model)
        assert macs == pytest.approx(count_macs(static, x[:1]) / 1e6, abs=1e-9)
        assert params == pytest.approx(count_params(static) / 1e6, abs=1e-9)
        assert config["subnet_setting"] == setting
    return ofa


@pytest.mark.parametrize("name", ["mobilenetv2_small", "resnet20"])
def test_static_equals_dynamic_on_samples(name):
    ofa = _static_vs_dynamic(sample_model(name), torch.randn(2, 1, 28, 28), 8)
    assert len(ofa.ofa_space.groups) >= 10


@pytest.mark.parametrize("name", ["concat", "chunk", "depthwise", "flatten_linear",
                                  "transposed", "mlp", "squeeze_excite"])
def test_static_equals_dynamic_on_topologies(name):
    model, x = build(name)
    ofa = _static_vs_dynamic(model, x, 4, auto=False)
    assert ofa.ofa_space.groups


def test_concat_consumer_keeps_the_best_of_each_segment():
    model, x = build("concat")
    ofa = OFAPruner(model, x).ofa_model(channel_divisible=4, auto_add_excludes=False)
    sample_subnet(ofa, "min")
    sel = ofa.fuse[0].uif_sel["weight"]
    idx = [s for d, s in sel if d == 1][0]
    # fuse reads cat([stem 8 -> 4, a 12 -> 8, b 10 -> 4]): a prefix of every segment
    assert idx.tolist() == [0, 1, 2, 3] + list(range(8, 16)) + list(range(20, 24))


def test_elastic_kernels_and_legal_samples():
    model, x = kernels_model()
    ofa = _static_vs_dynamic(model, x, 8, seeds=range(6))
    space = ofa.ofa_space
    assert {k.module: k.kernels for k in space.kernels} == {
        "c5": (3, 5), "dw7": (3, 5, 7), "same": (3, 5)}  # stem: first conv; odd: not square
    group = {g.name: g for g in space.groups}["c5"]
    assert group.widths == (16, 24)  # 24 * [0.5, 0.75, 1] rounded to 8: 16, 16, 24
    rng = np.random.default_rng(0)
    for _ in range(30):
        _, setting = sample_subnet(ofa, "random", rng)
        for entry in setting:
            if "width" in entry:
                assert entry["width"] == 24 or entry["width"] % 8 == 0
                assert 8 <= entry["width"] <= 24
            else:
                k = entry["kernel_size"]
                assert k % 2 == 1 and 3 <= k <= {"c5": 5, "dw7": 7, "same": 5}[entry["module"]]
        widths = {e["group"]: e["width"] for e in setting if "group" in e}
        kernels = {e["module"]: e["kernel_size"] for e in setting if "module" in e}
        seen = {}

        def hook(m, _inputs, out, seen=seen):
            seen[m.uif_name] = (out.shape[1], m.uif_kernel)

        hooks = []
        for n in ("c5", "dw7", "same"):
            getattr(ofa, n).uif_name = n
            hooks.append(getattr(ofa, n).register_forward_hook(hook))
        with torch.no_grad():  # the dynamic layers really run at those sizes
            ofa(x)
        for h in hooks:
            h.remove()
        assert seen["c5"][0] == seen["dw7"][0] == widths["c5"]
        assert seen["same"][0] == widths["same"]
        for n in ("c5", "dw7", "same"):
            assert seen[n][1] in (None, kernels[n]) and (seen[n][1] is None) == (
                kernels[n] == {"c5": 5, "dw7": 7, "same": 5}[n])


def test_width_candidates_follow_expand_ratio(mbv2):
    _, _, ofa = mbv2
    for g in ofa.ofa_space.groups:
        expected = sorted({g.channels} | {
            max(8, min(g.channels, int(round(r * g.channels / 8)) * 8)) for r in (0.5, 0.75)})
        assert list(g.widths) == expected

"""OFAPruner and the subnet functions: the guide's flow, excludes, settings, config files.

The guide's calls (section 4.1.3.2) run with its function and argument names on the sample
MobileNetV2 and the bundled Fashion-MNIST subset (values scaled down: a few batches, a tiny
search, MACs ranges fitted to the sample's few million MACs; its ``.cuda()`` calls dropped).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from ofa_models import GUIDE_KEYS, sample_model, state_digest
from torch import nn

from uif_explorer.core.evolution import bin_key
from uif_explorer.data import torch_loader
from uif_explorer.torch.evaluation import adaptive_bn_calibration, top1_accuracy
from uif_explorer.torch.macs import count_macs
from uif_explorer.torch.ofa import (
    OFAPruner,
    SubnetSettingError,
    get_static_subnet,
    load_subnet_config,
    sample_subnet,
    save_subnet_config,
    train,
)
from uif_explorer.torch.ofa.dynamic import is_dynamic


def test_guide_ofa_flow_on_sample_mobilenetv2(tmp_path):
    """The guide's steps with the ready-made sandwich loop (``train``); the guide's own loop,
    written out, is in ``tests/guide/test_guide_pytorch_ofa.py``."""
    torch.manual_seed(0)
    model = sample_model("mobilenetv2_small")
    before = state_digest(model)
    inputs = torch.randn([1, 1, 28, 28], dtype=torch.float32)
    ofa_pruner = OFAPruner(model, inputs, workdir=tmp_path / ".vai")
    ofa_model = ofa_pruner.ofa_model([0.5, 0.75, 1], excludes=None, auto_add_excludes=True)
    assert all(is_dynamic(m) for m in ofa_model.modules()
               if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)))

    train_loader = torch_loader("train", limit=64, batch_size=32)
    val_loader = torch_loader("test", limit=64, batch_size=64)
    changed = [p.detach().clone() for p in ofa_model.parameters()]
    train(ofa_model, copy.deepcopy(model), train_loader, epochs=1, lr=0.01)  # sandwich rule
    assert any(not torch.equal(a, b) for a, b in zip(changed, ofa_model.parameters(),
                                                      strict=True))

    def calibration_fn(model, dataloader, number_forward=1):
        adaptive_bn_calibration(model, dataloader, number_forward)

    def eval_fn(model, dataloader):
        return top1_accuracy(model, dataloader)

    pareto_global = ofa_pruner.run_evolutionary_search(
        ofa_model, calibration_fn, (train_loader,), eval_fn, (val_loader,), "acc1", "max",
        min_flops=3, max_flops=5, macs_step=0.5, parent_popu_size=3, iteration=2,
        mutate_size=2, crossover_size=1)
    ofa_pruner.save_subnet_config(pareto_global, tmp_path / "pareto_global.txt")
    assert pareto_global and all(set(e) == GUIDE_KEYS for e in pareto_global.values())
    for key, entry in pareto_global.items():
        assert entry["mode"] == "evaluate" and 3 <= entry["macs"] <= 5
        assert key == bin_key(entry["macs"], 0.5) and len(key.split(".")[1]) == 1
    assert (tmp_path / ".vai" / f"{ofa_pruner.name}_evolution.json").exists()

    pareto_global = ofa_pruner.load_subnet_config(tmp_path / "pareto_global.txt")
    key = sorted(pareto_global, key=float)[-1]
    static_subnet, static_subnet_config, flops, params = ofa_pruner.get_static_subnet(
        ofa_model, pareto_global[key]["subnet_setting"])
    assert flops == pytest.approx(pareto_global[key]["macs"])
    assert params == pytest.approx(pareto_global[key]["params"])
    assert flops == pytest.approx(count_macs(static_subnet, inputs) / 1e6)
    assert not any(is_dynamic(m) for m in static_subnet.modules())
    assert static_subnet_config["subnet_setting"] == pareto_global[key]["subnet_setting"]
    assert state_digest(model) == before  # the user's model is never changed


def test_excludes_by_name_and_module_take_effect():
    model = sample_model("resnet20")
    pruner = OFAPruner(model, torch.randn(1, 1, 28, 28))
    auto = pruner.ofa_model()
    names = {g.name for g in auto.ofa_space.groups}
    assert "conv1" not in names and "layer3.0.conv2" not in names  # first conv, feeds fc
    free = pruner.ofa_model(auto_add_excludes=False)
    assert {"conv1", "layer3.0.conv2"} <= {g.name for g in free.ofa_space.groups}

    ofa = pruner.ofa_model(excludes=["layer2.0.conv1", model.layer3[1].conv1])
    space = ofa.ofa_space
    names = {g.name for g in space.groups}
    assert "layer2.0.conv1" not in names and "layer3.1.conv1" not in names
    reasons = {f["group"]: f["reason"] for f in space.fixed}
    assert reasons["layer2.0.conv1"].startswith("excluded")
    _, setting = sample_subnet(ofa, "min")
    static, *_ = get_static_subnet(ofa, setting)
    assert static.layer2[0].conv1.out_channels == 32
    assert static.layer3[1].conv1.out_channels == 64
    assert static.layer2[1].conv1.out_channels == 16  # not excluded: min width
    with pytest.raises(ValueError, match="layer9"):
        pruner.ofa_model(excludes=["layer9.conv"])


def test_bad_ofa_arguments_are_clear_errors(mbv2):
    _, pruner, _ = mbv2
    for bad in ([], [0], [1.5], "0.5", [0.5, None]):
        with pytest.raises(ValueError, match="expand_ratio"):
            pruner.ofa_model(bad)
    with pytest.raises(ValueError, match="channel_divisible"):
        pruner.ofa_model(channel_divisible=0)
    with pytest.raises(ValueError, match="mode"):
        sample_subnet(pruner.ofa_model(), "medium")
    with pytest.raises(TypeError, match="OFA model"):
        get_static_subnet(nn.Linear(2, 2), [])


def test_subnet_setting_errors_and_defaults(mbv2):
    _, _, ofa = mbv2
    space = ofa.ofa_space
    g = space.groups[0]
    _, setting = sample_subnet(ofa, "min")
    cases = [
        ([{"group": "features.99.conv", "width": 8}], "Unknown group"),
        ([{"group": g.name, "width": 7}], "not a candidate"),
        ([{"group": g.name, "width": "16"}], "integer"),
        ([{"group": g.name, "width": g.channels}] * 2, "twice"),
        ([{"module": "features.2.conv.1.0", "kernel_size": 3}], "no elastic kernel"),
        ([{"group": g.name}], "Expected entries"),
        ([{"group": "classifier", "width": 4}], "not elastic"),
        ("max", "list"),
    ]
    for bad, msg in cases:
        with pytest.raises(SubnetSettingError, match=msg):
            get_static_subnet(ofa, bad)
    # entries left out run at their largest option; a fixed group at its own width is fine
    _, config, macs, _ = get_static_subnet(ofa, [{"group": "classifier", "width": 10}])
    assert macs == pytest.approx(ofa.ofa_space.cost_m(space.choice.largest())[0])
    _, config, _, _ = get_static_subnet(ofa, {"subnet_setting": setting})
    assert config["subnet_setting"] == setting


def test_subnet_config_json_round_trip(tmp_path, mbv2):
    _, _, ofa = mbv2
    _, setting = sample_subnet(ofa, "random", rng=3)
    _, _, macs, params = get_static_subnet(ofa, setting)
    pareto = {"4.5": {"net_id": "net_init_0", "mode": "evaluate", "acc1": 80.5,
                      "macs": macs, "flops": macs, "params": params, "subnet_setting": setting}}
    save_subnet_config(pareto, tmp_path / "pareto.json")
    assert load_subnet_config(tmp_path / "pareto.json") == pareto
    assert [p.name for p in tmp_path.iterdir()] == ["pareto.json"]  # no temporary left
    for missing in ("macs", "flops"):  # a reference file (flops) or an older one of ours (macs)
        one = {"4.5": {k: v for k, v in pareto["4.5"].items() if k != missing}}
        (tmp_path / "one.txt").write_text(json.dumps(one))
        loaded = load_subnet_config(tmp_path / "one.txt")
        assert loaded["4.5"]["macs"] == loaded["4.5"]["flops"] == macs
    static, _, m2, _ = get_static_subnet(ofa, loaded["4.5"]["subnet_setting"])
    assert m2 == macs

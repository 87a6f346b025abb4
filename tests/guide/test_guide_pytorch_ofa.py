"""The guide's once-for-all section (4.1.3.2), call for call, on the sample MobileNetV2.

Same calls, same order, same argument names and positional styles as the guide; imports
adapted (``pytorch_nndct.OFAPruner`` -> ``uif_explorer.torch.ofa.OFAPruner``),
``mobilenet_v2(pretrained=True)`` replaced by the bundled trained MobileNetV2-small and the
inputs by its 1x28x28 shape. The guide names the pruner ``pruner`` and then ``ofa_pruner``: one
object here. Scaled to the sample (conventions.md): two training batches, a MACs range of 3-5 M
(the sample's subnets span 2.2-6.4 M MACs, as the guide's 230-250 sits inside mobilenet_v2's
span) and a small search population (``parent_popu_size`` ... are the reference's own
arguments). The guide's search call misses a comma after ``(train_loader,)``: added.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uif_explorer.torch.macs import count_macs
from uif_explorer.torch.ofa import OFAPruner
from uif_explorer.torch.ofa.dynamic import DynamicBatchNorm2d, DynamicConv2d
from uif_explorer.zoo import load_torch_sample

pytestmark = pytest.mark.slow
GUIDE_ENTRY_KEYS = {"net_id", "mode", "acc1", "flops", "params", "subnet_setting"}
MIN_FLOPS, MAX_FLOPS = 3, 5
SEARCH_SCALE = {"parent_popu_size": 4, "iteration": 2, "mutate_size": 2, "crossover_size": 1}


def kd_loss(output: torch.Tensor, soft_logits: torch.Tensor) -> torch.Tensor:
    """Distillation from the teacher's logits (the guide leaves ``kd_loss`` to the user)."""
    return F.kl_div(F.log_softmax(output, 1), F.softmax(soft_logits, 1), reduction="batchmean")


cross_entropy_loss = nn.CrossEntropyLoss()


@pytest.fixture(scope="module")
def ofa(guide_dir):
    """Creating a Model, Creating an OFA Pruner, Generating an OFA Model."""
    model = load_torch_sample("mobilenetv2_small")  # the guide: mobilenet_v2(pretrained=True)

    inputs = torch.randn([1, 1, 28, 28], dtype=torch.float32)
    pruner = OFAPruner(model, inputs)
    ofa_pruner = pruner

    ofa_model = ofa_pruner.ofa_model([0.5, 0.75, 1], excludes=None, auto_add_excludes=True)
    return model, inputs, ofa_pruner, ofa_model


@pytest.fixture(scope="module")
def trained(ofa, train_loader):
    """Training an OFA Model: the guide's sandwich-rule loop."""
    model, _inputs, ofa_pruner, ofa_model = ofa
    teacher_model = copy.deepcopy(model)
    optimizer = torch.optim.SGD(ofa_model.parameters(), lr=0.01, momentum=0.9)
    lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    ofa_model.train()
    before = {n: p.detach().clone() for n, p in ofa_model.named_parameters()}

    # using sandwich rule and sampling subnet.
    for _i, (images, target) in enumerate(train_loader):

        # total subnets to be sampled
        optimizer.zero_grad()

        teacher_model.train()
        with torch.no_grad():
            soft_logits = teacher_model(images).detach()

        for arch_id in range(4):
            if arch_id == 0:
                model, _ = ofa_pruner.sample_subnet(ofa_model, 'max')
            elif arch_id == 1:
                model, _ = ofa_pruner.sample_subnet(ofa_model, 'min')
            else:
                model, _ = ofa_pruner.sample_subnet(ofa_model, 'random')

            output = model(images)

            loss = kd_loss(output, soft_logits) + cross_entropy_loss(output, target)
            loss.backward()

        torch.nn.utils.clip_grad_value_(ofa_model.parameters(), 1.0)
        optimizer.step()
        lr_scheduler.step()
    return ofa_model, before


@pytest.fixture(scope="module")
def searched(ofa, trained, eval_fn, calibration_fn, train_loader, val_loader):
    """Searching Constrained Subnetworks: the evolutionary search and the saved Pareto set."""
    _model, _inputs, ofa_pruner, ofa_model = ofa
    pareto_global = ofa_pruner.run_evolutionary_search(
        ofa_model, calibration_fn, (train_loader,), eval_fn, (val_loader,), 'acc1', 'max',
        min_flops=MIN_FLOPS, max_flops=MAX_FLOPS, **SEARCH_SCALE)
    ofa_pruner.save_subnet_config(pareto_global, 'pareto_global.txt')
    return pareto_global


def test_ofa_model_has_dynamic_layers_and_auto_excludes(ofa):
    """``ofa_model()`` swaps Conv2d / BatchNorm2d for dynamic versions; the first and last
    convolutions stay at full width (``auto_add_excludes=True``); widths follow the ratios."""
    model, _inputs, ofa_pruner, ofa_model = ofa
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    dynamic = dict(ofa_model.named_modules())
    assert all(isinstance(dynamic[n], DynamicConv2d) for n in convs)
    assert all(isinstance(dynamic[n], DynamicBatchNorm2d)
               for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d))
    _, setting = ofa_pruner.sample_subnet(ofa_model, "min")
    smallest, _, _, _ = ofa_pruner.get_static_subnet(ofa_model, setting)
    small, full = dict(smallest.named_modules()), dict(model.named_modules())
    assert small[convs[0]].out_channels == full[convs[0]].out_channels  # first conv excluded
    assert small[convs[-1]].out_channels == full[convs[-1]].out_channels  # last conv excluded
    assert any(small[n].out_channels < full[n].out_channels for n in convs)  # the 0.5 widths


def test_sandwich_training_updates_the_ofa_model(trained):
    """Each subnetwork does its forward/backward pass and the shared parameters move."""
    ofa_model, before = trained
    moved = [n for n, p in ofa_model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(moved) > len(before) // 2


def test_sample_random_subnet_gives_a_trainable_subnetwork(ofa, train_loader):
    """The guide: "The ``sample_random_subnet()`` function can be used to get a subnetwork.
    The dynamic subnetwork can do a forward/backward pass." (named in the guide's text)"""
    _model, _inputs, ofa_pruner, ofa_model = ofa
    subnet = ofa_pruner.sample_random_subnet(ofa_model)
    model = subnet[0] if isinstance(subnet, tuple) else subnet
    images, target = next(iter(train_loader))
    loss = cross_entropy_loss(model(images), target)
    loss.backward()
    assert any(p.grad is not None for p in ofa_model.parameters())
    ofa_model.zero_grad()


def test_search_returns_the_guides_pareto_set(searched):
    """The guide: "The searching result looks like" ``{"230": {"net_id", "mode", "acc1", "flops",
    "params", "subnet_setting"}, ...}``: bins keyed by MACs inside the range."""
    pareto_global = searched
    assert Path("pareto_global.txt").exists()
    assert len(pareto_global) >= 2  # the default bin width fits the range (issue 15, item 4)
    for key, entry in pareto_global.items():
        assert GUIDE_ENTRY_KEYS <= set(entry)
        assert entry["mode"] == "evaluate"
        assert MIN_FLOPS <= entry["flops"] <= MAX_FLOPS
        assert abs(float(key) - entry["flops"]) < (MAX_FLOPS - MIN_FLOPS) / 2
    assert len({e["net_id"] for e in pareto_global.values()}) == len(pareto_global)
    assert list(Path(".vai").glob("*_evolution.json"))


def test_get_static_subnet_from_the_saved_pareto_set(ofa, searched, train_loader):
    """Getting a Subnetwork: ``load_subnet_config`` then ``get_static_subnet`` on one entry
    (the guide's ``'240'``: a key of its range; here the largest key of ours)."""
    _model, inputs, ofa_pruner, ofa_model = ofa
    key = max(searched, key=float)

    pareto_global = ofa_pruner.load_subnet_config('pareto_global.txt')
    static_subnet, static_subnet_config, flops, params = ofa_pruner.get_static_subnet(
        ofa_model, pareto_global[key]['subnet_setting'])

    assert flops == pytest.approx(pareto_global[key]["flops"])
    assert params == pytest.approx(pareto_global[key]["params"])
    assert flops == pytest.approx(count_macs(static_subnet, inputs) / 1e6)
    assert not any(isinstance(m, (DynamicConv2d, DynamicBatchNorm2d))
                   for m in static_subnet.modules())
    assert static_subnet_config["subnet_setting"] == pareto_global[key]["subnet_setting"]
    # "The static_subnet can be used for finetuning": one training step runs
    optimizer = torch.optim.SGD(static_subnet.parameters(), lr=0.01)
    images, target = next(iter(train_loader))
    static_subnet.train()
    cross_entropy_loss(static_subnet(images), target).backward()
    optimizer.step()

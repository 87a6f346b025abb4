"""Once-for-all: the guide's code, the supernet, subnets, the search and its files.

The guide's calls (section 4.1.3.2) run with its function and argument names on the sample
MobileNetV2 and the bundled Fashion-MNIST subset (values scaled down: a few batches, a tiny
search, MACs ranges fitted to the sample's few million MACs; its ``.cuda()`` calls dropped).
The rest checks the contract on small models from ``tests/support/topologies.py``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from topologies import TOPOLOGIES, build
from torch import nn

from uif_explorer.core.evolution import (
    SearchRangeError,
    bin_key,
    hypervolume,
    pareto_front,
    pareto_set,
)
from uif_explorer.data import torch_loader
from uif_explorer.io.workspace import read_json
from uif_explorer.torch.evaluation import adaptive_bn_calibration, top1_accuracy
from uif_explorer.torch.finetune import distillation_loss
from uif_explorer.torch.macs import count_macs, count_params
from uif_explorer.torch.ofa import (
    OFAPruner,
    SubnetSettingError,
    get_static_subnet,
    load_subnet_config,
    run_evolutionary_search,
    sample_subnet,
    sandwich_step,
    save_subnet_config,
    set_subnet,
    train,
)
from uif_explorer.torch.ofa.dynamic import is_dynamic
from uif_explorer.torch.ofa.space import plain_copy
from uif_explorer.zoo import build_torch, get_sample, load_torch_sample

REPO = Path(__file__).resolve().parents[1]
GUIDE_KEYS = {"net_id", "mode", "acc1", "macs", "flops", "params", "subnet_setting"}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def state_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode() + v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def sample_model(name: str) -> nn.Module:
    """The trained sample when its weights exist, else the architecture (same graph)."""
    if get_sample(name).weights_path.exists():
        return load_torch_sample(name)
    torch.manual_seed(0)
    return build_torch(name).eval()


class Kernels(nn.Module):
    """5x5 conv, a 7x7 depthwise with stride 2 and a padding='same' 5x5 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.c5 = nn.Conv2d(16, 24, 5, padding=2)
        self.bn = nn.BatchNorm2d(24)
        self.dw7 = nn.Conv2d(24, 24, 7, stride=2, padding=3, groups=24)
        self.same = nn.Conv2d(24, 16, 5, padding="same", bias=False)
        self.odd = nn.Conv2d(16, 16, (5, 3), padding=(2, 1))  # not square: fixed kernel
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.c5(F.relu(self.stem(x)))))
        x = self.odd(self.same(F.relu(self.dw7(x))))
        return self.fc(x.mean((2, 3)))


def kernels_model() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = Kernels().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 1.5)
    return model, torch.randn(2, 3, 16, 16)


@pytest.fixture(scope="module")
def mbv2():
    model = sample_model("mobilenetv2_small")
    pruner = OFAPruner(model, torch.randn(1, 1, 28, 28))
    return model, pruner, pruner.ofa_model()


# -- the guide's code --------------------------------------------------------------------
def test_guide_ofa_flow_on_sample_mobilenetv2(tmp_path):
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
    teacher_model = copy.deepcopy(model)
    optimizer = torch.optim.SGD(ofa_model.parameters(), lr=0.01, momentum=0.9)
    lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    ofa_model.train()
    changed = [p.detach().clone() for p in ofa_model.parameters()]
    for _i, (images, target) in enumerate(train_loader):  # the guide's sandwich loop
        optimizer.zero_grad()
        teacher_model.eval()
        with torch.no_grad():
            soft_logits = teacher_model(images).detach()
        for arch_id in range(4):
            if arch_id == 0:
                model_, _ = ofa_pruner.sample_subnet(ofa_model, "max")
            elif arch_id == 1:
                model_, _ = ofa_pruner.sample_subnet(ofa_model, "min")
            else:
                model_, _ = ofa_pruner.sample_subnet(ofa_model, "random")
            output = model_(images)
            loss = distillation_loss(output, soft_logits) + F.cross_entropy(output, target)
            loss.backward()
        torch.nn.utils.clip_grad_value_(ofa_model.parameters(), 1.0)
        optimizer.step()
        lr_scheduler.step()
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


# -- the supernet ------------------------------------------------------------------------
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


# -- training ----------------------------------------------------------------------------
def test_train_sandwich_rule_is_deterministic_and_reports_progress():
    model, x = build("concat")
    pruner = OFAPruner(model, x)
    a, b = (pruner.ofa_model(channel_divisible=4) for _ in range(2))
    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(12, 3, 16, 16, generator=gen),
                                          torch.randint(0, 5, (12,), generator=gen))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    calls = []
    table = train(a, model, loader, epochs=2, lr=0.05,
                  progress=lambda done, total, info: calls.append((done, total, info)))
    train(b, model, loader, epochs=2, lr=0.05, progress=lambda *_: None)
    assert [c[:2] for c in calls] == [(i, 6) for i in range(1, 7)]
    assert {"epoch", "loss", "lr"} <= set(calls[0][2])
    assert list(table["epoch"]) == [1, 2] and np.isfinite(table["loss"]).all()
    assert state_digest(a) == state_digest(b)  # same seed, same subnets, same weights
    assert state_digest(a) != state_digest(pruner.ofa_model(channel_divisible=4))
    assert not a.training and a.ofa_space.active == a.ofa_space.choice.largest()


def test_sandwich_step_clips_and_seeds_per_step():
    model, x = build("depthwise")
    ofa = OFAPruner(model, x).ofa_model(channel_divisible=4)
    seen = []
    apply = ofa.ofa_space.apply
    ofa.ofa_space.apply = lambda m, g: (seen.append(g), apply(m, g))[1]
    opt = torch.optim.SGD(ofa.parameters(), lr=0.0)
    y = torch.tensor([0, 1])
    out = sandwich_step(ofa, model, x * 100, y, opt, step=5)
    assert set(out) == {"loss", "max", "min", "random0", "random1"}
    assert all(p.grad is None or p.grad.abs().max() <= 1.0 for p in ofa.parameters())
    sandwich_step(ofa, model, x, y, opt, step=5)
    assert seen[:5] == seen[5:10]  # the same step draws the same subnets
    assert seen[0] == ofa.ofa_space.choice.largest() and seen[1] == ofa.ofa_space.choice.smallest()


def test_ddp_two_processes_train_identically(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO / "tests" / "support" / "ofa_ddp_worker.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == 2 and r0["pid"] != r1["pid"]
    assert r0["before"] == r1["before"]
    assert r0["after"] != r0["before"] and r1["after"] != r1["before"]  # both trained
    assert r0["after_params"] == r1["after_params"] and r0["after"] == r1["after"]
    assert r0["activated"] == r1["activated"] and r0["steps"] == 3 * 5
    assert r0["loss"] != r1["loss"]  # each rank saw its own data


# -- search ------------------------------------------------------------------------------
class Counter:
    """eval_fn / calibration_fn that count their calls and remember what they scored."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self.calls: list[str] = []
        self.calibrations = 0

    def calibrate(self, model: nn.Module) -> None:
        self.calibrations += 1

    def __call__(self, model: nn.Module) -> float:
        shapes = [tuple(p.shape) for p in model.parameters()]
        self.calls.append(json.dumps(shapes))
        with torch.no_grad():
            return float(model(self.x).float().mean())


def _search(ofa, tmp_path, counter, **kw):
    args = dict(metric="score", mode="max", macs_step=0.5, parent_popu_size=4, iteration=3,
                mutate_size=3, crossover_size=2, workdir=tmp_path, name="m")
    args.update(kw)
    return run_evolutionary_search(ofa, counter.calibrate, (), counter, (), **args)


def test_search_evaluates_each_candidate_once_and_the_last_generation(tmp_path, mbv2):
    _, _, ofa = mbv2
    counter = Counter(torch.randn(2, 1, 28, 28))
    lo, hi = 3.0, 5.5
    pareto = _search(ofa, tmp_path, counter, min_macs=lo, max_macs=hi)
    history = pareto.history
    assert len(counter.calls) == len(history) == pareto.evaluations
    assert counter.calibrations == len(history)
    keys = [json.dumps(r["subnet_setting"]) for r in history]
    assert len(set(keys)) == len(keys)  # no candidate twice
    assert len(set(counter.calls)) == len(counter.calls)
    assert len(history) == 4 + 3 * (3 + 2)
    assert {r["generation"] for r in history} == {-1, 0, 1, 2}
    assert any(r["net_id"].startswith("net_evo_2_") for r in history)  # last generation
    assert all(lo <= r["macs"] <= hi for r in history)
    for r in history:
        assert r["macs"] == pytest.approx(get_static_subnet(ofa, r["subnet_setting"])[2])
    # every bin's entry is the best of its bin, in the guide's shape
    assert set(pareto) == {bin_key(r["macs"], 0.5) for r in history}
    for key, entry in pareto.items():
        in_bin = [r for r in history if bin_key(r["macs"], 0.5) == key]
        assert entry["score"] == max(r["score"] for r in in_bin)
        assert set(entry) == {"net_id", "mode", "score", "macs", "flops", "params",
                              "subnet_setting"}
        assert entry["flops"] == entry["macs"]
    saved = read_json(tmp_path / "m_evolution.json", kind="uif-explorer-evolution")
    assert saved["complete"] and len(saved["history"]) == len(history)
    assert saved["pareto_set"] == json.loads(json.dumps(pareto))
    front = pareto_front(history, "score", "max")
    assert saved["pareto_front"] == [r["net_id"] for r in front]


def test_search_resumes_without_evaluating_again(tmp_path):
    model, x = build("concat")
    ofa = OFAPruner(model, x).ofa_model(channel_divisible=4, auto_add_excludes=False)
    first = Counter(x)
    pareto = _search(ofa, tmp_path, first)
    again = Counter(first.x)
    assert _search(ofa, tmp_path, again) == pareto and again.calls == []
    path = tmp_path / "m_evolution.json"
    data = json.loads(path.read_text())
    data["history"] = data["history"][:5]
    data["complete"] = False
    path.write_text(json.dumps(data))  # as if killed after 5 evaluations
    resumed = Counter(first.x)
    assert _search(ofa, tmp_path, resumed) == pareto
    assert len(resumed.calls) == len(first.calls) - 5
    forced = Counter(first.x)
    _search(ofa, tmp_path, forced, forced=True)
    assert len(forced.calls) == len(first.calls)


def test_unreachable_range_raises_at_once(tmp_path, mbv2):
    _, _, ofa = mbv2
    counter = Counter(torch.randn(1, 1, 28, 28))
    small, large = (ofa.ofa_space.cost_m(g)[0] for g in (
        ofa.ofa_space.choice.smallest(), ofa.ofa_space.choice.largest()))
    for lo, hi in ((large + 1, large + 2), (0.1, small - 0.01)):
        with pytest.raises(SearchRangeError, match="span"):
            _search(ofa, tmp_path, counter, min_flops=lo, max_flops=hi)
    with pytest.raises(SearchRangeError, match="min_macs <= max_macs"):
        _search(ofa, tmp_path, counter, min_macs=5, max_macs=4)
    with pytest.raises(ValueError, match="not two values"):
        _search(ofa, tmp_path, counter, min_macs=3, min_flops=4)
    assert counter.calls == []


def test_range_between_subnets_and_exhausted_space_end(tmp_path):
    model, x = build("depthwise")
    ofa = OFAPruner(model, x).ofa_model(channel_divisible=4, auto_add_excludes=False)
    space = ofa.ofa_space
    all_macs = sorted({space.cost_m(g)[0] for g in
                       np.ndindex(*space.choice.sizes)})
    gaps = [(a, b) for a, b in zip(all_macs, all_macs[1:], strict=False) if b - a > 1e-4]
    lo, hi = gaps[0]
    counter = Counter(x)
    with pytest.raises(SearchRangeError, match="attempts"):  # reachable ends, empty inside
        _search(ofa, tmp_path, counter, min_macs=lo + 1e-6, max_macs=hi - 1e-6,
                max_attempts=20)
    assert counter.calls == []
    pareto = _search(ofa, tmp_path, counter, iteration=25, max_attempts=20, macs_step=0.01)
    assert len(counter.calls) == len(pareto.history) <= space.choice.size  # ends, no repeats


@pytest.mark.slow
def test_search_through_process_pool_and_ray(tmp_path, mbv2):
    _, _, ofa = mbv2
    gen = torch.Generator().manual_seed(0)
    data = [(torch.randn(16, 1, 28, 28, generator=gen), torch.randint(0, 10, (16,),
                                                                       generator=gen))]
    args = (adaptive_bn_calibration, (data, 1), top1_accuracy, (data,), "acc1", "max", 3, 5,
            0.5, 3, 1, 2, 0.2, 1)
    inline = run_evolutionary_search(ofa, *args, workdir=tmp_path / "inline")
    for executor in ("process", "ray"):
        result = run_evolutionary_search(ofa, *args, executor, workdir=tmp_path / executor)
        assert result == inline, executor
        assert [r["net_id"] for r in result.history] == [r["net_id"] for r in inline.history]
        pids = {r["worker_pid"] for r in result.history}
        assert os.getpid() not in pids, executor
    import ray

    ray.shutdown()


# -- framework-neutral pieces ------------------------------------------------------------
def test_bins_front_and_hypervolume():
    assert bin_key(228.356192, 10) == "230" and bin_key(243.8, 10) == "240"
    assert bin_key(7.1, 0.1) == "7.1" and bin_key(7.13, 0.25) == "7.25"
    recs = [{"net_id": str(i), "macs": m, "params": 0.1, "acc1": a}
            for i, (m, a) in enumerate([(1.0, 50.0), (1.2, 45.0), (2.0, 80.0), (2.1, 70.0)])]
    assert [r["net_id"] for r in pareto_front(recs, "acc1")] == ["0", "2"]
    assert list(pareto_set(recs, "acc1", "max", 1.0)) == ["1", "2"]
    assert pareto_set(recs, "acc1", "max", 1.0)["1"]["net_id"] == "0"
    assert pareto_set(recs, "acc1", "min", 1.0)["1"]["net_id"] == "1"
    pts = [(r["macs"], r["acc1"]) for r in recs]
    assert hypervolume(pts, 3.0, 0.0) == pytest.approx(2.0 * 50 + 1.0 * 30)
    assert hypervolume(pts + [(2.5, 10.0)], 3.0, 0.0) == pytest.approx(130.0)
    assert hypervolume([(4.0, 90.0)], 3.0, 0.0) == 0.0
    assert hypervolume([(1.0, 0.2)], 2.0, 1.0, mode="min") == pytest.approx(0.8)


# -- bundled supernets -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mobilenetv2_small", "resnet20"])
def test_bundled_supernet_and_precomputed_search(name):
    from uif_explorer.torch.ofa import bundled_search, load_bundled_supernet

    pruner, ofa = load_bundled_supernet(name)
    info = json.loads((REPO / "sample_models" / f"{name}_supernet.json").read_text())
    assert info["accuracy"]["max_subnet"] > 50  # trained, not random
    x = torch.randn(2, 1, 28, 28)
    _, setting = sample_subnet(ofa, "random", rng=0)
    static, _, macs, _ = get_static_subnet(ofa, setting)
    with torch.no_grad():
        assert rel_err(static.eval()(x), ofa.eval()(x)) <= 1e-5
    search = bundled_search(name)
    history = search["history"]
    assert search["complete"] and len(history) >= 50
    step = search["settings"]["macs_step"]
    for key, entry in search["pareto_set"].items():
        assert set(entry) == GUIDE_KEYS
        assert entry["acc1"] == max(r["acc1"] for r in history
                                    if bin_key(r["macs"], step) == key)
    pareto = load_subnet_config(REPO / "sample_models" / f"{name}_supernet_pareto.json")
    assert pareto == search["pareto_set"]
    best = pareto[max(pareto, key=float)]
    assert get_static_subnet(ofa, best["subnet_setting"])[2] == pytest.approx(best["macs"])

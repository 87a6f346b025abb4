"""The trained supernets and precomputed searches bundled in ``sample_models/``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ofa_models import GUIDE_KEYS, rel_err

from uif_explorer.core.evolution import bin_key
from uif_explorer.torch.ofa import get_static_subnet, load_subnet_config, sample_subnet

REPO = Path(__file__).resolve().parents[3]


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

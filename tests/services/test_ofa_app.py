"""uif_explorer.services.ofa_app: what the OFA Pareto page and the ofa-* CLI commands compute.

The bundled MobileNetV2 supernet and its precomputed search are read once per module; the
searches run here are tiny (2 subnets scored on 64 test images).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from uif_explorer.core.evolution import SearchRangeError
from uif_explorer.present import charts
from uif_explorer.services import ofa_app
from uif_explorer.torch.capture import digest_weights
from uif_explorer.torch.ofa import active_setting, get_static_subnet, load_search
from uif_explorer.torch.ofa.bundled import supernet_path

SAMPLE = "mobilenetv2_small"


@pytest.fixture(scope="module")
def bundled():
    if not supernet_path(SAMPLE).exists():
        pytest.skip("the bundled supernet is not trained (sample_models/train_supernet.py)")
    ref = next(r for r in ofa_app.bundled_supernets() if r.sample == SAMPLE)
    _, ofa_model = ofa_app.load_supernet_ref(ref)
    evo = ofa_app.read_search(ofa_app.list_searches(ref, None)[0].path)
    return ref, ofa_model, evo


def test_bundled_supernets_and_their_search_are_listed(bundled, tmp_path: Path) -> None:
    ref, _, evo = bundled
    refs = ofa_app.list_supernets(tmp_path)
    assert {r.key for r in refs} >= {f"bundled:{SAMPLE}"}
    assert all(r.bundled for r in refs)  # an empty workspace adds nothing
    assert ref.label.startswith("MobileNetV2") and "bundled supernet" in ref.label
    searches = ofa_app.list_searches(ref, tmp_path)
    assert [s.bundled for s in searches] == [True]
    assert searches[0].complete and "500 images" in searches[0].data_source
    assert "136 subnets" in searches[0].label
    assert ofa_app.recorded_span(ref) == pytest.approx(ofa_app.macs_span(evo), abs=1e-6)


def test_front_filter_and_tables(bundled) -> None:
    _, _, evo = bundled
    lo, hi = ofa_app.macs_span(evo)
    everything = ofa_app.in_range(evo, None)
    assert len(everything) == len(evo["history"])
    assert ofa_app.front_ids(evo) == [
        r["net_id"] for r in sorted((ofa_app.record(evo, n) for n in evo["pareto_front"]),
                                    key=lambda r: r["macs"])]
    window = (3.0, 5.0)
    inside = ofa_app.in_range(evo, window)
    assert inside and len(inside) < len(everything)
    assert all(3.0 <= r["macs"] <= 5.0 for r in inside)
    front = ofa_app.front_ids(evo, window)
    accs = [ofa_app.record(evo, n)["acc1"] for n in front]
    assert accs == sorted(accs) and len(set(accs)) == len(accs)  # more MACs buys accuracy
    table = ofa_app.subnets_table(evo, window)
    assert list(table.columns) == ["net_id", "macs_m", "params_m", "accuracy", "generation",
                                   "front"]
    assert len(table) == len(inside) and table["macs_m"].is_monotonic_increasing
    assert set(table.loc[table["front"], "net_id"]) == set(front)

    ids = ["net_min", "net_max"]
    cmp = ofa_app.compare_table(evo, ids)
    assert list(cmp["net_id"]) == ids
    assert cmp["macs_m"].iloc[0] == pytest.approx(lo, abs=1e-4)
    assert cmp["macs_m"].iloc[1] == pytest.approx(hi, abs=1e-4)
    widths = ofa_app.widths_table(evo, ids)
    groups = evo["space"]["groups"]
    assert list(widths["group"]) == [g["group"] for g in groups]
    assert list(widths["net_max"]) == [g["channels"] for g in groups]
    assert list(widths["net_min"]) == [min(g["widths"]) for g in groups]
    with pytest.raises(KeyError, match="No subnet"):
        ofa_app.record(evo, "net_nonexistent")


def test_selection_events_and_merging() -> None:
    event = {"selection": {"points": [{"customdata": ["net_a", 0.1, 2]},
                                      {"customdata": ["net_b", 0.2, 3]},
                                      {"customdata": ["net_a", 0.1, 2]},
                                      {"x": 1.0}]}}
    assert ofa_app.selected_ids(event) == ["net_a", "net_b"]
    assert ofa_app.selected_ids(None) == [] and ofa_app.selected_ids({}) == []
    # one click toggles, a box replaces, at most MAX_PICKS are kept
    assert ofa_app.merge_selection(["a"], ["b"]) == ["a", "b"]
    assert ofa_app.merge_selection(["a", "b"], ["a"]) == ["b"]
    assert ofa_app.merge_selection(["a"], ["b", "c"]) == ["b", "c"]
    assert ofa_app.merge_selection(["a"], []) == ["a"]
    many = [str(i) for i in range(ofa_app.MAX_PICKS)]
    assert ofa_app.merge_selection(many, ["new"]) == [*many[1:], "new"]


def test_slider_bounds_and_default_steps() -> None:
    lo, hi, step = ofa_app.slider_bounds((2.164976, 6.419744))
    assert (lo, hi, step) == (pytest.approx(2.16), pytest.approx(6.42), pytest.approx(0.01))
    lo, hi, step = ofa_app.slider_bounds((13.084, 31.022))
    assert lo <= 13.084 and hi >= 31.022 and step == pytest.approx(0.1)
    assert ofa_app.default_macs_step(2.165, 6.42) == 0.25
    assert ofa_app.default_macs_step(13.0, 31.0) == 1.0
    settings = ofa_app.search_settings(3, 5, population=8, iterations=2, images=64)
    assert settings["mutate_size"] == 4 and settings["crossover_size"] == 2
    assert ofa_app.planned_evaluations(settings) == 8 + 2 * 6
    # the same settings name the same files (resume); other settings other files
    assert ofa_app.settings_tag(settings) == ofa_app.settings_tag(dict(settings))
    assert ofa_app.settings_tag(settings) != ofa_app.settings_tag({**settings, "images": 200})


def test_build_subnet_exports_and_rebuilds(bundled, tmp_path: Path) -> None:
    ref, ofa_model, evo = bundled
    before = (digest_weights(ofa_model), active_setting(ofa_model))
    rec = ofa_app.in_range(evo, (3.0, 4.0))[0]
    built = ofa_app.build_subnet(ofa_model, rec["subnet_setting"], images=64)
    assert built["macs_m"] == pytest.approx(rec["macs"], rel=1e-9)
    assert 0.0 <= built["accuracy"] <= 100.0 and built["images"] == 64
    assert (digest_weights(ofa_model), active_setting(ofa_model)) == before  # shared: unchanged

    path = ofa_app.save_subnet(tmp_path, SAMPLE, rec["net_id"], str(ref.path), built["config"])
    entry = json.loads(path.read_text())
    assert entry["subnet_setting"] == built["config"]["subnet_setting"]
    assert entry["macs"] == pytest.approx(rec["macs"])
    state = {k: v.clone() for k, v in built["model"].state_dict().items()}
    rebuilt = ofa_app.rebuild_subnet(SAMPLE, path, state)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), built["model"](x), atol=1e-5)

    pruned = ofa_app.pruned_entry(built, sample=SAMPLE, net_id=rec["net_id"], supernet=ref,
                                  subnet_path=path, search_source="data")
    assert pruned.kind == "ofa_subnet" and pruned.model_name == SAMPLE
    assert pruned.subnet_setting == entry["subnet_setting"]
    assert pruned.spec_path == str(path) and pruned.accuracy == built["accuracy"]
    assert 0 < pruned.removal_ratio < 1

    widths = ofa_app.layer_widths(ofa_model, {"full": [], rec["net_id"]: rec["subnet_setting"]})
    static = get_static_subnet(ofa_model, [])[0]
    assert widths["full"]["classifier"] == 10
    assert sum(widths[rec["net_id"]].values()) < sum(widths["full"].values())
    assert len(widths["full"]) == len([m for m in static.modules()
                                       if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))])
    fig = charts.subnet_widths_figure(widths.pop("full"), widths)
    assert [t.name for t in fig.data] == ["full (max subnet)", rec["net_id"]]
    assert fig.layout.yaxis.title.text == "Output channels"


def test_run_search_writes_the_api_file_and_resumes(bundled, tmp_path: Path) -> None:
    ref, ofa_model, _ = bundled
    settings = ofa_app.search_settings(3.0, 4.5, population=2, iterations=0, images=64,
                                       calib_batches=1)
    calls: list[tuple] = []
    path = ofa_app.run_search(copy.deepcopy(ofa_model), ref, tmp_path, settings,
                              progress=lambda d, t, i: calls.append((d, t)))
    evo = load_search(path)  # the API's format, checked by the API's reader
    assert evo["complete"] and len(evo["history"]) == 2 and calls[-1] == (2, 2)
    assert all(3.0 <= r["macs"] <= 4.5 for r in evo["history"])
    assert path.name == f"{ofa_app.search_name(ref, settings)}_evolution.json"
    meta = ofa_app.read_search_meta(path)
    assert meta["images"] == 64 and meta["calib_batches"] == 1

    found = ofa_app.list_searches(ref, tmp_path)
    assert [s.bundled for s in found] == [True, False]
    assert "first 64 images" in found[1].data_source and found[1].complete
    assert ofa_app.newest_search(ref, tmp_path) == path

    again = ofa_app.run_search(copy.deepcopy(ofa_model), ref, tmp_path, settings)

    def scores(e: dict) -> list:
        return [(r["net_id"], r["macs"], r["acc1"]) for r in e["history"]]

    assert scores(load_search(again)) == scores(evo)  # replayed from the file
    # another supernet (other weights) does not claim this search
    other = ofa_app.SupernetRef("x", SAMPLE, ref.path, False, "x",
                                {**ref.info, "weights_digest": "0" * 16})
    assert ofa_app.list_searches(other, tmp_path) == []


def test_unreachable_ranges_fail_before_any_file(bundled, tmp_path: Path) -> None:
    ref, ofa_model, _ = bundled
    for lo, hi in ((50.0, 60.0), (5.0, 3.0), (0.0, 1.0)):
        with pytest.raises(SearchRangeError):
            ofa_app.run_search(ofa_model, ref, tmp_path,
                               ofa_app.search_settings(lo, hi, population=2, iterations=0))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_train_supernet_saves_a_listed_supernet(tmp_path: Path) -> None:
    steps: list[int] = []
    path = ofa_app.train_supernet(SAMPLE, tmp_path, images=64, epochs=1, batch_size=32,
                                  eval_images=64, progress=lambda d, t, i: steps.append(d))
    assert steps == [1, 2]
    info = json.loads(path.read_text())
    assert info["kind"] == "uif-explorer-supernet" and info["sample"] == SAMPLE
    assert info["training"]["images"] == 64 and 0 <= info["accuracy"]["min_subnet"] <= 100
    refs = ofa_app.workspace_supernets(tmp_path)
    assert [r.path for r in refs] == [path] and not refs[0].bundled
    assert "trained in this workspace" in refs[0].label
    _, ofa_model = ofa_app.load_supernet_ref(refs[0])
    assert digest_weights(ofa_model) == info["weights_digest"]
    assert ofa_app.supernet_span(ofa_model) == pytest.approx(ofa_app.recorded_span(refs[0]))
    with pytest.raises(ValueError, match="PyTorch sample model"):
        ofa_app.train_supernet("keras_convnet", tmp_path)

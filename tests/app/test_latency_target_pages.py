"""The pages' MACs-or-latency choice through Streamlit's AppTest (issue 16, the app part).

On the Sensitivity page the user picks "Latency": the page measures this machine's latency
table of the sample ResNet-20 in a background job (a coarse one here: 4 channel counts per
layer side, one thread), then shows the plan's **predicted** latency beside its MACs and
prunes to that fraction of the predicted latency (a ``_latency`` spec). The One-step page
offers the same choice and says what its ratio means.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
from apptest_pages import assert_no_errors as _no_errors
from apptest_pages import open_page
from streamlit.testing.v1 import AppTest

from uif_explorer import zoo
from uif_explorer.io.workspace import read_json
from uif_explorer.services import analysis, eval_data, latency_target
from uif_explorer.torch import runners
from uif_explorer.torch.evaluation import top1_accuracy
from uif_explorer.ui import jobs, workspace

APP = "../../app.py"
TIMEOUT = 180
TOKEN = "latency-target-token-" + "l" * 11
IMAGES = 64
MACS, LATENCY = list(latency_target.TARGET_CHOICES)

pytestmark = pytest.mark.skipif(not zoo.get_sample("resnet20").weights_path.exists(),
                                reason="resnet20's weights are not trained yet")


@pytest.fixture
def coarse_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """A latency table the test can afford (seconds): 4 counts per side, one thread."""
    monkeypatch.setattr(runners._Runner, "latency_points", 4)
    monkeypatch.setattr(runners._Runner, "latency_threads", 1)


def _runner(folder: Path) -> runners.IterativePruningRunner:
    model, x = zoo.load_torch_sample("resnet20"), zoo.example_input("resnet20")
    return runners.get_pruning_runner(copy.deepcopy(model), x, "iterative", workdir=folder,
                                      name="resnet20")


def _app(page: str) -> AppTest:
    return open_page(page, TOKEN, TIMEOUT)


@pytest.mark.slow  # an analysis (13 scores) + a coarse latency table: 60-80 s on the loaded CI box
def test_sensitivity_page_prunes_to_a_fraction_of_the_predicted_latency(
        root: Path, coarse_table: None) -> None:
    folder = root / TOKEN
    it = _runner(folder)
    it.whole_model_ratios = ()  # the estimate's extra plans are not what this test checks
    it.ana(top1_accuracy, args=(eval_data.test_loader(IMAGES),), ratios=(0.8,))
    analysis.write_settings(it.workspace.sens("resnet20"), IMAGES, (0.8,))

    at = _app("pages/sensitivity.py")
    _no_errors(at)
    choice = at.radio(key="sens_target")
    assert choice.options == [MACS, LATENCY] and choice.value == MACS  # MACs by default
    assert at.slider(key="sens_macs_pct").label == "MACs to remove (%)"
    assert "Predicted latency" not in {m.label for m in at.metric}

    choice.set_value(LATENCY).run()  # the table is measured in the background, once
    _no_errors(at)
    assert any("measured once on this machine" in c.value for c in at.caption)
    job = jobs.registry().wait(TOKEN, "latency:resnet20", timeout=TIMEOUT)
    assert job is not None and job.status == jobs.DONE, job and job.error
    assert (folder / "resnet20_eager.latency").is_file()  # saved in the workspace

    # a target this machine's table can reach: how much time pruning can remove is measured,
    # so it varies with the load (the slider starts at 5 %)
    lat = _runner(folder).latency_table()  # read back from the workspace, not re-measured
    prunable = {g.id: 0.8 for g in it.pruner.graph.groups if g.prunable}
    reach = lat.removal_of_counts(lat.snap(it.pruner.counts(prunable, 1)))
    pct = max(5, min(30, int(reach * 100 * 0.6)))
    assert reach * 100 > pct, f"the table leaves only {reach:.1%} of the latency to remove"
    at.run()
    slider = at.slider(key="sens_macs_pct")
    assert slider.label == "Predicted latency to remove (%)"
    slider.set_value(pct).run()
    _no_errors(at)
    metrics = {m.label: m.value for m in at.metric}
    predicted, original = _ms(metrics["Predicted latency"])
    assert 0 < predicted < original and "MACs after pruning" in metrics  # beside MACs
    assert original == pytest.approx(lat.original * 1e3, abs=0.006)  # shown to 0.01 ms

    at.button(key="sens_prune").click().run()
    _no_errors(at)
    pruned = at.session_state[workspace.PRUNED_KEY]
    assert pruned.source == f"Sensitivity, {pct} % of this machine's predicted latency removed"
    spec = read_json(Path(pruned.spec_path))
    assert Path(pruned.spec_path).name == f"resnet20_ratio_{pct / 100:g}_latency.spec"
    assert spec["target"] == "latency"
    assert spec["latency_ms"]["predicted"] == pytest.approx(predicted, abs=0.006)
    jobs.registry().wait(TOKEN, "measure:resnet20", timeout=TIMEOUT)  # leave no job running

    saved = folder / "resnet20_eager.latency"  # a table timed under load can be re-measured
    before = saved.stat().st_mtime_ns
    at.button(key="latency:resnet20_again").click().run()
    job = jobs.registry().wait(TOKEN, "latency:resnet20", timeout=TIMEOUT)
    assert job is not None and job.status == jobs.DONE, job and job.error
    assert saved.stat().st_mtime_ns != before


def _ms(value: str) -> tuple[float, float]:
    """'12.34 ms (from 20.00)' -> (12.34, 20.0)."""
    now, _, before = value.partition(" ms (from ")
    return float(now), float(before.rstrip(")"))


def test_one_step_page_offers_the_latency_target(root: Path) -> None:
    at = _app("pages/one_step.py")
    _no_errors(at)
    choice = at.radio(key="os_target")
    assert choice.options == [MACS, LATENCY] and choice.value == MACS
    assert at.number_input(key="os_pct").label == "MACs to remove (%)"
    choice.set_value(LATENCY).run()
    _no_errors(at)
    assert at.number_input(key="os_pct").label == "Predicted latency to remove (%)"
    assert any("of this machine's predicted latency removed" in i.value for i in at.info)
    assert any("measured once on this machine" in c.value for c in at.caption)


def test_one_step_table_shows_each_candidates_predicted_latency() -> None:
    from uif_explorer.present import reports

    cands = [{"id": i, "macs": 20.0 - i, "params": 0.2, "removal": 0.3, "score": 90.0 - i,
              "images": 64, "latency_ms": ms} for i, ms in enumerate((6.5, 6.25))]
    search = {"target": "latency", "candidates": cands, "ranking": [0, 1]}
    table = latency_target.with_predicted_latency(reports.candidates_table(search), search)
    assert list(table["latency_ms"]) == [6.5, 6.25] and list(table["id"]) == [0, 1]
    macs = {**search, "target": "macs"}  # a MACs search has no prediction to show
    assert "latency_ms" not in latency_target.with_predicted_latency(
        reports.candidates_table(macs), macs).columns
    evo = {"target": "latency", "history": [{"net_id": "a", "latency_ms": 4.0}]}  # an OFA one
    table = latency_target.with_predicted_latency(pd.DataFrame({"net_id": ["a"]}), evo,
                                                  "net_id", "history")
    assert list(table["latency_ms"]) == [4.0]

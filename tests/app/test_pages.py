"""The Sensitivity, One-step and Export pages through Streamlit's AppTest.

One real analysis and one real search of the sample ResNet-20 (64 images, ratio 0.5, two
candidates) are made once per module in a workspace folder; the pages open it through the
``?ws=<token>`` query parameter, like a reload would.
"""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path

import pytest
from apptest_pages import assert_no_errors as _no_errors
from apptest_pages import open_page
from streamlit.testing.v1 import AppTest

from uif_explorer import zoo
from uif_explorer.services import analysis, backends, eval_data, export_report, torch_backend
from uif_explorer.torch.evaluation import adaptive_bn_calibration, top1_accuracy
from uif_explorer.torch.runners import get_pruning_runner
from uif_explorer.ui import workspace

APP = "../../app.py"
TIMEOUT = 180
TOKEN = "test-token-" + "a" * 21
IMAGES = 64
SEARCH_RATIO = 0.3  # the One-step page's default "MACs to remove (%)"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace root holding a finished .sens and .search of the sample ResNet-20."""
    if not zoo.get_sample("resnet20").weights_path.exists():
        pytest.skip("resnet20's weights are not trained yet (sample_models/train.py)")
    root = tmp_path_factory.mktemp("workspaces")
    folder = root / TOKEN
    model, x = zoo.load_torch_sample("resnet20"), zoo.example_input("resnet20")
    loader = eval_data.test_loader(IMAGES)
    it = get_pruning_runner(copy.deepcopy(model), x, "iterative", workdir=folder,
                            name="resnet20")
    it.ana(top1_accuracy, args=(loader,), ratios=(0.5,))
    analysis.write_settings(it.workspace.sens("resnet20"), IMAGES, (0.5,))
    one = get_pruning_runner(copy.deepcopy(model), x, "one_step", workdir=folder,
                             name="resnet20")
    one.search(calibration_fn=adaptive_bn_calibration, calib_args=(eval_data.calib_loader(),),
               eval_fn=top1_accuracy, eval_args=(loader,), num_subnet=2,
               removal_ratio=SEARCH_RATIO)
    analysis.write_settings(one.workspace.search("resnet20", SEARCH_RATIO), IMAGES,
                             [SEARCH_RATIO])
    return root


@pytest.fixture
def ws_root(prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the prepared workspaces (pages write specs into it)."""
    root = tmp_path / "workspaces"
    shutil.copytree(prepared, root)
    monkeypatch.setenv("UIF_WORKSPACES", str(root))
    return root


def _app(page: str, token: str | None = TOKEN) -> AppTest:
    return open_page(page, token, TIMEOUT)


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _table_with(at: AppTest, column: str):
    """The first st.dataframe holding ``column``."""
    tables = [df.value for df in at.dataframe if column in df.value.columns]
    assert tables, f"no table with a {column!r} column"
    return tables[0]


def _plotly(at: AppTest) -> list:
    return [el for el in at.get("plotly_chart")]


@pytest.mark.parametrize("page", ["pages/sensitivity.py", "pages/one_step.py",
                                  "pages/export.py"])
def test_each_page_renders_in_a_fresh_workspace(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UIF_WORKSPACES", str(tmp_path))
    at = _app(page, token=None)
    _no_errors(at)
    token = at.query_params["ws"]
    token = token[0] if isinstance(token, list) else token
    assert workspace.is_valid_token(token) and len(token) >= 32
    assert at.info  # says what to do first


def test_an_invalid_token_in_the_url_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UIF_WORKSPACES", str(tmp_path))
    at = _app("pages/sensitivity.py", token="../../etc")
    _no_errors(at)
    token = at.query_params["ws"]
    token = token[0] if isinstance(token, list) else token
    assert token != "../../etc" and workspace.is_valid_token(token)
    assert [p.name for p in tmp_path.iterdir()] == [token]


def test_sensitivity_shows_curves_and_the_slider_preview_matches_plan(ws_root: Path) -> None:
    at = _app("pages/sensitivity.py")
    _no_errors(at)
    charts = _plotly(at)
    assert charts, "the sensitivity curves are drawn"
    runner = get_pruning_runner(zoo.load_torch_sample("resnet20"),
                                zoo.example_input("resnet20"), "iterative",
                                workdir=ws_root / TOKEN, name="resnet20")
    for pct in (30, 45):
        at.slider(key="sens_macs_pct").set_value(pct).run()
        _no_errors(at)
        want = analysis.preview_metrics(runner.plan(pct / 100), IMAGES)
        got = _metrics(at)
        assert {k: got[k] for k in want} == want
        table = _table_with(at, "kept")
        assert list(table["kept"]) == list(runner.plan(pct / 100).groups["kept"])


def test_sensitivity_prune_shows_the_pruned_accuracy_at_once(ws_root: Path) -> None:
    at = _app("pages/sensitivity.py")
    at.slider(key="sens_macs_pct").set_value(40).run()
    at.button(key="sens_prune").click().run()
    _no_errors(at)
    pruned = at.session_state[workspace.PRUNED_KEY]
    assert pruned.kind == "sparse" and pruned.removal_ratio == 0.4
    label = "Pruned accuracy (Sensitivity, 40 % of the MACs removed)"
    assert _metrics(at)[label] == f"{pruned.accuracy:.2f} %"
    assert pruned.accuracy == pytest.approx(eval_data.accuracy(pruned.model, IMAGES))
    assert (ws_root / TOKEN / "resnet20_ratio_0.4.spec").exists()


def test_one_step_lists_every_candidate_and_builds_the_best(ws_root: Path) -> None:
    at = _app("pages/one_step.py")
    _no_errors(at)
    search = analysis.read_search(ws_root / TOKEN / "resnet20_ratio_0.3.search")
    table = _table_with(at, "removed_pct")
    assert sorted(table["id"]) == [c["id"] for c in search["candidates"]] == [0, 1]
    assert len(_plotly(at)) == 2  # the scatter and the best's ratios
    at.button(key="os_build").click().run()
    _no_errors(at)
    pruned = at.session_state[workspace.PRUNED_KEY]
    assert pruned.kind == "slim" and pruned.candidate == search["ranking"][0]


def test_export_offers_downloads_and_a_report_for_the_pruned_model(ws_root: Path) -> None:
    at = _app("pages/sensitivity.py")
    at.button(key="sens_prune").click().run()
    at.switch_page("pages/export.py").run()
    _no_errors(at)
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Slim state dict (.safetensors)" in labels and "Report (.json)" in labels
    assert "Spec (.json)" in labels
    at.button(key="export_latency").click().run()
    _no_errors(at)
    assert {"Original", "Pruned (slim)"} <= set(_metrics(at))


# -- the job registry (no streamlit needed: a plain object) --------------------------------
def test_a_job_reports_progress_and_its_result() -> None:
    from uif_explorer.ui.jobs import DONE, JobRegistry

    reg = JobRegistry()

    def work(job):
        for i in range(1, 4):
            job.progress(i, 3, {"step": i})
        return "result"

    reg.start("ws", "a", work)
    job = reg.wait("ws", "a", timeout=30)
    assert job.status == DONE and job.result == "result"
    assert (job.done, job.total, job.fraction, job.info) == (3, 3, 1.0, {"step": 3})
    assert job.eta_s is None  # finished


def test_a_cancelled_job_stops_in_its_progress_callback() -> None:
    import threading

    from uif_explorer.ui.jobs import CANCELLED, JobRegistry

    reg = JobRegistry()
    started = threading.Event()

    def work(job):
        i = 0
        while True:
            i += 1
            job.progress(i, 10_000)
            if i >= 3:
                started.set()
            threading.Event().wait(0.01)

    job = reg.start("ws", "b", work)
    assert started.wait(10)
    assert reg.start("ws", "b", work) is job  # a running job is not started twice
    assert job.running and job.eta_s is not None
    job.cancel()
    assert reg.wait("ws", "b", timeout=30).status == CANCELLED


def test_a_failing_job_keeps_a_one_line_error() -> None:
    from uif_explorer.ui.jobs import FAILED, JobRegistry

    reg = JobRegistry()

    def work(job):
        raise ValueError("eval_fn raised\nmore lines")

    reg.start("ws", "c", work)
    job = reg.wait("ws", "c", timeout=30)
    assert job.status == FAILED and job.error == "ValueError: eval_fn raised"
    reg.forget("ws", "c")
    assert reg.get("ws", "c") is None


def test_workspace_tokens_are_never_paths(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UIF_WORKSPACES", str(tmp_path))
    for bad in ("../../etc", "short", "a" * 65, "abc/def" * 4, "", None, "x" * 15 + "."):
        assert not workspace.is_valid_token(bad)
        with pytest.raises(ValueError):
            workspace.folder_of(bad)
    token = workspace.new_token()
    assert workspace.is_valid_token(token) and token != workspace.new_token()
    assert workspace.folder_of(token) == tmp_path / token and (tmp_path / token).is_dir()


def test_latency_is_the_median_of_interleaved_runs() -> None:
    import torch

    calls = []

    class Tag(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.tag = name

        def forward(self, x):
            calls.append(self.tag)
            return x

    ticks = iter(range(1000))
    lat = backends.measure_latency(torch_backend.TORCH, {"a": Tag("a"), "b": Tag("b")},
                                   torch.zeros(1, 1), repeats=10, warmup=1,
                                   clock=lambda: next(ticks) * 0.001)
    assert calls[2:6] == ["a", "b", "a", "b"]  # interleaved after the warm-up
    assert lat == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}


def test_fine_tune_runs_in_the_background_and_shows_the_new_accuracy(ws_root: Path) -> None:
    from uif_explorer.ui import jobs

    at = _app("pages/sensitivity.py")
    at.button(key="sens_prune").click().run()
    before = at.session_state[workspace.PRUNED_KEY]
    at.number_input(key="ft_batches").set_value(2).run()
    at.button(key="ft_run").click().run()
    _no_errors(at)
    job = jobs.registry().wait(TOKEN, "finetune:resnet20", timeout=TIMEOUT)
    assert job is not None and job.status == jobs.DONE, job and job.error
    assert job.total == 2  # one epoch of two batches
    at.run()
    _no_errors(at)
    after = at.session_state[workspace.PRUNED_KEY]
    assert after.accuracy == pytest.approx(job.result["accuracy"])
    assert after.accuracy_before_ft == before.accuracy
    assert "fine-tuned 1 epoch(s)" in after.source
    assert any("Accuracy after fine-tuning" in s.value for s in at.success)


def test_export_after_a_reload_rebuilds_from_the_workspace_spec(ws_root: Path) -> None:
    at = _app("pages/sensitivity.py")
    at.button(key="sens_prune").click().run()
    pruned = at.session_state[workspace.PRUNED_KEY]
    fresh = _app("pages/export.py")  # a new session on the same ?ws= token: a reload
    _no_errors(fresh)
    fresh.button(key="export_rebuild").click().run()
    _no_errors(fresh)
    rebuilt = fresh.session_state[workspace.PRUNED_KEY]
    assert rebuilt.kind == "slim" and rebuilt.spec_path == pruned.spec_path
    state = torch_backend.plain_state_dict(rebuilt.model)
    want = torch_backend.slim_of(pruned.model, zoo.load_torch_sample("resnet20")).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        k: tuple(v.shape) for k, v in want.items()}
    labels = [b.proto.label for b in fresh.get("download_button")]
    assert "Slim state dict (.safetensors)" in labels


def test_export_files_of_the_slim_model_load(ws_root: Path, tmp_path: Path) -> None:
    from safetensors.torch import load

    original = zoo.load_torch_sample("resnet20")
    x = zoo.example_input("resnet20")
    runner = get_pruning_runner(copy.deepcopy(original), x, "iterative",
                                workdir=ws_root / TOKEN, name="resnet20")
    sparse = runner.prune(removal_ratio=0.3, mode="sparse")
    slim = torch_backend.slim_of(sparse, original)
    state = load(torch_backend.export_bytes(slim, x, "safetensors", tmp_path))
    assert set(state) == set(original.state_dict())
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        k: tuple(v.shape) for k, v in slim.state_dict().items()}
    onnx = torch_backend.onnx_checked(slim, x, tmp_path)
    assert onnx["bytes"] and onnx["error"] <= 1e-4


def test_one_step_shows_a_chosen_candidate_beside_the_best(ws_root: Path) -> None:
    at = _app("pages/one_step.py")
    search = analysis.read_search(ws_root / TOKEN / "resnet20_ratio_0.3.search")
    best = search["ranking"][0]
    other = next(c["id"] for c in search["candidates"] if c["id"] != best)
    at.session_state["os_chosen"] = other  # what clicking its point selects
    at.run()
    _no_errors(at)
    assert any(h.value == f"Candidate {other} beside the best (candidate {best})"
               for h in at.subheader)
    ratios = _table_with(at, f"candidate {other}")
    assert f"candidate {best}" in ratios.columns
    want = next(c for c in search["candidates"] if c["id"] == other)["ratios"]
    got = dict(zip(ratios["group"].astype(str), ratios[f"candidate {other}"], strict=True))
    assert {g: got[g] for g in want} == want
    at.button(key="os_build").click().run()
    built = at.session_state[workspace.PRUNED_KEY]
    assert built.candidate == other
    # built and scored like in the search (adaptive BN, same images): the same accuracy
    assert built.accuracy == pytest.approx(
        next(c["score"] for c in search["candidates"] if c["id"] == other), abs=1e-6)
    assert (ws_root / TOKEN / f"resnet20_ratio_0.3_{other}.spec").exists()


def test_an_analysis_runs_in_the_background_can_be_cancelled_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from uif_explorer.ui import jobs

    monkeypatch.setenv("UIF_WORKSPACES", str(tmp_path))
    token = "cancel-test-" + "b" * 20
    at = _app("pages/sensitivity.py", token=token)
    at.selectbox(key="sens_preset").select(analysis.SENS_PRESETS[1].label).run()
    at.button(key="sens_run").click().run()
    _no_errors(at)
    job = jobs.registry().get(token, "sensitivity:resnet20")
    assert job is not None
    deadline = time.monotonic() + TIMEOUT
    while job.running and job.done < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    at.run()
    assert at.get("progress"), "a progress bar while the job runs"
    at.button(key="cancel_sensitivity:resnet20").click().run()
    job = jobs.registry().wait(token, "sensitivity:resnet20", timeout=TIMEOUT)
    assert job.status == jobs.CANCELLED
    sens_path = tmp_path / token / "resnet20.sens"
    saved, total = analysis.sens_progress(analysis.read_sens(sens_path))
    assert 2 <= saved < total == 12 * 4 + 1
    at.run()
    _no_errors(at)
    assert any("cancelled" in i.value for i in at.info)
    # Run again: the unfinished analysis resumes from the saved steps (not forced)
    at.button(key="sens_run").click().run()
    job = jobs.registry().get(token, "sensitivity:resnet20")
    while job.running and job.done < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    job.cancel()
    jobs.registry().wait(token, "sensitivity:resnet20", timeout=TIMEOUT)
    assert job.total == total - saved  # only the missing steps were scheduled


def test_the_html_report_holds_the_facts_and_every_chart(prepared: Path) -> None:
    from uif_explorer.present import charts

    sens = analysis.read_sens(prepared / TOKEN / "resnet20.sens")
    figures = [charts.width_figure({"conv1": 16}, {"conv1": 8}), charts.sensitivity_figure(sens)]
    page = export_report.html_report("UIF Explorer report: resnet20",
                                         {"accuracy": 91.5, "source": "a <prune>"}, figures)
    assert page.startswith("<!doctype html>") and "UIF Explorer report: resnet20" in page
    assert "a &lt;prune&gt;" in page and "91.5" in page
    assert page.count('class="plotly-graph-div"') == 2
    assert "Channels per layer, before and after" in page

"""services.refinement_jobs and services.score_lines on a real tiny search of the sample
ResNet-20 (3 candidates, 32 images, 1 then 2 fine-tuning batches): the job runs the search and
its successive halving, an interrupted refinement resumes where it stopped, the stages read back
as the page shows them, and the lines beside a score say what it means."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from uif_explorer import data
from uif_explorer.present import refinement_charts, reports
from uif_explorer.services import analysis, eval_data, model_source, refinement_jobs, score_lines
from uif_explorer.services.refinement_jobs import RefineChoice

IMAGES = 32
RATIO = 0.3


class Stop(Exception):
    """What the app's Cancel raises from the progress callback."""


class FakeJob:
    """The job registry's Job as the work function sees it: a progress callback."""

    def __init__(self, stop_after_refined: int | None = None) -> None:
        self.calls: list[dict] = []
        self.stop_after = stop_after_refined

    def progress(self, done: int, total: int | None, info: dict | None = None) -> None:
        self.calls.append(dict(info or {}))
        refined = [c for c in self.calls if "budget" in c]
        if self.stop_after is not None and len(refined) >= self.stop_after:
            raise Stop("cancelled")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("refine")
    source, model = model_source.from_model_id("resnet20")
    ev = eval_data.make_evaluator(source, model, None, IMAGES, folder)
    # BN re-estimation on one batch of 64 training images instead of the app's 4: the same
    # protocol, a quarter of the forward passes (this test scores 9 models)
    ev = dataclasses.replace(ev, calib_args=(data.torch_loader(
        "train", limit=64, batch_size=64, shuffle=False),))
    runner = model_source.make_runner(source, model, "one_step", folder)
    return source, ev, runner


def test_an_interrupted_refinement_resumes_and_picks_the_winner(setup) -> None:
    source, ev, runner = setup
    choice = RefineChoice(keep=3, steps=1)
    assert choice.stages(3) == [(3, 1), (2, 2)] and choice.fine_tunes(3) == 5
    first = FakeJob(stop_after_refined=2)
    with pytest.raises(Stop):
        refinement_jobs.search_job(runner, source, ev, 3, RATIO, False, choice)(first)
    path: Path = runner.workspace.search(runner.name, RATIO)
    saved = analysis.read_search(path)
    view = refinement_jobs.refinement_view(saved)
    assert view is not None and view.interrupted and (view.done, view.total) == (2, 5)
    assert view.choice == choice  # the page's Resume button reruns these settings
    assert "2 of 3 scored so far" in refinement_jobs.stage_lines(view)[0]

    again = FakeJob()
    data = refinement_jobs.search_job(runner, source, ev, 3, RATIO, False, choice)(again)
    refined = [c for c in again.calls if "budget" in c]
    assert len(refined) == 3  # only what was missing: one of stage 1, both of stage 2
    view = refinement_jobs.refinement_view(data)
    assert view.complete and view.winner is not None and view.budgets == [1, 2]
    last = data["refinement"]["stages"][-1]
    assert view.winner in last["candidates"] and len(last["candidates"]) == 2
    on = refinement_jobs.went_on(view)
    assert on[0] == last["candidates"] and on[-1] == [view.winner]
    assert f"candidate {view.winner}" in refinement_jobs.winner_text(view)
    assert data["protocol"]["bn_reestimation"] is True  # stages scored with the search's

    table = reports.refinement_table(data)
    assert sorted(table["candidate"]) == sorted(data["refinement"]["stages"][0]["candidates"])
    assert list(table.columns[3:5]) == ["stage 1 (1 batches)", "stage 2 (2 batches)"]
    uniform = {c["id"] for c in data["candidates"] if c.get("origin") == "uniform"}
    assert uniform  # refinement carries the uniform plan, and the table names it
    assert {cid: p for cid, p in zip(table["candidate"], table["plan"], strict=True)
            if p != "sampled"} == dict.fromkeys(uniform, "uniform L1")
    assert table["winner"].sum() == 1
    assert int(table.loc[table["winner"], "candidate"].iloc[0]) == view.winner
    assert (table["images"] == IMAGES).all()
    dropped = table[table["reached"] == 1]
    assert len(dropped) == 1 and dropped["stage 2 (2 batches)"].isna().all()

    fig = refinement_charts.refinement_figure(data)
    assert len(fig.data) == 3
    winner_trace = next(t for t in fig.data if "(winner)" in t.name)
    assert list(winner_trace.x) == refinement_charts.stage_labels(data)
    assert all(v >= 0 for v in winner_trace.error_y.array)


def test_the_protocol_line_and_the_noise_verdict(setup) -> None:
    _, ev, _ = setup
    line = score_lines.evaluator_protocol(ev, {"score": "top1_accuracy",
                                               "bn_reestimation": True})
    assert line.startswith("Protocol: top1_accuracy on 32 images")
    assert line.endswith("after BN re-estimation on 1 batch")
    off = score_lines.protocol_line(score_fn="top1_accuracy", images=500, data=None,
                                    calibrated=False)
    assert off == "Protocol: top1_accuracy on 500 images, without BN re-estimation"
    a, b = score_lines.measured(90.0, 64), score_lines.measured(87.5, 64)
    assert "within noise" in score_lines.compare_line("candidate 1", a, "candidate 2", b)
    far = score_lines.measured(50.0, 2000)
    assert score_lines.noise_verdict(a, far) == "beyond noise"
    assert score_lines.noise_verdict(a, score_lines.measured(0.5, 64, label_free=True)) == \
        "interval unknown"
    assert score_lines.score_text(90.0, 64).startswith("90.00 % on 64 images (95 % interval")

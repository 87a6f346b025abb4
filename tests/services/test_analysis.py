"""services.analysis: when the Sensitivity page's **Run analysis** starts afresh instead of
resuming, decided on a real (tiny) analysis file and its settings sidecar."""

from __future__ import annotations

from pathlib import Path

import pytest

from uif_explorer.services import analysis, eval_data, model_source

IMAGES = 32


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("analysis")
    source, model = model_source.from_model_id("resnet20")
    ev = eval_data.make_evaluator(source, model, None, IMAGES, folder)
    runner = model_source.make_runner(source, model, "iterative", folder)
    runner.ana(ev.eval_fn, args=ev.eval_args, ratios=(0.5,))
    path = runner.workspace.sens(runner.name)
    analysis.write_settings(path, IMAGES, (0.5,), ev.describe())
    return path


def test_no_file_means_a_fresh_run_needs_no_restart(tmp_path: Path) -> None:
    assert analysis.read_sens(tmp_path / "none.sens") is None
    assert not analysis.analysis_needs_restart(tmp_path / "none.sens", (0.5,), IMAGES, "s")
    assert analysis.sens_progress(None) == (0, 0)


def test_a_finished_or_different_analysis_restarts(finished: Path) -> None:
    sens = analysis.read_sens(finished)
    assert sens is not None and sens["complete"]
    done, total = analysis.sens_progress(sens)
    assert done == total > 1
    score = eval_data.data_source(IMAGES)
    assert analysis.score_source(finished) == score
    assert analysis.analysis_needs_restart(finished, (0.5,), IMAGES, score)  # finished
    settings = analysis.read_settings(finished)
    assert settings == {"format_version": 1, "images": IMAGES, "ratios": [0.5],
                        "score": score}


def test_an_unfinished_analysis_resumes_only_with_the_same_settings(tmp_path: Path) -> None:
    calls: list[int] = []
    source, model = model_source.from_model_id("resnet20")
    ev = eval_data.make_evaluator(source, model, None, IMAGES, tmp_path)

    def stop_after_two(m, *args):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("stopped")
        return ev.eval_fn(m, *args)

    runner = model_source.make_runner(source, model, "iterative", tmp_path)
    with pytest.raises(Exception, match="stopped"):
        runner.ana(stop_after_two, args=ev.eval_args, ratios=(0.5,))
    path = runner.workspace.sens(runner.name)
    score = ev.describe()
    analysis.write_settings(path, IMAGES, (0.5,), score)
    done, total = analysis.sens_progress(analysis.read_sens(path))
    assert 0 < done < total
    assert not analysis.analysis_needs_restart(path, (0.5,), IMAGES, score)
    assert analysis.analysis_needs_restart(path, (0.3, 0.6), IMAGES, score)  # other ratios
    assert analysis.analysis_needs_restart(path, (0.5,), 2 * IMAGES, score)  # other images
    assert analysis.analysis_needs_restart(path, (0.5,), IMAGES, "label-free")  # other score

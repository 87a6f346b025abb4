"""The runner rules that need no framework: how scores are made (protocol), argument checks
before any work, and the ratio as an approximate target (warning or strict error).

Real user-style functions; no model is needed for these rules. The modules must import
without torch or TensorFlow (checked in a subprocess).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import warnings

import pytest

from uif_explorer.core.allocation import check_landing
from uif_explorer.core.plan import PlanError
from uif_explorer.core.runner_files import RunnerFiles, check_divisible, check_num_subnet
from uif_explorer.core.scores import AnalysisError, ScoreJob, function_name
from uif_explorer.core.sensitivity import check_ratios, new_sensitivity


def evaluate(model, data):
    return sum(data) / len(data) * model


def calibrate(model, data, number_forward=10):
    if not data:
        raise ValueError("no calibration batch")


def test_protocol_names_the_functions_and_tells_calibration_apart() -> None:
    plain = ScoreJob.of(evaluate, ([1.0, 2.0],))
    calibrated = ScoreJob.of(evaluate, ([1.0, 2.0],), calibrate, ([1],))
    assert plain.protocol == {"calibration": None, "score": "evaluate", "bn_reestimation": False}
    assert calibrated.protocol == {"calibration": "calibrate", "score": "evaluate",
                                   "bn_reestimation": True}
    assert function_name(functools.partial(calibrate, number_forward=2)) == "calibrate"
    sens = new_sensitivity(model="m", graph_digest="g", weights_digest="w", groups=[],
                           ratios=[0.5], criterion="l1", higher_is_better=True,
                           protocol=calibrated.protocol)
    assert sens["protocol"]["bn_reestimation"] is True
    # a file of other weights or another protocol is stale; a file without one is not
    assert RunnerFiles._stale(sens, "w", calibrated.protocol) == []
    reasons = RunnerFiles._stale(sens, "w", plain.protocol)
    assert len(reasons) == 1 and "calibration calibrate" in reasons[0]
    assert RunnerFiles._stale({**sens, "protocol": None}, "w", plain.protocol) == []
    assert RunnerFiles._stale(sens, "v", calibrated.protocol) == ["other weights"]
    renamed = ScoreJob.of(lambda m, d: 1.0, (), calibrate, ([1],)).protocol  # noted only
    assert RunnerFiles._stale(sens, "w", renamed) == []


def test_scoring_calibrates_first_and_wraps_user_errors_with_the_resume_hint() -> None:
    assert ScoreJob.of(evaluate, ([1.0, 3.0],), calibrate, ([1],)).score(2, "m") == 4.0
    job = ScoreJob.of(evaluate, ([1.0],), calibrate, ([],))
    with pytest.raises(AnalysisError, match="calibration_fn raised ValueError on candidate 3: "
                                            "no calibration batch.*run again to resume"):
        job.score(1, "candidate 3")


@pytest.mark.parametrize("call, text", [
    (lambda: ScoreJob.of(evaluate, [[1.0]].__iter__()), r"args=\(val_loader,\)"),
    (lambda: ScoreJob.of(evaluate, "loader"), "Expected args to be a tuple"),
    (lambda: ScoreJob.of(evaluate, (1,), calib_args=5), "Expected calib_args to be a tuple"),
    (lambda: ScoreJob.of(evaluate, 3, args_name="eval_args"), "eval_args=3"),
    (lambda: ScoreJob.of("evaluate"), "Expected eval_fn to be a function"),
    (lambda: ScoreJob.of(evaluate, (), calibration_fn=1), "calibration_fn=1"),
])
def test_bad_arguments_are_named_before_any_work(call, text) -> None:
    with pytest.raises(TypeError, match=text):
        call()


def test_other_arguments_are_checked_with_what_to_pass() -> None:
    assert check_ratios((0.25, 0.5)) == [0.25, 0.5]
    for bad in ([], [0.0], [1.0], ["x"], None):
        with pytest.raises(ValueError, match=r"ratios in \(0, 1\)"):
            check_ratios(bad)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="channel_divisible"):
            check_divisible(bad)
    with pytest.raises(ValueError, match="num_subnet"):
        check_num_subnet(0)


def test_an_off_target_ratio_warns_with_the_achieved_ratio_unless_strict() -> None:
    check_landing(0.295, 0.3, channel_divisible=2, strict=True)  # within 1 point: silent
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_landing(0.287, 0.3, channel_divisible=2, strict=False, argument="ratio")
    assert len(caught) == 1 and caught[0].category is UserWarning
    message = str(caught[0].message)
    assert "ratio=0.3 is an approximate target" in message and "28.7%" in message
    assert "channel_divisible=1" in message
    assert caught[0].filename == __file__  # the warning points at the caller's line
    with pytest.raises(PlanError, match="closest: 28.7%") as info:
        check_landing(0.287, 0.3, channel_divisible=1, strict=True)
    assert "channel_divisible=1" not in str(info.value)  # it is 1 already


def test_these_modules_import_without_torch_or_tensorflow() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'tensorflow', 'keras', 'streamlit'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import uif_explorer.core.runner, uif_explorer.core.runner_files\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]

"""Nothing lost: a driver killed with SIGKILL at any moment resumes with every finished trial.

The scenario itself (start, kill -9 the driver, re-run, compare the storage) is
benchmarks/resume_kill.py, which also runs it on real data for the record.
"""

import pytest

from benchmarks.resume_kill import kill_and_resume

TRIALS = 6


@pytest.mark.parametrize("kill_after", [
    pytest.param(0, marks=pytest.mark.slow),  # while Ray starts, before any trial ends
    1,                                        # mid-study, trials running
    pytest.param(4, marks=pytest.mark.slow),  # near the end
])
def test_sigkill_of_the_driver_loses_no_finished_trial(tiny_cifar, tmp_path, kill_after):
    run = kill_and_resume(tiny_cifar, tmp_path, kill_after, TRIALS,
                          ["--data-fraction", "1", "--cache-dir", str(tmp_path / "cache")])
    assert run.rerun_exit == 0, run.rerun_stderr
    assert run.finished_before_kill >= kill_after
    assert run.unchanged  # finished trials untouched: state, value, curve, attributes
    assert run.running_after == 0
    assert run.stale_failed == run.stale_with_reason  # each with "marked on resume"
    assert run.finished_after == TRIALS  # the requested number finished, none counted twice
    assert run.trials_total == TRIALS + run.stale_failed
    if kill_after >= 1:
        assert run.running_at_kill >= 1 and run.stale_failed >= 1

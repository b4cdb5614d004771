"""Nothing lost: a driver killed with SIGKILL at any moment resumes with every finished trial."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[2]
TRIALS = 6


def finished_in(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("select count(*) from trials where state in ('COMPLETE', 'PRUNED')").fetchone()[0]
    except sqlite3.Error:  # tables not created yet
        return 0


def frozen(study):
    return {t.number: (t.state, t.value, t.intermediate_values, t.user_attrs) for t in study.trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}


@pytest.mark.parametrize("kill_after", [
    pytest.param(0, marks=pytest.mark.slow),  # while Ray starts, before any trial ends
    1,                                        # mid-study, trials running
    pytest.param(4, marks=pytest.mark.slow),  # near the end
])
def test_sigkill_of_the_driver_loses_no_finished_trial(tiny_cifar, tmp_path, kill_after):
    db = tmp_path / "optuna.db"
    cmd = [sys.executable, str(ROOT / "studies" / "run.py"), "--preset", "smoke", "--data",
           str(tiny_cifar), "--data-fraction", "1", "--trials", str(TRIALS), "--results",
           str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while finished_in(db) < kill_after and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if kill_after == 0:
            time.sleep(4)
        assert proc.poll() is None, "the study ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, as `kill -9 PID` would
        proc.wait()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # Ray's own processes of that session
        except ProcessLookupError:
            pass
    storage = f"sqlite:///{db}"
    before = frozen(optuna.load_study(study_name="resnet_cifar-smoke", storage=storage)) if db.exists() else {}

    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    study = optuna.load_study(study_name="resnet_cifar-smoke", storage=storage)
    after = frozen(study)
    assert {n: after[n] for n in before} == before  # finished trials untouched
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    stale = [t for t in study.trials if t.user_attrs.get("stale")]
    assert all(t.state == TrialState.FAIL for t in stale)
    assert len(after) == TRIALS  # the requested number finished, none counted twice
    assert len(study.trials) == TRIALS + len(stale)
    if kill_after >= 1:
        assert stale and "marked on resume" in stale[0].user_attrs["fail_reason"]

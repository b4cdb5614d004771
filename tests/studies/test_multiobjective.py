"""--objectives val_acc,train_seconds: a multi-objective study and its Pareto front."""

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState

from studies.storage import parse_objectives
from trainers.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def test_objective_names_are_checked():
    assert parse_objectives("val_acc, train_seconds") == ["val_acc", "train_seconds"]
    for bad in ("", "val_acc,val_acc", "speed"):
        with pytest.raises(UserError, match="give distinct names from val_acc"):
            parse_objectives(bad)


def test_a_two_objective_study_reports_its_pareto_front(tiny_cifar, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "studies" / "run.py"), "--preset", "smoke", "--data",
         str(tiny_cifar), "--data-fraction", "1", "--trials", "4", "--results", str(tmp_path),
         "--cache-dir", str(tmp_path / "cache"), "--objectives", "val_acc,train_seconds",
         "--scheduler", "fifo"],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="resnet_cifar-smoke-train_seconds",
                              storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    assert study.metric_names == ["val_acc", "train_seconds"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    for t in complete:
        assert t.values[0] == t.user_attrs["val_acc_curve"]["2"]  # the last epoch's accuracy
        assert t.values[1] == pytest.approx(t.user_attrs["train_seconds"])
    front = {t.number for t in study.best_trials}
    assert front
    for t in complete:  # nothing off the front dominates a trial on it
        if t.number not in front:
            assert any(b.values[0] >= t.values[0] and b.values[1] <= t.values[1]
                       for b in study.best_trials)
    assert f"Pareto front: {len(front)} of 4 complete trials" in proc.stdout
    page = (tmp_path / "resnet_cifar-smoke-train_seconds" / "pareto.html").read_text()
    assert page.count("plotly.js v") == 1 and "Pareto-optimal trials" in page

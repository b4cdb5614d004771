"""final.py picks what it re-runs by the study's record, and refuses what it cannot re-run honestly."""

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from studies.final import _pick_trial
from tests.dashboards.conftest import build_study
from trainers.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    return tmp_path, build_study(url, "demo", n=6)


def final(tmp_path, *args):
    return subprocess.run([sys.executable, str(ROOT / "studies" / "final.py"), "--results", str(tmp_path),
                           "--study", "demo", "--cache-dir", str(tmp_path / "cache"), *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def one_line(proc):
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_a_trial_that_did_not_complete_is_refused_with_what_to_pass(demo):
    tmp_path, study = demo
    pruned = next(t.number for t in study.trials if t.state == TrialState.PRUNED)
    assert f"trial {pruned} of 'demo' is PRUNED, not COMPLETE" in one_line(final(tmp_path, "--trial", pruned))
    failed = next(t.number for t in study.trials if t.state == TrialState.FAIL)
    assert "is FAIL, not COMPLETE" in one_line(final(tmp_path, "--trial", failed))
    assert "has no trial 99; its trials are 0-7" in one_line(final(tmp_path, "--trial", 99))


def test_data_that_is_not_the_study_s_is_refused(demo, tiny_cifar):
    tmp_path, _ = demo
    line = one_line(final(tmp_path, "--data", tiny_cifar, "--seeds", 1))
    assert f"--data {tiny_cifar} is not the data study 'demo' was run on (/data/cifar10)" in line
    assert not (tmp_path / "final" / "demo").exists()


def test_the_best_trial_follows_the_direction(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    for value in (0.9, 0.4, 0.7):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"config": {}}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, intermediate_values={1: 0.1}))
    assert _pick_trial(study, None).number == 1  # the lowest loss, not the highest


def test_a_multi_objective_study_asks_for_a_trial_of_its_front():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], study_name="pareto")
    for values in ((0.8, 10.0), (0.6, 5.0), (0.5, 20.0)):
        study.add_trial(optuna.trial.create_trial(values=list(values)))
    with pytest.raises(UserError, match="several objectives.*pass --trial N with one of its Pareto front: 0, 1"):
        _pick_trial(study, None)
    assert _pick_trial(study, 2).number == 2  # any COMPLETE trial, when named

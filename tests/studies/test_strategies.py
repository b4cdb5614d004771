"""Every sampler and scheduler name builds and runs a real (tiny) study."""

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from studies.strategies import SAMPLERS, SCHEDULER_NAMES, make_sampler
from studies.tune_adapter import SCHEDULERS

ROOT = Path(__file__).resolve().parents[2]

# Each pair runs once: every sampler and every scheduler appears at least once.
PAIRS = [("tpe", "asha"), ("random", "fifo"), ("cmaes", "hyperband"), ("qmc", "median"),
         ("gp", "asha")]


def test_the_tables_agree_and_every_name_is_covered():
    assert set(SCHEDULERS) == set(SCHEDULER_NAMES)
    assert {s for s, _ in PAIRS} == set(SAMPLERS) and {s for _, s in PAIRS} == set(SCHEDULERS)
    for name in SAMPLERS:
        assert isinstance(make_sampler(name, 0, 16), optuna.samplers.BaseSampler)
    for name, factory in SCHEDULERS.items():
        assert factory(5, 1, 3, "val_loss", "min") is not None, name


@pytest.mark.parametrize("sampler, scheduler", PAIRS)
def test_each_strategy_runs_a_study(tiny_cifar, tmp_path, sampler, scheduler):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "studies" / "run.py"), "--preset", "smoke", "--data",
         str(tiny_cifar), "--data-fraction", "1", "--trials", "4", "--results", str(tmp_path),
         "--cache-dir", str(tmp_path / "cache"), "--sampler", sampler, "--scheduler", scheduler],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="resnet_cifar-smoke",
                              storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    states = [t.state for t in study.trials]
    assert len(states) == 4 and set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}
    if scheduler == "fifo":  # nothing stops a trial early
        assert set(states) == {TrialState.COMPLETE}
    sampled = [t for t in study.trials if "recipe" not in t.user_attrs]
    assert len(sampled) == 2 and all(t.params for t in sampled)
    assert all(t.user_attrs["node_id"] for t in study.trials)


def test_parallel_slots_count_what_the_cluster_holds():
    from studies.tune_adapter import parallel_slots

    assert parallel_slots({"CPU": 2.0}, 1.0, 0.0) == 2
    assert parallel_slots({"CPU": 16.0, "GPU": 1.0}, 2.0, 0.25) == 4  # four trials per GPU
    assert parallel_slots({"CPU": 16.0, "GPU": 2.0}, 2.0, 1.0) == 2
    assert parallel_slots({"CPU": 1.0}, 2.0, 0.0) == 1  # never zero: Ray queues it
    assert parallel_slots({"CPU": 4.0}, 0.0, 0.0) is None


def test_asha_lets_the_start_run_in_full_and_still_records_it():
    """A trial in ``keep`` (the space's start) is continued where ASHA would stop it;
    its value still sets the rung, so a weaker trial after it is stopped."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from trainers import metrics as M

    keep: set[str] = set()
    asha = SCHEDULERS["asha"](6, 1, 3, M.VAL_ACC, "max", keep=keep)
    first, start, weak, weaker = (Trial("t", config={}, trial_id=i, stub=True)
                                  for i in ("first", "start", "weak", "weaker"))
    keep.add("start")
    for trial in (first, start, weak, weaker):
        asha.on_trial_add(None, trial)
    decide = lambda trial, acc: asha.on_trial_result(None, trial, {M.EPOCH: 1, M.VAL_ACC: acc})  # noqa: E731
    assert decide(first, 0.50) == TrialScheduler.CONTINUE  # the first at a rung always goes on
    assert decide(start, 0.40) == TrialScheduler.CONTINUE  # below the cutoff, but kept
    assert decide(weak, 0.40) == TrialScheduler.STOP  # the same value, not kept
    rung = {trial_id: acc for bracket in asha._brackets for milestone, recorded in bracket._rungs
            if milestone == 1 for trial_id, acc in recorded.items()}
    assert rung["start"] == 0.40 and set(rung) == {"first", "start", "weak"}
    # Later rungs too: the start is continued at epoch 3 under a better trial.
    assert asha.on_trial_result(None, first, {M.EPOCH: 3, M.VAL_ACC: 0.7}) == TrialScheduler.CONTINUE
    assert asha.on_trial_result(None, start, {M.EPOCH: 3, M.VAL_ACC: 0.6}) == TrialScheduler.CONTINUE
    assert decide(weaker, 0.30) == TrialScheduler.STOP

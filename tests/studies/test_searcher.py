"""The searcher's contract with Optuna, driven the way Ray Tune's controller calls it."""

import pickle
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search import Searcher

from studies import record
from studies.storage import close_stale, open_storage, open_study
from studies.tune_adapter import StudySearcher, _TrialBook, baselines_after


def _space(trial):
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    return {"model": "resnet", "epochs": 3}


def _settings(objectives=("val_acc",)):
    return record.StudySettings(space="test", preset="smoke", fixed={"epochs": 3}, data="blake2b:00",
                                objectives=tuple(objectives),
                                directions=tuple(record.DIRECTIONS[o] for o in objectives))


def _searcher(url, space=_space, wanted=100, objectives=("val_acc",), stale_after=None, **baselines):
    storage = open_storage(url, stale_after=stale_after)
    study, _ = open_study(storage, "contract", _settings(objectives))
    return StudySearcher(space=space, study=study, storage=storage, wanted=wanted,
                         objectives=list(objectives), book=_TrialBook(), **baselines)


@pytest.fixture
def url(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return f"sqlite:///{tmp_path / 's.db'}"


@pytest.fixture
def search(url):
    return _searcher(url), optuna.load_study(study_name="contract", storage=url)


def _result(epoch, acc, **extra):
    return {"epoch": epoch, "val_acc": acc, "val_loss": 2.0 - acc, "train_seconds": 1.5 * epoch,
            "param_count": 1234, "config": {"lr": 0.01, "model": "resnet", "epochs": 3}, **extra}


def test_a_trial_that_ran_its_budget_is_complete_with_every_epoch(search):
    searcher, study = search
    assert searcher.suggest("a") == {"model": "resnet", "epochs": 3}
    searcher.on_trial_result("a", _result(1, 0.3))
    searcher.on_trial_result("a", _result(2, 0.4))
    searcher.on_trial_complete("a", _result(3, 0.5, finished=True))
    (t,) = study.trials
    assert t.state == TrialState.COMPLETE and t.value == 0.5
    assert t.intermediate_values == {1: 0.3, 2: 0.4, 3: 0.5}
    assert t.user_attrs[record.EPOCHS_RUN] == 3 and t.user_attrs[record.TRAIN_SECONDS] == 4.5
    assert t.user_attrs[record.PARAM_COUNT] == 1234 and t.user_attrs[record.RAY_TRIAL_ID] == "a"
    assert t.user_attrs[record.CONFIG]["model"] == "resnet"
    assert t.user_attrs[record.VALUES] == {"val_acc": 0.5, "val_loss": 1.5}
    assert t.user_attrs[record.DRIVER].split(":")[1].isdigit()


def test_the_space_s_start_is_handed_to_the_scheduler_to_run_in_full(search):
    """The trial enqueued with the ``start`` attribute (run.py --start) goes into the set
    the ASHA scheduler continues; the sampled and recipe trials around it do not."""
    searcher, study = search
    study.enqueue_trial({"lr": 0.05}, user_attrs={record.START: "test"})
    searcher.suggest("start")
    searcher.suggest("sampled")
    assert searcher.runs_in_full == {"start"}
    assert [t.user_attrs.get(record.START) for t in study.trials] == ["test", None]


def test_a_trial_stopped_early_is_pruned_with_its_last_epoch(search):
    searcher, study = search
    searcher.suggest("b")
    searcher.on_trial_complete("b", _result(1, 0.2, finished=False))
    (t,) = study.trials
    assert t.state == TrialState.PRUNED
    assert t.intermediate_values == {1: 0.2} and t.user_attrs[record.EPOCHS_RUN] == 1


def test_a_diverged_trial_fails_with_its_reason(search):
    searcher, study = search
    searcher.suggest("c")
    searcher.on_trial_result("c", _result(1, 0.3))
    searcher.on_trial_complete("c", _result(2, 0.0, diverged=True, reason="non-finite loss"))
    (t,) = study.trials
    assert t.state == TrialState.FAIL and record.fail_reason(t) == "non-finite loss"
    assert t.intermediate_values == {1: 0.3} and not record.is_stale(t)


def test_an_erroring_trial_fails_and_a_second_completion_is_ignored(search):
    searcher, study = search
    searcher.suggest("d")
    searcher.on_trial_complete("d", error=True)
    searcher.on_trial_complete("d", _result(3, 0.9, finished=True))
    (t,) = study.trials
    assert t.state == TrialState.FAIL and "error" in t.user_attrs[record.FAIL_REASON]


def test_open_trials_are_failed_as_stale_when_the_driver_stops(search):
    searcher, study = search
    searcher.suggest("e")
    searcher.suggest("f")
    searcher.on_trial_complete("f", _result(3, 0.6, finished=True))
    searcher.close("interrupted")
    states = {t.user_attrs.get(record.RAY_TRIAL_ID, "e"): t.state for t in study.trials}
    assert states == {"e": TrialState.FAIL, "f": TrialState.COMPLETE}
    assert record.fail_reason(study.trials[0]) == "interrupted" and record.is_stale(study.trials[0])
    assert record.finished_count(study.trials) == 1  # the interrupted one is re-run, not counted
    assert searcher.suggest("g") == Searcher.FINISHED  # a closed searcher asks for nothing


def test_a_space_that_raises_fails_that_trial_only_and_the_next_is_asked(url):
    calls = []

    def space(trial):
        calls.append(trial.number)
        if trial.number == 0:
            raise ValueError("no such width: 7")
        if trial.number == 1:
            raise optuna.TrialPruned("nothing to try here")
        return _space(trial)

    searcher = _searcher(url, space=space)
    assert searcher.suggest("a") == {"model": "resnet", "epochs": 3}
    study = optuna.load_study(study_name="contract", storage=url)
    t0, t1, t2 = study.trials
    assert t0.state == TrialState.FAIL
    assert record.fail_reason(t0) == "the search space raised ValueError: no such width: 7"
    assert t1.state == TrialState.PRUNED and t2.state == TrialState.RUNNING
    assert record.finished_count(study.trials) == 2 and calls == [0, 1, 2]


def test_the_searcher_stops_asking_at_the_wanted_count_across_drivers(url):
    first = _searcher(url, wanted=3)
    second = _searcher(url, wanted=3)  # a second driver on the same study
    assert first.suggest("a") is not None and second.suggest("b") is not None
    first.on_trial_complete("a", _result(3, 0.5, finished=True))
    second.on_trial_complete("b", _result(3, 0.6, finished=True))
    assert first.suggest("c") is not None  # 2 finished + 0 of its own open < 3
    assert second.suggest("d") is not None  # the same count: the first's trial is in flight
    first.on_trial_complete("c", _result(3, 0.7, finished=True))
    assert first.suggest("e") == Searcher.FINISHED  # 3 finished
    assert second.suggest("f") == Searcher.FINISHED  # 3 finished + its own 1 open
    second.on_trial_complete("d", _result(3, 0.4, finished=True))
    study = optuna.load_study(study_name="contract", storage=url)
    # The requested 3, plus the one that was in flight when the count was reached.
    assert record.finished_count(study.trials) == 4 and len(study.trials) == 4


RECIPES = ["keras_reference", "torch_reference"]


def _recipes(url):
    return [t.user_attrs.get(record.RECIPE) for t in optuna.load_study(study_name="contract", storage=url).trials]


def test_the_baselines_follow_the_first_wave_so_asha_can_stop_them(url):
    searcher = _searcher(url, baselines=RECIPES, baselines_after=2)
    searcher.suggest("a")
    searcher.suggest("b")
    assert _recipes(url) == [None, None]  # one sampled trial per slot first
    searcher.suggest("c")
    assert _recipes(url) == [None, None, "keras_reference", "torch_reference"]  # c is keras, torch waits
    searcher.suggest("d")
    searcher.suggest("e")
    assert _recipes(url) == [None, None, "keras_reference", "torch_reference", None]


def test_a_second_driver_or_a_resumed_study_does_not_enqueue_the_baselines_twice(url):
    first = _searcher(url, baselines=RECIPES, baselines_after=1)
    first.suggest("a")
    first.suggest("b")  # enqueues both, runs keras
    second = _searcher(url, baselines=RECIPES, baselines_after=1)
    second.suggest("c")  # the study already holds them: torch_reference, not a third baseline
    assert _recipes(url) == [None, "keras_reference", "torch_reference"]
    second.suggest("d")
    assert _recipes(url) == [None, "keras_reference", "torch_reference", None]


def test_a_baseline_that_two_drivers_enqueued_at_once_runs_once_and_is_not_counted(url):
    first = _searcher(url, baselines=RECIPES, baselines_after=0, wanted=3)
    second = _searcher(url, baselines=RECIPES, baselines_after=0, wanted=3)
    study = optuna.load_study(study_name="contract", storage=url)
    # What two drivers leave when both checked before either enqueued: every recipe twice.
    for name in RECIPES * 2:
        study.enqueue_trial({}, user_attrs={record.RECIPE: name})
    first._baselines = second._baselines = []  # both have enqueued
    first.suggest("a")  # trial 0: keras
    second.suggest("b")  # trial 1: torch
    assert second.suggest("c") is not None  # trials 2 and 3 are copies: closed; trial 4 is sampled
    trials = optuna.load_study(study_name="contract", storage=url).trials
    assert [t.state for t in trials] == [TrialState.RUNNING, TrialState.RUNNING, TrialState.FAIL,
                                         TrialState.FAIL, TrialState.RUNNING]
    assert _recipes(url) == [*RECIPES, *RECIPES, None]
    assert "duplicate of trial 0" in record.fail_reason(trials[2])
    assert "duplicate of trial 1" in record.fail_reason(trials[3])
    assert record.finished_count(trials) == 0  # the copies do not take the place of requested trials
    for trial_id in ("a", "b", "c"):
        (first if trial_id == "a" else second).on_trial_complete(trial_id, _result(3, 0.5, finished=True))
    assert record.finished_count(optuna.load_study(study_name="contract", storage=url).trials) == 3


def test_a_stale_baseline_is_not_a_reason_to_skip_its_new_copy(url):
    searcher = _searcher(url, baselines=["keras_reference"], baselines_after=0)
    study = optuna.load_study(study_name="contract", storage=url)
    study.enqueue_trial({}, user_attrs={record.RECIPE: "keras_reference"})
    searcher._baselines = []
    searcher.suggest("a")
    study.tell(0, state=TrialState.FAIL)  # its driver died: stale, no reason
    study.enqueue_trial({}, user_attrs={record.RECIPE: "keras_reference"})  # the resumed study's copy
    searcher.suggest("b")
    assert [t.state for t in optuna.load_study(study_name="contract", storage=url).trials] == [
        TrialState.FAIL, TrialState.RUNNING]


def test_baselines_wait_for_one_trial_per_slot_but_always_fit_in_the_study():
    assert baselines_after(2, 16, 2) == 2  # the quick preset on 2 cores: trials 2 and 3
    assert baselines_after(8, 16, 2) == 8
    assert baselines_after(2, 3, 2) == 1 and baselines_after(2, 2, 2) == 0  # else they would never run
    assert baselines_after(None, 16, 2) == 0  # unbounded parallelism: all start at once anyway
    assert baselines_after(2, 16, 0) == 2


def test_a_minimised_objective_is_told_and_reported_as_itself(url):
    searcher = _searcher(url, objectives=("val_loss",))
    searcher.suggest("a")
    searcher.on_trial_result("a", _result(1, 0.3))
    searcher.on_trial_complete("a", _result(2, 0.6, finished=True))
    study = optuna.load_study(study_name="contract", storage=url)
    (t,) = study.trials
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert t.value == pytest.approx(1.4) and t.intermediate_values == {1: pytest.approx(1.7), 2: pytest.approx(1.4)}
    assert record.best_trial(study.trials, "minimize").number == 0


def test_what_ray_pickles_holds_no_storage_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'secret-s3cr3t.db'}"
    searcher = _searcher(url, stale_after=6)  # a heartbeat thread too: it must not be pickled
    searcher.suggest("a")
    blob = pickle.dumps(searcher)
    assert b"s3cr3t" not in blob and b"sqlite" not in blob
    searcher.close("done")


def test_a_trial_of_a_dead_driver_on_this_machine_is_stale_at_once(url):
    searcher = _searcher(url)
    searcher.suggest("a")
    study = optuna.load_study(study_name="contract", storage=url)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host, _, rest = study.trials[0].user_attrs[record.DRIVER].partition(":")
    other = _searcher(url)
    other.suggest("b")  # its trial is live; make the first one look like a dead process's
    storage = open_storage(url, stale_after=None)
    study_id = storage.get_study_id_from_name("contract")
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, 0)
    storage.set_trial_user_attr(trial_id, record.DRIVER, f"{host}:{dead}:{rest.partition(':')[2]}")
    assert close_stale(study) == [0]
    t0, t1 = optuna.load_study(study_name="contract", storage=url).trials
    assert t0.state == TrialState.FAIL and record.is_stale(t0)
    assert t1.state == TrialState.RUNNING  # a live driver's trial is left alone


def test_a_trial_without_heartbeats_is_failed_only_after_the_grace_period(url, monkeypatch):
    # Another machine's driver (its process cannot be checked from here) that died.
    monkeypatch.setenv(record.HOST_ENV, "another-machine")
    searcher = _searcher(url, stale_after=2)  # beats every second, stale after 2 s without one
    searcher.suggest("a")
    searcher._stop.set()  # the driver dies: no more heartbeats  # noqa: SLF001
    monkeypatch.delenv(record.HOST_ENV)
    study = optuna.load_study(study_name="contract", storage=open_storage(url, stale_after=2))
    assert close_stale(study) == []  # within the grace period: still its driver's
    time.sleep(3.5)
    assert close_stale(study) == [0]
    (t,) = optuna.load_study(study_name="contract", storage=url).trials
    assert t.state == TrialState.FAIL and record.is_stale(t)


def test_a_result_for_a_trial_another_driver_failed_is_dropped_not_raised(url, capsys):
    searcher = _searcher(url)
    searcher.suggest("a")
    study = optuna.load_study(study_name="contract", storage=url)
    study.tell(0, state=TrialState.FAIL)  # what another driver's stale check does
    searcher.on_trial_complete("a", _result(3, 0.9, finished=True))
    (t,) = optuna.load_study(study_name="contract", storage=url).trials
    assert t.state == TrialState.FAIL and record.is_stale(t)
    assert "was failed as stale by another driver" in capsys.readouterr().err
    assert searcher.suggest("b") is not None  # and the driver goes on

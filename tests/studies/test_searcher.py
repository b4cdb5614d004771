"""The searcher's contract with Optuna, driven the way Ray Tune's controller calls it."""

import optuna
import pytest
from optuna.trial import TrialState

from studies.tune_adapter import TruthfulOptunaSearch, _TrialBook


def _space(trial):
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    return {"model": "resnet", "epochs": 3}


@pytest.fixture
def search(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    searcher = TruthfulOptunaSearch(space=_space, metric="val_acc", mode="max",
                                    study_name="contract", storage=storage, book=_TrialBook())
    return searcher, optuna.load_study(study_name="contract", storage=storage)


def _result(epoch, acc, **extra):
    return {"epoch": epoch, "val_acc": acc, "train_seconds": 1.5 * epoch, "param_count": 1234,
            "config": {"lr": 0.01, "model": "resnet", "epochs": 3}, **extra}


def test_a_trial_that_ran_its_budget_is_complete_with_every_epoch(search):
    searcher, study = search
    searcher.suggest("a")
    searcher.on_trial_result("a", _result(1, 0.3))
    searcher.on_trial_result("a", _result(2, 0.4))
    searcher.on_trial_complete("a", _result(3, 0.5, finished=True))
    (t,) = study.trials
    assert t.state == TrialState.COMPLETE and t.value == 0.5
    assert t.intermediate_values == {1: 0.3, 2: 0.4, 3: 0.5}
    assert t.user_attrs["epochs_run"] == 3 and t.user_attrs["train_seconds"] == 4.5
    assert t.user_attrs["param_count"] == 1234 and t.user_attrs["ray_trial_id"] == "a"
    assert t.user_attrs["config"]["model"] == "resnet"


def test_a_trial_stopped_early_is_pruned_with_its_last_epoch(search):
    searcher, study = search
    searcher.suggest("b")
    searcher.on_trial_complete("b", _result(1, 0.2, finished=False))
    (t,) = study.trials
    assert t.state == TrialState.PRUNED
    assert t.intermediate_values == {1: 0.2} and t.user_attrs["epochs_run"] == 1


def test_a_diverged_trial_fails_with_its_reason(search):
    searcher, study = search
    searcher.suggest("c")
    searcher.on_trial_result("c", _result(1, 0.3))
    searcher.on_trial_complete("c", _result(2, 0.0, diverged=True, reason="non-finite loss"))
    (t,) = study.trials
    assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"] == "non-finite loss"
    assert t.intermediate_values == {1: 0.3}


def test_an_erroring_trial_fails_and_a_second_completion_is_ignored(search):
    searcher, study = search
    searcher.suggest("d")
    searcher.on_trial_complete("d", error=True)
    searcher.on_trial_complete("d", _result(3, 0.9, finished=True))
    (t,) = study.trials
    assert t.state == TrialState.FAIL and "error" in t.user_attrs["fail_reason"]


def test_open_trials_are_closed_when_the_driver_stops(search):
    searcher, study = search
    searcher.suggest("e")
    searcher.suggest("f")
    searcher.on_trial_complete("f", _result(3, 0.6, finished=True))
    searcher.close_open_trials("interrupted")
    states = {t.user_attrs.get("ray_trial_id", "e"): t.state for t in study.trials}
    assert states == {"e": TrialState.FAIL, "f": TrialState.COMPLETE}
    assert study.trials[0].user_attrs["fail_reason"] == "interrupted"

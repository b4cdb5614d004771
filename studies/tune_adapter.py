"""The one module that imports Ray: trials run as Ray Tune trials, sampled by Optuna.

Roles: the *space* (search_spaces/) suggests values, the *sampler* (Optuna)
chooses them, the *scheduler* (Ray's ASHA) stops weak trials, the *trainable*
(trainers.loop.train, wrapped here) runs them.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import ray
import torch
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    TrialScheduler,
)
from ray.tune.search.optuna import OptunaSearch

from studies.storage import OBJECTIVES
from trainers import metrics as M
from trainers.config import TrialConfig
from trainers.data import Splits
from trainers.loop import train

_STATE_FILE = "state.pt"


# ---------------------------------------------------------------- trainable


def trainable(config: dict[str, Any], splits: Splits, threads: int) -> None:
    """A Ray Tune function trainable: restore first, then report once per epoch."""
    trial_config = TrialConfig.from_dict(config)
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = torch.load(Path(folder) / _STATE_FILE, weights_only=True)

    node_id = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        metrics["node_id"] = node_id  # which machine of a cluster ran the trial
        with tempfile.TemporaryDirectory() as folder:
            torch.save(state, Path(folder) / _STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    train(trial_config, splits, report=report, resume=resume, threads=threads)


# ---------------------------------------------------------------- searcher


class _TrialBook(tune.Callback):
    """Remembers Ray's Trial objects so the searcher can read errors and results."""

    def __init__(self) -> None:
        self.trials: dict[str, Any] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.trials[trial.trial_id] = trial


def _error_line(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith(("Failure #", "Traceback", "File "))]
        if lines:
            return lines[-1][:500]
    return "the trial raised an error; see its error.txt in the Ray results folder"


class TruthfulOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, telling Optuna what really happened to each trial.

    Ray's version records a trial stopped by ASHA as COMPLETE with its
    partial-budget value and never reports the last epoch as an intermediate
    value. Here: one intermediate value per epoch (the last included), PRUNED
    when stopped before its full budget, FAIL (with the reason) on errors and
    divergence, and user attributes for epochs, seconds, size and Ray's id.
    """

    def __init__(self, *args: Any, book: _TrialBook, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._book = book
        self._last_epoch: dict[str, int] = {}
        self._curves: dict[str, dict[str, float]] = {}

    def _suggest_from_define_by_run_func(self, func: Callable, ot_trial: Any) -> dict[str, Any]:
        # A space returns the trial's whole config. Ray would also merge in the
        # raw Optuna parameters, whose names (e.g. ``vgg_depth``) are not config keys.
        config = func(ot_trial)
        if not isinstance(config, dict):
            raise TypeError(f"a search space must return a dict, got {type(config).__name__}")
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self._report(trial_id, result)

    def _report(self, trial_id: str, result: dict[str, Any]) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        value, epoch = result.get(M.VAL_ACC), result.get(M.EPOCH)
        if ot_trial is None or value is None or epoch is None or result.get(M.DIVERGED):
            return
        if math.isfinite(value) and epoch != self._last_epoch.get(trial_id):
            if isinstance(self.metric, list):
                # Optuna keeps no intermediate values for several objectives:
                # the per-epoch accuracy goes into a user attribute instead.
                curve = self._curves.setdefault(trial_id, {})
                curve[str(int(epoch))] = float(value)
                ot_trial.set_user_attr("val_acc_curve", curve)
            else:
                ot_trial.report(float(value), int(epoch))
            self._last_epoch[trial_id] = int(epoch)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        ray_trial = self._book.trials.get(trial_id)
        if result is None and ray_trial is not None:
            result = ray_trial.last_result or None
        result = result or {}
        self._report(trial_id, result)
        attrs = {
            "epochs_run": result.get(M.EPOCH, 0),
            "train_seconds": result.get(M.TRAIN_SECONDS, 0.0),
            "param_count": result.get(M.PARAM_COUNT),
            "ray_trial_id": trial_id,
            "config": result.get("config") or (ray_trial.config if ray_trial else None),
            "node_ip": result.get("node_ip"),
            "node_id": result.get("node_id"),
            "failures": ray_trial.num_failures if ray_trial is not None else None,
        }
        if error:
            state, value = TrialState.FAIL, None
            attrs["fail_reason"] = _error_line(ray_trial)
        elif result.get(M.DIVERGED):
            state, value = TrialState.FAIL, None
            attrs["fail_reason"] = result.get(M.REASON, "non-finite loss")
        elif result.get(M.FINISHED):
            state = TrialState.COMPLETE
            if isinstance(self.metric, list):
                value = [float(result[m]) for m in self.metric]
            else:
                value = float(result[self.metric])
        else:
            state, value = TrialState.PRUNED, None
        for key, val in attrs.items():
            if val is not None:
                ot_trial.set_user_attr(key, val)
        self._ot_study.tell(ot_trial, value, state=state)
        self._completed_trials.add(trial_id)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the Optuna storage is the searcher's whole state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore; a new run continues the study from its storage."""

    def close_open_trials(self, reason: str) -> None:
        """FAILs trials Ray never finished (the driver is stopping)."""
        for trial_id in list(self._ot_trials):
            if trial_id in self._completed_trials:
                continue
            ot_trial = self._ot_trials[trial_id]
            frozen = ot_trial.storage.get_trial(ot_trial._trial_id)
            if frozen.state == TrialState.RUNNING:
                ot_trial.set_user_attr("fail_reason", reason)
                ot_trial.set_user_attr("stale", True)
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            self._completed_trials.add(trial_id)


# ---------------------------------------------------------------- schedulers
# Ray's schedulers by name; each decides, per epoch, whether a trial goes on.

SCHEDULERS: dict[str, Callable[[int, int, int], TrialScheduler]] = {
    "asha": lambda max_t, grace, rf: ASHAScheduler(
        time_attr=M.EPOCH, metric=M.VAL_ACC, mode="max", max_t=max_t,
        grace_period=min(grace, max_t), reduction_factor=rf),
    "hyperband": lambda max_t, grace, rf: HyperBandScheduler(
        time_attr=M.EPOCH, metric=M.VAL_ACC, mode="max", max_t=max_t, reduction_factor=rf),
    "median": lambda max_t, grace, rf: MedianStoppingRule(
        time_attr=M.EPOCH, metric=M.VAL_ACC, mode="max", grace_period=min(grace, max_t),
        min_samples_required=3),
    "fifo": lambda max_t, grace, rf: FIFOScheduler(),
}


# ---------------------------------------------------------------- the study


def parallel_slots(resources: dict[str, float], cpus_per_trial: float,
                   gpus_per_trial: float) -> int | None:
    """Trials the cluster can run at once (its CPUs and GPUs now); None when unbounded."""
    limits = [math.floor(resources.get(kind, 0) / need + 1e-9)
              for kind, need in (("CPU", cpus_per_trial), ("GPU", gpus_per_trial)) if need > 0]
    return max(1, min(limits)) if limits else None


def run_trials(
    *,
    space: Callable[[Any], dict[str, Any]],
    study_name: str,
    storage: optuna.storages.BaseStorage,
    sampler: optuna.samplers.BaseSampler,
    num_trials: int,
    splits: Splits,
    max_epochs: int,
    grace_period: int,
    reduction_factor: int,
    cpus_per_trial: float,
    gpus_per_trial: float,
    results_dir: Path,
    run_name: str,
    address: str | None = None,
    scheduler: str = "asha",
    objectives: list[str] | None = None,
) -> None:
    """Runs ``num_trials`` new trials of an existing Optuna study on Ray Tune."""
    # The classic reporter prints one compact table; the new engine prints a
    # box per trial result, which buries the progress of a 16-trial study.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network calls home
    if not ray.is_initialized():
        quiet = {"log_to_driver": False, "logging_level": "ERROR"}
        if address:  # a cluster's own settings (dashboard, CPUs) are not the driver's to pick
            ray.init(address=address, **quiet)
        else:
            ray.init(include_dashboard=False, **quiet)
    book = _TrialBook()
    objectives = objectives or [M.VAL_ACC]
    modes = ["max" if OBJECTIVES[o] == "maximize" else "min" for o in objectives]
    searcher = TruthfulOptunaSearch(space=space, metric=objectives if len(objectives) > 1 else objectives[0],
                                    mode=modes if len(objectives) > 1 else modes[0],
                                    sampler=sampler, study_name=study_name,
                                    storage=storage, book=book)
    trial_scheduler = SCHEDULERS[scheduler](max_epochs, grace_period, reduction_factor)
    threads = max(1, math.floor(cpus_per_trial))
    slots = parallel_slots(ray.cluster_resources(), cpus_per_trial, gpus_per_trial)
    run = tune.with_resources(
        tune.with_parameters(trainable, splits=splits, threads=threads),
        {"cpu": cpus_per_trial, "gpu": gpus_per_trial},
    )
    reporter = tune.CLIReporter(
        metric_columns={M.EPOCH: "epoch", M.VAL_ACC: "val_acc", M.TRAIN_LOSS: "train_loss",
                        M.IMAGES_PER_SEC: "img/s"},
        parameter_columns=["depth", "width", "optimizer", "lr", "aug_strength"],
        max_report_frequency=30, sort_by_metric=True, metric=M.VAL_ACC, mode="max",
    )
    tuner = tune.Tuner(
        run,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=trial_scheduler,
                                    num_samples=num_trials,
                                    # Ask Optuna for a trial only when a slot is free:
                                    # a queued trial would be sampled without the results
                                    # that arrive while it waits, and its stored start
                                    # time (and duration) would include the wait.
                                    max_concurrent_trials=slots,
                                    # A new trial reuses a finished trial's process:
                                    # torch is imported and the data fetched once per slot.
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=str(results_dir.resolve()),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=2),
            progress_reporter=reporter,
            verbose=1,
            callbacks=[book],
        ),
    )
    try:
        tuner.fit()
    finally:
        searcher.close_open_trials("the study was interrupted before the trial finished")

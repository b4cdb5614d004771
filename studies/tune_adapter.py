"""The one module that imports Ray: trials run as Ray Tune trials, sampled by Optuna.

Roles: the *space* (search_spaces/) suggests values, the *sampler* (Optuna)
chooses them, the *scheduler* (Ray's ASHA) stops weak trials, the *trainable*
(trainers.loop.train, wrapped here) runs them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import tempfile
import threading
import uuid
import warnings
from collections.abc import Callable, Sequence
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
from ray.tune.search import Searcher

from studies import record
from studies.storage import Heartbeat, close_stale
from trainers import metrics as M
from trainers.config import TrialConfig
from trainers.data import Splits
from trainers.errors import UserError
from trainers.loop import train
from trainers.plugins import load_payload, plugin_payload

_STATE_FILE = "state.pt"
DATA_FETCHES = "data_fetches"  # reported: times this trial's worker process fetched the splits


# ---------------------------------------------------------------- trainable


def trial_device(gpu_ids: Sequence[int | str], visible: str | None) -> torch.device:
    """The device Ray granted a trial: its first GPU, else the CPU.

    ``gpu_ids`` is ``ray.get_gpu_ids()`` in the trial's worker and ``visible``
    that process's ``CUDA_VISIBLE_DEVICES``. Ray 2.60 no longer empties that
    variable for a worker granted no GPU (ray-project/ray#54868; see
    ``RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO`` in ray/_private/accelerators), so a
    visible GPU says nothing about the grant: no ids, the CPU. A worker granted
    GPUs gets CUDA_VISIBLE_DEVICES set to those ids in this order
    (``NvidiaGPUAcceleratorManager.set_current_process_visible_accelerator_ids``),
    so torch numbers the first one ``cuda:0``; with
    RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES the variable stays the node's
    (the ids are a subset of its entries) or unset (the ids are torch's
    ordinals). The ordinal is the id's place in the list in every case. A
    fractional grant (``--gpus-per-trial 0.5``) is one id, shared; a trial given
    several GPUs trains on the first (the trainer uses one device).
    """
    if not gpu_ids:
        return torch.device("cpu")
    first = str(gpu_ids[0])
    if visible is None:
        return torch.device("cuda", int(first))
    order = [entry.strip() for entry in visible.split(",") if entry.strip()]
    if first not in order:
        raise RuntimeError(f"Ray granted GPU {first} but CUDA_VISIBLE_DEVICES is {visible!r}")
    return torch.device("cuda", order.index(first))


@dataclasses.dataclass(frozen=True)
class SharedSplits:
    """The study's splits in Ray's object store, behind a handle small enough to pass per trial.

    ``tune.with_parameters`` gets (and unpickles) its arguments for every
    trial, even in a reused actor: given this handle, only the handle is; the
    splits themselves are fetched once per worker process (``_WorkerSplits``).
    """

    key: str
    ref: Any  # ray.ObjectRef of a Splits: inside a handle, Ray passes the reference, not the value

    @classmethod
    def put(cls, splits: Splits) -> SharedSplits:
        return cls(key=uuid.uuid4().hex, ref=ray.put(splits))


class _WorkerSplits:
    """The splits a worker process fetched, kept across the trials it runs, on their device.

    With ``reuse_actors=True`` one process runs trial after trial: the dataset
    (about 180 MB of uint8 for CIFAR-10) is fetched, unpickled and copied to the
    GPU once, not once per trial. One study's splits are kept, on one device.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[str, str] | None = None
        self._splits: Splits | None = None
        self.fetches = 0

    def get(self, shared: SharedSplits | Splits, device: torch.device) -> Splits:
        if isinstance(shared, Splits):  # passed by value (a caller of trainable() outside run_trials)
            return shared
        with self._lock:
            if self._key != (shared.key, str(device)):
                self._key, self._splits = None, None  # the old copy goes before the new one comes
                splits = ray.get(shared.ref)
                self.fetches += 1
                if device.type != "cpu":
                    # uint8 is cheaper to move than float: the trainer normalises on the device.
                    splits = dataclasses.replace(
                        splits, **{name: getattr(splits, name).to(device)
                                   for name in ("train_x", "train_y", "val_x", "val_y")})
                self._key, self._splits = (shared.key, str(device)), splits
            return self._splits


_WORKER_SPLITS = _WorkerSplits()


@dataclasses.dataclass(frozen=True)
class CheckpointPolicy:
    """When a trial saves its full state, and whether the optimizer's state is part of it.

    ``epochs`` None saves every epoch. Otherwise the state is saved at these
    epochs and at the trial's last; the other epochs report metrics alone, and a
    worker that fails resumes from the last saved epoch (the epochs after it run
    again). Without the optimizer's state a resumed trial restarts its optimizer
    (momenta, Adam's moments) at the saved epoch: close to, not exactly, the
    uninterrupted run; the checkpoint shrinks by the optimizer's share (half of
    it for AdamW, a third for SGD with momentum).
    """

    epochs: frozenset[int] | None = None
    optimizer: bool = True

    def saves(self, epoch: int, last_epoch: int) -> bool:
        return self.epochs is None or epoch in self.epochs or epoch >= last_epoch


def checkpoint_epochs(scheduler: str, max_t: int, grace_period: int,
                      reduction_factor: int) -> frozenset[int] | None:
    """The epochs a study's trials save their state at, for ``CheckpointPolicy``; None: every one.

    ASHA decides at its rungs, ``grace_period * reduction_factor**k`` epochs up
    to ``max_t``, and only ever stops a trial there or lets it go on: saving
    there and at the end is all a stopped trial needs, and a failed worker loses
    at most the epochs since the last rung. FIFO and the median rule never
    resume a trial either; they get the same ladder as fault-recovery points.
    HyperBand pauses trials at milestones of each bracket and resumes them from
    their last checkpoint, so there every epoch is saved.
    """
    if scheduler == "hyperband":
        return None
    grace = max(1, min(grace_period, max_t))
    epochs, rung = {max_t}, grace
    while rung < max_t:
        epochs.add(rung)
        rung *= max(2, reduction_factor)
    return frozenset(epochs)


def trainable(config: dict[str, Any], splits: SharedSplits | Splits, threads: int,
              plugins: list[dict[str, Any]] | None = None,
              checkpoints: CheckpointPolicy = CheckpointPolicy(), compile: bool = False) -> None:
    """A Ray Tune function trainable: restore first, then report once per epoch.

    The driver's plugins are imported first (once per worker process), so a
    config may name a model that a plugin registers, on any node. The trial
    trains on the GPU Ray granted it, else on the CPU (:func:`trial_device`);
    the splits are fetched once per worker process and kept on that device.
    ``compile`` turns on ``torch.compile`` (CUDA only; the trainer ignores it on
    the CPU). The state is saved as ``checkpoints`` says; other epochs report
    metrics only.
    """
    load_payload(plugins or [])
    trial_config = TrialConfig.from_dict(config)
    if compile:
        trial_config = trial_config.replace(compile=True)
    device = trial_device(ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES"))
    data = _WORKER_SPLITS.get(splits, device)
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            # On the CPU first: the worker that saved it may have had another device.
            resume = torch.load(Path(folder) / _STATE_FILE, map_location="cpu", weights_only=True)

    node_id = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        metrics["node_id"] = node_id  # which machine of a cluster ran the trial
        metrics[DATA_FETCHES] = _WORKER_SPLITS.fetches
        if not checkpoints.saves(int(metrics[M.EPOCH]), trial_config.epochs):
            tune.report(metrics)
            return
        if not checkpoints.optimizer:
            state = {key: value for key, value in state.items() if key != "optimizer"}
        with tempfile.TemporaryDirectory() as folder:
            torch.save(state, Path(folder) / _STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    train(trial_config, data, report=report, resume=resume, device=device, threads=threads)


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


class StudySearcher(Searcher):
    """Ray's searcher interface around an Optuna study of ours, driven by ask and tell.

    Each ``suggest`` first closes stale trials (see :func:`studies.storage.close_stale`),
    then asks the study for a trial only while the study's finished trials plus
    this driver's open ones fall short of ``wanted``: several drivers on one
    study (terminals, machines sharing a PostgreSQL storage) end with the
    requested number, plus at most the trials in flight. A space that raises
    fails that trial only (``TrialPruned`` prunes it) and the next is asked.

    Optuna is told what really happened: one intermediate value per epoch (the
    last included), PRUNED when stopped before the full budget, FAIL with the
    reason on errors and divergence, and the attributes of
    :func:`studies.record.trial_attrs`. While a trial is open the driver records
    its heartbeat, so other drivers fail it only after this driver died.

    The reference recipes (``baselines``) are enqueued once the study holds
    ``baselines_after`` trials: after the first wave of sampled trials, so
    ASHA's rungs hold values when a baseline reaches them and it is stopped like
    any other trial (Ray's ASHA lets the first trial at a rung go on unconditionally).
    The space's known-good start (a trial with the ``start`` attribute) is the
    exception: its Ray id goes into :attr:`runs_in_full`, which ASHA is given,
    so it runs all its epochs.
    """

    def __init__(self, *, space: Callable[[Any], dict[str, Any]], study: optuna.Study,
                 storage: optuna.storages.RDBStorage, wanted: int, objectives: list[str],
                 book: _TrialBook, tensorboard: Path | None = None, baselines: Sequence[str] = (),
                 baselines_after: int = 0) -> None:
        super().__init__(metric=objectives[0], mode=_MODES[record.DIRECTIONS[objectives[0]]])
        self._baselines = list(baselines)
        self._baselines_after = baselines_after
        self._board = _TensorBoard(tensorboard) if tensorboard is not None else None
        self._space = space
        self._study = study
        self._heartbeat = Heartbeat(storage, study.study_name)
        self._wanted = wanted
        self._objectives = objectives
        self._book = book
        self._driver = record.driver_id(uuid.uuid4().hex[:8])
        self._open: dict[str, optuna.Trial] = {}
        self.runs_in_full: set[str] = set()  # Ray ids of start trials: the scheduler lets them finish
        self._last_epoch: dict[str, int] = {}
        self._curves: dict[str, dict[str, float]] = {}
        self._closed = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if self._heartbeat.interval:
            threading.Thread(target=self._beat, args=(self._heartbeat.interval,), daemon=True,
                             name="optuna-heartbeat").start()

    # Ray pickles its search algorithm with the experiment state (tuner.pkl): the
    # storage (whose URL may hold a password), threads and locks stay out of it.
    def __getstate__(self) -> dict[str, Any]:
        return {"study_name": self._study.study_name, "open": sorted(self._open)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return True  # the space is ours; Ray's metric and mode are the scheduler's

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with self._lock:
                numbers = [t.number for t in self._open.values()]
            try:
                self._heartbeat.beat(numbers)
            except Exception:  # a storage hiccup: the next beat retries
                pass

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._closed:
            return Searcher.FINISHED
        close_stale(self._study, own={t.number for t in self._open.values()})
        if self._baselines and len(self._study.get_trials(deepcopy=False)) >= self._baselines_after:
            enqueue_baselines(self._study, self._baselines)
            self._baselines = []
        while True:
            done = record.finished_count(self._study.get_trials(deepcopy=False))
            if done + len(self._open) >= self._wanted:
                return Searcher.FINISHED
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                trial = self._study.ask()
            trial.set_user_attr(record.DRIVER, self._driver)
            if self._heartbeat.interval:
                self._heartbeat.beat([trial.number])
            original = duplicate_of(self._study, trial)
            if original is not None:  # two drivers enqueued the same baseline at once: run it once
                trial.set_user_attr(record.FAIL_REASON, f"a duplicate of trial {original}: two drivers enqueued "
                                    f"the reference recipe {trial.user_attrs[record.RECIPE]!r} at once")
                trial.set_user_attr(record.STALE, True)  # not part of the study's count
                self._study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                continue
            try:
                config = self._space(trial)
                if not isinstance(config, dict):
                    raise TypeError(f"a search space must return a dict, got {type(config).__name__}")
            except optuna.TrialPruned as err:
                self._study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
                print(f"trial {trial.number} pruned by the search space{': ' + str(err) if str(err) else ''}",
                      file=sys.stderr)
                continue
            except Exception as err:  # the user's space: that trial fails, the study goes on
                reason = f"the search space raised {type(err).__name__}: {err}"[:500]
                trial.set_user_attr(record.FAIL_REASON, reason)
                self._study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                print(f"trial {trial.number} failed: {reason}", file=sys.stderr)
                continue
            with self._lock:
                self._open[trial_id] = trial
            if record.START in trial.user_attrs:
                self.runs_in_full.add(trial_id)
            return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self._report(trial_id, result)

    def _report(self, trial_id: str, result: dict[str, Any]) -> None:
        trial = self._open.get(trial_id)
        metric = self._objectives[0] if len(self._objectives) == 1 else M.VAL_ACC
        value, epoch = result.get(metric), result.get(M.EPOCH)
        if trial is None or value is None or epoch is None or result.get(M.DIVERGED):
            return
        if self._board is not None and epoch != self._last_epoch.get(trial_id):
            self._board.log(trial.number, int(epoch), result)
        if math.isfinite(value) and epoch != self._last_epoch.get(trial_id):
            try:
                if len(self._objectives) > 1:
                    # Optuna keeps no intermediate values for several objectives:
                    # the per-epoch accuracy goes into a user attribute instead.
                    curve = self._curves.setdefault(trial_id, {})
                    curve[str(int(epoch))] = float(value)
                    trial.set_user_attr(record.CURVE, curve)
                else:
                    trial.report(float(value), int(epoch))
            except optuna.exceptions.UpdateFinishedTrialError:
                return  # failed as stale by another driver: said when the trial ends
            self._last_epoch[trial_id] = int(epoch)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        trial = self._open.get(trial_id)
        if trial is None:
            return
        ray_trial = self._book.trials.get(trial_id)
        if result is None and ray_trial is not None:
            result = ray_trial.last_result or None
        result = result or {}
        self._report(trial_id, result)
        attrs = record.trial_attrs(
            result, ray_trial_id=trial_id, config=ray_trial.config if ray_trial else None,
            failures=ray_trial.num_failures if ray_trial is not None else None,
            objectives=self._objectives)
        values: list[float] | None = None
        if error:
            state, attrs[record.FAIL_REASON] = TrialState.FAIL, _error_line(ray_trial)
        elif result.get(M.DIVERGED):
            state, attrs[record.FAIL_REASON] = TrialState.FAIL, result.get(M.REASON, "non-finite loss")
        elif result.get(M.FINISHED):
            missing = [m for m in self._objectives if not _finite(result.get(m))]
            if missing:
                state = TrialState.FAIL
                attrs[record.FAIL_REASON] = f"the trial reported no finite {', '.join(missing)}"
            else:
                state, values = TrialState.COMPLETE, [float(result[m]) for m in self._objectives]
        else:
            state = TrialState.PRUNED
        self._tell(trial_id, attrs, state, values)

    def _tell(self, trial_id: str, attrs: dict[str, Any], state: TrialState,
              values: list[float] | None) -> None:
        trial = self._open[trial_id]
        try:
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            self._study.tell(trial, values, state=state, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Another driver failed it as stale (no heartbeat got through for the
            # grace period): the storage keeps that verdict; this run goes on.
            print(f"trial {trial.number} was failed as stale by another driver before it finished "
                  "here; its result is not recorded (raise --stale-after if the storage is slow)",
                  file=sys.stderr)
        with self._lock:
            self._open.pop(trial_id, None)

    def open_trials(self) -> list[int]:
        """Numbers of the trials this driver asked for and has not told yet."""
        with self._lock:
            return sorted(t.number for t in self._open.values())

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the Optuna storage is the searcher's whole state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore; a new run continues the study from its storage."""

    def close(self, reason: str, state: TrialState = TrialState.FAIL) -> None:
        """Ends the trials this driver opened and never finished, FAIL (stale: a continued
        study runs them again) or PRUNED (a time budget stopped them, as a scheduler
        would); stops the heartbeat and flushes the TensorBoard logs."""
        self._closed = True
        for trial_id in list(self._open):
            try:
                if state == TrialState.PRUNED:  # what it ran is recorded, as for a scheduler's stop
                    ray_trial = self._book.trials.get(trial_id)
                    result = (ray_trial.last_result if ray_trial is not None else None) or {}
                    self._report(trial_id, result)
                    attrs = record.trial_attrs(
                        result, ray_trial_id=trial_id, config=ray_trial.config if ray_trial else None,
                        failures=ray_trial.num_failures if ray_trial is not None else None,
                        objectives=self._objectives)
                    self._tell(trial_id, {**attrs, record.STOPPED_BY: reason}, state, None)
                else:
                    self._tell(trial_id, {record.FAIL_REASON: reason, record.STALE: True}, state, None)
            except Exception:  # already finished by another driver's stale check
                self._open.pop(trial_id, None)
        self._stop.set()
        if self._board is not None:
            self._board.close()


def enqueue_baselines(study: optuna.Study, recipes: Sequence[str]) -> None:
    """Enqueues each reference recipe the study lacks (a second driver finds them there).

    A baseline whose run was cut (stale: killed or interrupted) is enqueued again.
    Two drivers at the same instant may both enqueue one: :func:`duplicate_of`
    closes the later copy when it is asked, so each recipe runs once.
    """
    have = {t.user_attrs.get(record.RECIPE) for t in study.get_trials(deepcopy=False) if not record.is_stale(t)}
    for name in recipes:
        if name not in have:
            study.enqueue_trial({}, user_attrs={record.RECIPE: name})


def duplicate_of(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """The number of an earlier trial of the same reference recipe, if ``trial`` runs one.

    Enqueueing is check-then-act: two drivers that start at the same instant can
    each find a recipe missing and enqueue it. Optuna pops waiting trials in
    order, so the earlier copy is already running when a later one is asked.
    A stale earlier copy (its driver died) does not count: the later one runs.
    """
    recipe = trial.user_attrs.get(record.RECIPE)
    if recipe is None:
        return None
    return next((t.number for t in study.get_trials(deepcopy=False)
                 if t.number < trial.number and t.user_attrs.get(record.RECIPE) == recipe
                 and not record.is_stale(t)), None)


def baselines_after(slots: int | None, wanted: int, baselines: int) -> int:
    """How many trials the study holds before its baselines are enqueued.

    One per parallel slot (the first wave is the sampler's), but never so many
    that the baselines would not fit in the ``wanted`` trials.
    """
    return max(0, min(slots or 0, wanted - baselines))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class _TensorBoard:
    """Per-epoch scalars for TensorBoard: ``FOLDER/trial_0007/`` per Optuna trial number."""

    SCALARS = (M.TRAIN_LOSS, M.TRAIN_ACC, M.VAL_LOSS, M.VAL_ACC, M.LR, M.IMAGES_PER_SEC, M.EPOCH_SECONDS)

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._writers: dict[int, Any] = {}

    def log(self, number: int, epoch: int, result: dict[str, Any]) -> None:
        from tensorboardX import SummaryWriter

        try:
            if number not in self._writers:
                self._writers[number] = SummaryWriter(str(self._folder / f"trial_{number:04d}"))
            writer = self._writers[number]
            for name in self.SCALARS:
                if _finite(result.get(name)):
                    writer.add_scalar(name, float(result[name]), epoch)
            writer.flush()
        except OSError as err:  # a full disk must not stop the study: its record is Optuna's
            print(f"TensorBoard log of trial {number} not written: {err}", file=sys.stderr)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


# ---------------------------------------------------------------- schedulers
# Ray's schedulers by name; each decides, per epoch, whether a trial goes on.

_MODES = {"maximize": "max", "minimize": "min"}


class _ASHA(ASHAScheduler):
    """Ray's ASHA, except that the trials in ``keep`` are never stopped early.

    ``keep`` holds Ray trial ids (the searcher adds the space's known-good
    start, see :attr:`StudySearcher.runs_in_full`). Their results still go
    through ASHA first, so they are recorded in the rungs the other trials are
    cut at. Without this, ASHA stopped the start at its first rung (epoch 1,
    where a ResNet-18 with SGD trails the small nets it overtakes by epoch 6;
    benchmarks/RESULTS.md section 16).
    """

    def __init__(self, *args: Any, keep: set[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keep = keep if keep is not None else set()

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and trial.trial_id in self.keep:
            return TrialScheduler.CONTINUE
        return action


# Ray's schedulers by name; each decides, per epoch, whether a trial goes on.
# ASHA, the default, lets the trials in ``keep`` run in full. The others stop a
# start like any trial: HyperBand pauses and resumes whole brackets, and the
# median rule keeps the trials it stopped in a set it asserts on.
SCHEDULERS: dict[str, Callable[..., TrialScheduler]] = {
    "asha": lambda max_t, grace, rf, metric, mode, keep=None: _ASHA(
        time_attr=M.EPOCH, metric=metric, mode=mode, max_t=max_t,
        grace_period=min(grace, max_t), reduction_factor=rf, keep=keep),
    "hyperband": lambda max_t, grace, rf, metric, mode, keep=None: HyperBandScheduler(
        time_attr=M.EPOCH, metric=metric, mode=mode, max_t=max_t, reduction_factor=rf),
    "median": lambda max_t, grace, rf, metric, mode, keep=None: MedianStoppingRule(
        time_attr=M.EPOCH, metric=metric, mode=mode, grace_period=min(grace, max_t),
        min_samples_required=3),
    "fifo": lambda max_t, grace, rf, metric, mode, keep=None: FIFOScheduler(),
}


# ---------------------------------------------------------------- the study


def parallel_slots(resources: dict[str, float], cpus_per_trial: float,
                   gpus_per_trial: float) -> int | None:
    """Trials the cluster can run at once (its CPUs and GPUs now); None when unbounded."""
    limits = [math.floor(resources.get(kind, 0) / need + 1e-9)
              for kind, need in (("CPU", cpus_per_trial), ("GPU", gpus_per_trial)) if need > 0]
    return max(1, min(limits)) if limits else None


def _check_fits(cpus: float, gpus: float) -> None:
    """Refuses a trial no node of the cluster can hold: Ray would keep it PENDING forever.

    Raises:
        UserError: no alive node has the CPUs and GPUs one trial asks for.
    """
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not any(r.get("CPU", 0) >= cpus and r.get("GPU", 0) >= gpus for r in nodes):
        most_cpus = max((r.get("CPU", 0) for r in nodes), default=0)
        most_gpus = max((r.get("GPU", 0) for r in nodes), default=0)
        raise UserError(f"a trial asks for {cpus:g} CPUs and {gpus:g} GPUs, but no node of the cluster has "
                        f"that much (at most {most_cpus:g} CPUs, {most_gpus:g} GPUs on one node); "
                        "lower --cpus-per-trial/--gpus-per-trial")


def _sees_marker(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def check_shared_storage(folder: Path, timeout: float = 120.0) -> None:
    """Refuses a results folder some node of the cluster cannot see.

    Ray Tune writes every trial's checkpoints to its storage path from the
    node the trial runs on: a folder local to the driver's machine fails each
    remote trial at its first checkpoint. One tiny task pinned to each node
    reads a marker the driver wrote there.

    Raises:
        UserError: a node does not see the marker (or did not answer).
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    token = uuid.uuid4().hex
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f".shared-check-{token}"
    marker.write_text(token)
    probe = ray.remote(num_cpus=0)(_sees_marker)
    try:
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(marker), token) for n in nodes]
        try:
            seen = ray.get(refs, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            seen = [False] * len(nodes)  # a node that cannot answer cannot be relied on either
    finally:
        marker.unlink(missing_ok=True)
    blind = [n.get("NodeManagerAddress", n["NodeID"][:8]) for n, ok in zip(nodes, seen, strict=True) if not ok]
    if blind:
        raise UserError(f"--results {folder.parent} is not shared by every node of the cluster "
                        f"({len(blind)} of {len(nodes)} cannot see it: {', '.join(blind)}); pass --results "
                        "a folder every node mounts at the same path (NFS, say)")


def run_trials(
    *,
    space: Callable[[Any], dict[str, Any]],
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    wanted: int,
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
    plugins: list[str] | None = None,
    time_budget_s: float | None = None,
    tensorboard: Path | None = None,
    compile: bool = False,
    checkpoint_optimizer: bool = True,
    baselines: Sequence[str] = (),
) -> None:
    """Runs up to ``num_trials`` new trials of ``study`` on Ray Tune, until it has ``wanted`` finished.

    ``baselines`` (reference recipe names the study lacks) are enqueued after
    the first wave of sampled trials (:func:`baselines_after`), so ASHA can stop
    them; to start with them, enqueue them before and pass none.

    ``plugins`` (``--plugin`` specs) are imported by every trial's worker first;
    after ``time_budget_s`` Ray stops the run and its open trials are PRUNED;
    ``tensorboard`` gets one folder of per-epoch scalars per trial, named by
    its Optuna number. Trials save their full state only at the scheduler's
    decision points and at their end (:func:`checkpoint_epochs`), with the
    optimizer's state unless ``checkpoint_optimizer`` is False; ``compile``
    turns on ``torch.compile`` in trials on a GPU.

    Raises:
        KeyboardInterrupt: Ctrl-C (Ray's own handler, which would stop the run
            quietly and return as if it had finished, is turned off); the
            trials this driver had open are FAIL "interrupted" by then.
    """
    # The classic reporter prints one compact table; the new engine prints a
    # box per trial result, which buries the progress of a 16-trial study.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network calls home
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Ctrl-C interrupts the driver
    if not ray.is_initialized():
        quiet = {"log_to_driver": False, "logging_level": "ERROR"}
        if address:  # a cluster's own settings (dashboard, CPUs) are not the driver's to pick
            ray.init(address=address, **quiet)
        else:
            ray.init(include_dashboard=False, **quiet)
    _check_fits(cpus_per_trial, gpus_per_trial)
    if address:
        check_shared_storage(results_dir.resolve())
    book = _TrialBook()
    objectives = objectives or [M.VAL_ACC]
    slots = parallel_slots(ray.cluster_resources(), cpus_per_trial, gpus_per_trial)
    searcher = StudySearcher(space=space, study=study, storage=storage, wanted=wanted,
                             objectives=objectives, book=book, tensorboard=tensorboard, baselines=baselines,
                             baselines_after=baselines_after(slots, wanted, len(baselines)))
    # The scheduler compares trials on the first objective, in its direction.
    metric, mode = objectives[0], _MODES[record.DIRECTIONS[objectives[0]]]
    trial_scheduler = SCHEDULERS[scheduler](max_epochs, grace_period, reduction_factor, metric, mode,
                                            keep=searcher.runs_in_full)
    threads = max(1, math.floor(cpus_per_trial))
    checkpoints = CheckpointPolicy(
        epochs=checkpoint_epochs(scheduler, max_epochs, grace_period, reduction_factor),
        optimizer=checkpoint_optimizer)
    run = tune.with_resources(
        tune.with_parameters(trainable, splits=SharedSplits.put(splits), threads=threads,
                             plugins=plugin_payload(plugins), checkpoints=checkpoints, compile=compile),
        {"cpu": cpus_per_trial, "gpu": gpus_per_trial},
    )
    reporter = tune.CLIReporter(
        metric_columns={M.EPOCH: "epoch", M.VAL_ACC: "val_acc", M.VAL_LOSS: "val_loss",
                        M.TRAIN_LOSS: "train_loss", M.IMAGES_PER_SEC: "img/s"},
        parameter_columns=["depth", "width", "optimizer", "lr", "aug_strength"],
        # Not sort_by_metric: Ray 2.60 sorts finished trials by their last result and raises
        # TypeError when one has none (a trial the time budget stopped before its first epoch).
        max_report_frequency=30, metric=metric, mode=mode,
    )
    tuner = tune.Tuner(
        run,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=trial_scheduler,
                                    num_samples=num_trials, time_budget_s=time_budget_s,
                                    # Ask Optuna for a trial only when a slot is free:
                                    # a queued trial would be sampled without the results
                                    # that arrive while it waits, and its stored start
                                    # time (and duration) would include the wait.
                                    max_concurrent_trials=slots,
                                    # A new trial reuses a finished trial's process:
                                    # torch is imported and the data fetched once per
                                    # slot (SharedSplits, _WorkerSplits).
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
        if time_budget_s is not None and searcher.open_trials():  # Ray stopped them at the budget
            print(f"time budget of {time_budget_s / 60:g} min reached: trial(s) "
                  f"{', '.join(map(str, searcher.open_trials()))} cut short, recorded as PRUNED; "
                  "the same command continues the study")
            searcher.close(f"stopped by the time budget ({time_budget_s / 60:g} min)", TrialState.PRUNED)
    except KeyboardInterrupt:
        searcher.close(INTERRUPTED)
        ray.shutdown()  # the trials' processes stop with the driver's Ray session
        raise
    finally:
        searcher.close("the driver stopped before the trial finished")


INTERRUPTED = "interrupted: the study was stopped (Ctrl-C) before the trial finished"

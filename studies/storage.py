"""The Optuna side of a study: open the storage, create or continue the study.

Optuna only; Ray lives in ``studies/tune_adapter.py``.
"""

from __future__ import annotations

import datetime
import os
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from studies import record
from trainers.errors import UserError

DEFAULT_STALE_AFTER = 60  # seconds without a heartbeat before another driver fails a trial


def open_storage(url: str, stale_after: int | None = DEFAULT_STALE_AFTER) -> optuna.storages.RDBStorage:
    """Opens (creating if needed) an RDB storage, checking it is writable first.

    With ``stale_after``, the storage records heartbeats: a driver beats for
    its open trials every ``stale_after / 6`` seconds, and a RUNNING trial
    without a beat for ``stale_after`` seconds is failed as stale by the next
    driver that looks (its own driver died).

    Raises:
        UserError: a SQLite path whose folder cannot be created or written, or
            any storage that refuses the connection (the URL's password is not shown).
    """
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create the storage folder {str(path.parent)!r}: "
                            f"{err.strerror}; pass --storage a writable location") from None
        target = path if path.exists() else path.parent
        if not os.access(target, os.W_OK):
            raise UserError(f"storage {str(target)!r} is not writable; "
                            "pass --storage a writable location (e.g. sqlite:///results/optuna.db)")
    beats = {}
    if stale_after:
        beats = {"heartbeat_interval": max(1, int(stale_after) // 6), "grace_period": int(stale_after)}
    try:
        return _create_storage(url, beats)
    except Exception as err:  # sqlalchemy errors, unknown dialects, bad URLs
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot open storage {record.redact_url(url)!r}: {record.scrub(first, url)}") from None


def _create_storage(url: str, beats: dict[str, int]) -> optuna.storages.RDBStorage:
    """RDBStorage, retried while another process creates the same new schema.

    Two drivers (or a driver and optuna-dashboard) opening one new storage at
    once both create its tables and version row; the slower one gets "table
    already exists" or a UNIQUE violation of alembic_version. A retry finds
    the schema made.
    """
    import sqlalchemy.exc

    for attempt in range(8):
        try:
            return optuna.storages.RDBStorage(url, **beats)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError) as err:
            text = str(err)
            if attempt == 7 or not any(s in text for s in ("already exists", "alembic_version", "duplicate key")):
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def parse_objectives(text: str) -> list[str]:
    """``val_acc,train_seconds`` -> the metric names, checked.

    Raises:
        UserError: an unknown or repeated name (the valid ones are listed).
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in record.DIRECTIONS]
    if not names or unknown or len(set(names)) != len(names):
        raise UserError(f"--objectives {text!r}: give distinct names from {', '.join(record.DIRECTIONS)}")
    return names


def open_study(storage: optuna.storages.BaseStorage, name: str, settings: record.StudySettings,
               sampler: optuna.samplers.BaseSampler | None = None) -> tuple[optuna.Study, record.StudySettings]:
    """Creates the study, or continues one made with the same settings.

    Returns:
        The study and its stored settings (for a continued study, the limits
        it was created with, which the space must keep sampling from).

    Raises:
        UserError: the study exists but was run with other settings (space,
            preset, budget, data, objectives, strategy), which would make its
            trials incomparable; or it is not a study of this tool.
    """
    directions = list(settings.directions)
    if name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        stored = record.settings_of(study)
        # No settings and no trials: created by a driver that stopped at once; it is taken over.
        if stored is None and (study.user_attrs.get(record.SETTINGS) is not None or study.trials):
            raise UserError(f"study {name!r} was not made by studies/run.py (or by a newer version); "
                            "pass --study NEW_NAME")
        if stored is not None:
            changed = stored.differences(settings)
            stored_directions = [d.name.lower() for d in study.directions]
            if stored_directions != directions and "objectives" not in changed:
                changed.append("objectives")
            if changed:
                raise UserError(f"study {name!r} was run with other settings ({', '.join(changed)} differ); "
                                "pass --study NEW_NAME or repeat the original options")
            return study, stored
    else:
        try:
            study = optuna.create_study(storage=storage, study_name=name, directions=directions,
                                        sampler=sampler)
        except optuna.exceptions.DuplicatedStudyError:  # another driver made it a moment ago
            return open_study(storage, name, settings, sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(settings.objectives))
    study.set_user_attr(record.SETTINGS, settings.to_dict())
    return study, settings


class Heartbeat:
    """Beats for a driver's open trials in the storage's heartbeat table.

    Optuna records heartbeats itself only inside ``Study.optimize``; with ask
    and tell the driver must, through ``RDBStorage.record_heartbeat`` and
    ``get_heartbeat_interval``. Optuna documents those for its own loop, so
    the pin in pyproject.toml and tests/studies/test_public_api.py guard them:
    that test fails if they move or stop making a silent trial stale.
    """

    def __init__(self, storage: optuna.storages.RDBStorage, study_name: str) -> None:
        self._rdb = storage
        self._study_id = storage.get_study_id_from_name(study_name)
        self.interval = storage.get_heartbeat_interval()  # None: heartbeats are off

    def beat(self, numbers: list[int]) -> None:
        """Records a beat for each trial number (its storage id looked up by number)."""
        for number in numbers:
            self._rdb.record_heartbeat(
                self._rdb.get_trial_id_from_study_id_trial_number(self._study_id, number))


def close_stale(study: optuna.Study, own: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """FAILs trials whose driver died; returns their numbers.

    A trial is stale when Optuna's heartbeat says so (no beat for the grace
    period; drivers on other machines), when its driver ran on this machine
    and its process is gone (at once), or when no driver claimed it within
    10 s of its start: a driver records itself right after asking, so such a
    trial's driver died in between (or was an older version's). Stale trials keep no
    reason (Optuna closes them without one): :func:`studies.record.is_stale`.
    ``own`` are storage ids of this driver's open trials, never touched here.
    """
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if not running:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number in own:
            continue
        if record.driver_is_dead(t) or (record.DRIVER not in t.user_attrs and t.datetime_start
                                        and (_now() - t.datetime_start).total_seconds() > _UNCLAIMED):
            try:
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            except (ValueError, RuntimeError):
                pass
    still = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    return sorted(running - still)


_UNCLAIMED = 10.0  # seconds a RUNNING trial may go without a driver attribute


def _now() -> datetime.datetime:
    return datetime.datetime.now()

"""The Optuna side of a study: open the storage, create or continue the study.

Optuna only; Ray lives in ``studies/tune_adapter.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from trainers import metrics as M
from trainers.errors import UserError

STALE_REASON = "driver stopped before the trial finished (marked on resume)"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Opens (creating if needed) an RDB storage, checking it is writable first.

    Raises:
        UserError: a SQLite path whose folder cannot be created or written, or
            any storage that refuses the connection.
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
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as err:  # sqlalchemy errors, unknown dialects, bad URLs
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot open storage {url!r}: {first}") from None


# What each metric a study can optimise wants: more or less of it.
OBJECTIVES = {M.VAL_ACC: "maximize", M.VAL_LOSS: "minimize", M.TRAIN_SECONDS: "minimize",
              M.PARAM_COUNT: "minimize"}


def parse_objectives(text: str) -> list[str]:
    """``val_acc,train_seconds`` -> the metric names, checked.

    Raises:
        UserError: an unknown or repeated name (the valid ones are listed).
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in OBJECTIVES]
    if not names or unknown or len(set(names)) != len(names):
        raise UserError(f"--objectives {text!r}: give distinct names from {', '.join(OBJECTIVES)}")
    return names


def open_study(storage: optuna.storages.BaseStorage, name: str, settings: dict[str, Any],
               sampler: optuna.samplers.BaseSampler | None = None,
               objectives: list[str] | None = None) -> optuna.Study:
    """Creates the study, or continues one made with the same settings.

    Raises:
        UserError: the study exists but was run with other settings (space,
            preset, fixed config), which would make its trials incomparable.
    """
    objectives = objectives or [M.VAL_ACC]
    study = optuna.create_study(storage=storage, study_name=name,
                                directions=[OBJECTIVES[o] for o in objectives],
                                sampler=sampler, load_if_exists=True)
    previous = study.user_attrs.get("settings")
    if previous is None:
        study.set_metric_names(objectives)
        study.set_user_attr("settings", settings)
    elif previous != settings:
        changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
        raise UserError(f"study {name!r} was run with other settings ({', '.join(changed)} differ); "
                        "pass --study NEW_NAME or repeat the original options")
    return study


def finished_count(study: optuna.Study) -> int:
    """Trials that count towards the requested number (not the stale ones)."""
    done = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            done += 1
        elif t.state == TrialState.FAIL and not t.user_attrs.get("stale"):
            done += 1
    return done


def fail_stale_trials(study: optuna.Study, reason: str = STALE_REASON) -> list[int]:
    """Marks RUNNING trials left by a killed driver as FAIL; returns their numbers.

    Only one driver may run a study at a time; its own running trials are
    closed by it, so any RUNNING trial found at start-up is an orphan.
    """
    stale = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "stale", True)
        study._storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
        study.tell(t.number, state=TrialState.FAIL)
        stale.append(t.number)
    return stale

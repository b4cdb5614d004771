"""The study record: what a study stores in Optuna, written and read in one place.

Every writer (run.py, benchmark.py, final.py, the searcher) and every reader
(dashboards/) goes through this module, so an attribute's name is spelled once.
It imports Optuna (and SQLAlchemy, which Optuna brings) and nothing heavier, so
dashboards/ can read what studies/ wrote without importing Ray or torch.

A study holds one user attribute, :data:`SETTINGS`: the :class:`StudySettings`
it was created with, which make it a study (continuing it with other settings is
refused). Each trial holds the attributes named below (:data:`CONFIG`, the whole
trial configuration, re-runs it).

A FAIL trial without a :data:`FAIL_REASON` is *stale*: its driver died (Optuna's
heartbeat check, or a re-run on the same machine, closed it); it does not count
towards the requested number of trials and is re-run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from trainers import metrics as M

__all__ = [
    "BENCHMARK",
    "DIRECTIONS",
    "SETTINGS",
    "StudySettings",
    "best_trial",
    "check_study_name",
    "driver_id",
    "fail_reason",
    "finished_count",
    "is_stale",
    "objective",
    "redact_url",
    "scrub",
    "settings_of",
    "study_folder",
    "trial_accuracy",
    "trial_attrs",
]

# ---------------------------------------------------------------- names

SETTINGS = "settings"  # study attribute: StudySettings.to_dict()
BENCHMARK = "benchmark"  # study attribute: what studies/benchmark.py measured about its runs

# Trial attributes, written by the searcher (studies/tune_adapter.py) and run.py.
EPOCHS_RUN = "epochs_run"
TRAIN_SECONDS = "train_seconds"
IMAGES_PER_SEC = "images_per_sec"  # the last epoch's training throughput (the final run's estimate)
PARAM_COUNT = "param_count"
RAY_TRIAL_ID = "ray_trial_id"
CONFIG = "config"
NODE_IP = "node_ip"
NODE_ID = "node_id"
FAILURES = "failures"
FAIL_REASON = "fail_reason"
STALE = "stale"  # older studies marked stale trials with it; now: FAIL without a reason
RECIPE = "recipe"  # a baseline trial: the reference recipe it runs
START = "start"  # a trial of the space's known-good start (search_spaces.get_starts): the space
CURVE = "val_acc_curve"  # per-epoch accuracy where Optuna keeps no intermediate values
DRIVER = "driver"  # host:pid:token of the driver process that asked for the trial
VALUES = "values"  # the last epoch's metrics by name (val_acc, val_loss, ...)
STOPPED_BY = "stopped_by"  # a PRUNED trial cut by something other than the scheduler (--time-budget)

# What each metric a study can optimise wants: more or less of it.
DIRECTIONS = {M.VAL_ACC: "maximize", M.VAL_LOSS: "minimize", M.TRAIN_SECONDS: "minimize",
              M.PARAM_COUNT: "minimize"}

STALE_REASON = "its driver stopped before the trial finished (failed as stale)"


# ---------------------------------------------------------------- the study's settings


@dataclasses.dataclass(frozen=True)
class StudySettings:
    """What makes a study: continuing it with other values of these is refused.

    ``limits`` are the space's categorical choices (depths, widths, models) as
    they were when the study was created; a continued study samples from them
    even after the code's lists changed. ``data`` is the dataset's content
    fingerprint; ``data_source`` only says where it was loaded from. ``seed``
    and ``code`` (provenance) are recorded, not compared.
    """

    space: str
    preset: str
    fixed: Mapping[str, Any]
    data: str | None
    limits: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    data_source: str | None = None
    split_seed: int = 0
    val_fraction: float = 0.1
    objectives: tuple[str, ...] = (M.VAL_ACC,)
    directions: tuple[str, ...] = ("maximize",)
    sampler: str | None = None
    scheduler: str | None = None
    baselines: bool = True
    start: bool | None = None  # None: a study made before starts, not compared
    seed: int | None = None
    code: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    # Recorded, never compared: they may differ between drivers of one study.
    _NOT_COMPARED = ("limits", "data_source", "seed", "code")

    def __post_init__(self) -> None:
        if len(self.objectives) != len(self.directions):
            raise ValueError("one direction per objective")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as stored in the study's :data:`SETTINGS` attribute."""
        out = dataclasses.asdict(self)
        out["objectives"], out["directions"] = list(self.objectives), list(self.directions)
        out["fixed"], out["limits"], out["code"] = dict(self.fixed), dict(self.limits), dict(self.code)
        return out

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> StudySettings:
        """Reads stored settings, also those of studies made before this record.

        Older studies kept the data's absolute path under ``data`` and left out
        the objectives (accuracy), sampler and scheduler (not known: None, so not
        compared) and ``baselines`` (recorded only when False).

        Raises:
            ValueError: a stored key this version does not know.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(stored) - fields)
        if unknown:
            raise ValueError(f"unknown study settings {', '.join(unknown)}")
        values = dict(stored)
        if "limits" not in stored and isinstance(values.get("data"), str) \
                and not values["data"].startswith("blake2b:"):
            values["data_source"], values["data"] = values["data"], None  # a path, not a fingerprint
        objectives = tuple(values.get("objectives") or (M.VAL_ACC,))
        values["objectives"] = objectives
        values["directions"] = tuple(values.get("directions") or (DIRECTIONS[o] for o in objectives))
        if values.get("baselines") is None:
            values["baselines"] = True
        values.setdefault("fixed", {})
        values.setdefault("space", None)
        values.setdefault("preset", None)
        values.setdefault("data", None)
        return cls(**values)

    def differences(self, other: StudySettings) -> list[str]:
        """Names of the compared settings that differ; where ``self`` (the stored
        settings) does not know a value (None), it is not compared."""
        changed = []
        for f in dataclasses.fields(self):
            if f.name in self._NOT_COMPARED or f.name.startswith("_"):
                continue
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine is None:
                continue
            if _plain(mine) != _plain(theirs):
                changed.append(f.name)
        return changed


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def settings_of(study: optuna.Study) -> StudySettings | None:
    """The study's settings, or None for a study not made by studies/run.py."""
    stored = study.user_attrs.get(SETTINGS)
    if not isinstance(stored, Mapping):
        return None
    try:
        return StudySettings.from_dict(stored)
    except (TypeError, ValueError):
        return None


def objective(study: optuna.Study) -> tuple[str, str]:
    """The first objective's metric name and direction (``maximize``/``minimize``)."""
    names = study.metric_names or [M.VAL_ACC]
    direction = "minimize" if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else "maximize"
    return names[0], direction


# ---------------------------------------------------------------- a trial's record


def trial_attrs(result: Mapping[str, Any], *, ray_trial_id: str, config: Any, failures: int | None,
                objectives: Sequence[str]) -> dict[str, Any]:
    """The attributes a finished trial gets, from its last reported result."""
    attrs = {
        EPOCHS_RUN: result.get(M.EPOCH, 0),
        TRAIN_SECONDS: result.get(M.TRAIN_SECONDS, 0.0),
        IMAGES_PER_SEC: result.get(M.IMAGES_PER_SEC),
        PARAM_COUNT: result.get(M.PARAM_COUNT),
        RAY_TRIAL_ID: ray_trial_id,
        CONFIG: result.get("config") or config,
        NODE_IP: result.get("node_ip"),
        NODE_ID: result.get("node_id"),
        FAILURES: failures,
    }
    metrics = {m: float(result[m]) for m in (M.VAL_ACC, M.VAL_LOSS, *objectives)
               if _finite(result.get(m))}
    if metrics:
        attrs[VALUES] = metrics
    return {k: v for k, v in attrs.items() if v is not None}


HOST_ENV = "TUNEBENCH_DRIVER_HOST"  # names this machine in driver ids, where hostnames are shared


def _this_machine() -> str:
    """This machine, as driver ids name it: the host name, boot and process namespace.

    Containers that share a host name (``--net=host``) differ in their process
    namespace, so one never judges another's process ids.
    """
    if os.environ.get(HOST_ENV):
        return os.environ[HOST_ENV].replace(":", "_")
    parts = [socket.gethostname().replace(":", "_")]
    for path, read in (("/proc/sys/kernel/random/boot_id", lambda p: Path(p).read_text().strip()[:8]),
                       ("/proc/self/ns/pid", lambda p: str(os.stat(p).st_ino))):
        try:
            parts.append(read(path))
        except OSError:
            pass
    return "~".join(parts)


def driver_id(token: str) -> str:
    """``machine:pid:token``: which process asked for a trial (see :func:`driver_is_dead`)."""
    return f"{_this_machine()}:{os.getpid()}:{token}"


def driver_is_dead(trial: FrozenTrial) -> bool:
    """Whether a RUNNING trial's driver ran on this machine and its process is gone.

    Such a trial is stale at once; a driver on another machine is judged by
    Optuna's heartbeat after its grace period instead.
    """
    host, _, rest = str(trial.user_attrs.get(DRIVER, "")).partition(":")
    pid = rest.partition(":")[0]
    if host != _this_machine() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def is_stale(trial: FrozenTrial) -> bool:
    """A FAIL trial whose driver died before it finished: not part of the study's count."""
    return trial.state == TrialState.FAIL and (
        bool(trial.user_attrs.get(STALE)) or FAIL_REASON not in trial.user_attrs)


def fail_reason(trial: FrozenTrial) -> str | None:
    """Why a FAIL trial failed (stale ones included); None for other states."""
    if trial.state != TrialState.FAIL:
        return None
    return str(trial.user_attrs.get(FAIL_REASON) or STALE_REASON)


def finished_count(trials: Sequence[FrozenTrial]) -> int:
    """Trials that count towards the requested number: COMPLETE, PRUNED, FAIL but not stale."""
    return sum(1 for t in trials
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and not is_stale(t)))


def trial_accuracy(trial: FrozenTrial) -> float:
    """A trial's first objective: COMPLETE, its value; PRUNED, its last intermediate value; else NaN.

    The value is the objective's own (a loss for a minimised study): rank it
    in the study's direction, as :func:`best_trial` does.
    """
    if trial.state == TrialState.COMPLETE and trial.values:
        return float(trial.values[0])
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        return float(trial.intermediate_values[max(trial.intermediate_values)])
    return math.nan


def best_trial(trials: Sequence[FrozenTrial], direction: str) -> FrozenTrial | None:
    """The best COMPLETE trial by the first objective in its direction, ties to the earliest."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    if not complete:
        return None
    sign = -1.0 if direction == "maximize" else 1.0
    return min(complete, key=lambda t: (sign * t.values[0], t.number))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------- names that become paths

_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+-]{0,127}")


def check_study_name(name: str) -> str:
    """A study name that can name a folder under the results folder, unchanged.

    Raises:
        ValueError: separators, ``..``, a leading dot or dash, other characters,
            or over 128 characters: such a name could write outside the results.
    """
    if not _STUDY_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"study name {name!r} cannot name a folder: use letters, digits and _ . = + - "
                         "(at most 128, starting with a letter or digit, no '..')")
    return name


def study_folder(results: str | os.PathLike, name: str) -> Path:
    """``RESULTS/NAME``, for a name :func:`check_study_name` accepts."""
    return Path(results) / check_study_name(name)


# ---------------------------------------------------------------- secrets


_SECRET_KEYS = {"password", "passwd", "pwd", "sslpassword"}  # query parameters that carry one


def redact_url(url: str | None) -> str:
    """A storage URL as it may be shown or stored: the password replaced by ``***``.

    A password in the query string (``?password=...``) is hidden too. A URL
    SQLAlchemy cannot parse is not shown at all (it might hold a secret in a
    place the parser did not recognise).
    """
    if not url:
        return ""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        hidden = {k: "***" for k in parsed.query if k.lower() in _SECRET_KEYS}
        if hidden:
            parsed = parsed.update_query_dict(hidden)
        return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")
    except (ArgumentError, ValueError, TypeError):
        return "<storage URL not shown: it could not be parsed>"


def _secrets(url: str) -> list[str]:
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # unparseable: nothing more can be known about its secret
        return []
    found = [str(parsed.password)] if parsed.password else []
    for key, value in parsed.query.items():
        if key.lower() in _SECRET_KEYS:
            found += [value] if isinstance(value, str) else list(value)
    return [secret for secret in found if secret]


def scrub(text: str, url: str | None) -> str:
    """``text`` (an error message, say) with the URL's secrets, raw or quoted, replaced by ``***``."""
    if not url:
        return text
    from urllib.parse import quote, quote_plus

    for secret in _secrets(url):
        for form in sorted({secret, quote(secret, safe=""), quote_plus(secret)}, key=len, reverse=True):
            text = text.replace(form, "***")
    return text

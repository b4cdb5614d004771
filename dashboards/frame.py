"""One study's trials as a pandas frame, and the text that cells are shown as.

Every other dashboard module starts from :func:`trials_frame`; nothing here
draws or writes files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import optuna
import pandas as pd
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial, TrialState

from studies import record

__all__ = [
    "FIXED_COLUMNS",
    "METRIC",
    "baseline_number",
    "best_row",
    "format_leaderboard",
    "frame_of",
    "hyperparameters",
    "millions",
    "missing",
    "objective_text",
    "param_names",
    "percent",
    "seconds",
    "text",
    "trials_frame",
    "value_text",
]

METRIC = "val_acc"  # validation accuracy: a fraction in [0, 1], the default objective
OBJECTIVE = "objective"  # a study's own objective where it is not accuracy (val_loss, say)

_LEADING = ("rank", "number", "state", "model", "family", METRIC, "epochs", "train_seconds", "param_count")
_TRAILING = ("fail_reason",)
FIXED_COLUMNS = (*_LEADING, *_TRAILING, OBJECTIVE)


# ---------------------------------------------------------------- the frame


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """Tabulates every trial of a study, best first in the study's direction.

    Args:
        study: A single-objective study. When its objective is not accuracy
            (``val_loss``, say), the frame gains an ``objective`` column
            (COMPLETE: the value; PRUNED: the last intermediate value), ranks
            by it in the study's direction (a minimised study's best row is
            its lowest), and ``val_acc`` holds each trial's last accuracy for
            context. ``frame.attrs`` names the ``metric`` and ``direction``.

    Returns:
        One row per trial with columns ``rank`` (1-based, only for trials with
        an accuracy), ``number``, ``state``, ``model`` (architecture and depth,
        e.g. ``resnet-18``), ``family`` (``config["model"]``, e.g. ``resnet``),
        ``val_acc`` (COMPLETE: the objective; PRUNED: the last intermediate
        value; otherwise NaN), ``epochs``, ``train_seconds``, ``param_count``,
        one column per sampled parameter (named as sampled; ``param_<name>``
        only where a name clashes with a fixed column) and ``fail_reason``.
        Sorted best first (``val_acc`` descending for a maximised study), NaN
        last, ties by trial number.
    """
    metric, direction = record.objective(study)
    return frame_of(study.get_trials(deepcopy=False), metric=metric, direction=direction)


def frame_of(trials: Sequence[FrozenTrial], metric: str = METRIC, direction: str = "maximize") -> pd.DataFrame:
    """:func:`trials_frame` of trials already fetched from a study."""
    columns = _param_columns(trials)
    rows = [_row(trial, columns, metric) for trial in trials]
    extra = [OBJECTIVE] if metric != METRIC else []
    frame = pd.DataFrame(rows, columns=[*_LEADING[1:], *columns.values(), *_TRAILING, *extra])
    dtypes = {"number": "int64", "epochs": "int64", "param_count": "Int64"}
    dtypes |= {METRIC: "float64", "train_seconds": "float64", **{c: "float64" for c in extra}}
    dtypes |= {columns[name]: "Int64" for name in _int_params(trials)}
    frame = frame.astype(dtypes)
    key = OBJECTIVE if extra else METRIC
    frame = frame.sort_values(
        [key, "number"], ascending=[direction == "minimize", True], na_position="last", ignore_index=True
    )
    ranked = frame[key].notna().tolist()  # sorted: all ranked rows come first
    frame.insert(0, "rank", pd.array([i + 1 if ok else None for i, ok in enumerate(ranked)], "Int64"))
    frame.attrs.update(metric=metric, direction=direction)
    return frame


def _row(trial: FrozenTrial, columns: dict[str, str], metric: str = METRIC) -> dict[str, Any]:
    attrs = trial.user_attrs
    objective = trial_accuracy(trial)  # the study's first objective, whatever it measures
    if metric != METRIC:
        last = attrs.get(record.VALUES)
        accuracy = last.get(METRIC) if isinstance(last, dict) and _is_number(last.get(METRIC)) else math.nan
    else:
        accuracy = objective
    epochs = attrs.get(record.EPOCHS_RUN)
    config = attrs.get(record.CONFIG)
    seconds, params = attrs.get(record.TRAIN_SECONDS), attrs.get(record.PARAM_COUNT)
    return {
        "number": trial.number,
        "state": trial.state.name,
        "model": _model_name(config, attrs.get(record.RECIPE)),
        "family": str(config["model"]) if isinstance(config, dict) and config.get("model") else None,
        METRIC: accuracy,
        OBJECTIVE: objective,
        "epochs": int(epochs) if _is_number(epochs) else len(trial.intermediate_values),
        "train_seconds": float(seconds) if _is_number(seconds) else None,
        "param_count": int(params) if _is_number(params) else None,
        "fail_reason": record.fail_reason(trial),
        **{columns[name]: value for name, value in trial.params.items()},
    }


trial_accuracy = record.trial_accuracy  # COMPLETE: the objective; PRUNED: its last epoch's; else NaN


def _model_name(config: Any, recipe: str | None = None) -> str | None:
    if not isinstance(config, dict) or config.get("model") is None:
        return recipe
    depth = config.get("depth")
    name = str(config["model"]) if depth is None else f"{config['model']}-{depth}"
    return f"{name} ({recipe})" if recipe else name


def _param_columns(trials: Iterable[FrozenTrial]) -> dict[str, str]:
    """Maps each sampled name, in order of first appearance, to its column."""
    columns: dict[str, str] = {}
    for trial in trials:
        for name in trial.params:
            if name not in columns:
                column = name
                while column in FIXED_COLUMNS or column in columns.values():
                    column = f"param_{column}"
                columns[name] = column
    return columns


def _int_params(trials: Iterable[FrozenTrial]) -> set[str]:
    # Conditional int parameters would otherwise become float64 columns (NaN).
    kinds: dict[str, set[bool]] = {}
    for trial in trials:
        for name, dist in trial.distributions.items():
            kinds.setdefault(name, set()).add(isinstance(dist, IntDistribution))
    return {name for name, is_int in kinds.items() if is_int == {True}}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def param_names(frame: pd.DataFrame) -> list[str]:
    """The sampled-parameter columns of a trials frame, in sampling order."""
    return [column for column in frame.columns if column not in FIXED_COLUMNS]


def best_row(frame: pd.DataFrame) -> pd.Series | None:
    """The best COMPLETE trial's row, else the best ranked row, else None."""
    ranked = frame[frame["rank"].notna()]
    complete = ranked[ranked["state"] == TrialState.COMPLETE.name]
    if not complete.empty:
        return complete.iloc[0]
    return None if ranked.empty else ranked.iloc[0]


def baseline_number(trials: Sequence[FrozenTrial], direction: str = "maximize") -> int | None:
    """The best of the trials fixed in advance (``study.enqueue_trial``).

    studies/run.py enqueues the reference recipes (user attribute ``recipe``),
    the space's known-good start (``start``) and the user's ``--enqueue`` configs:
    the best of them is the configuration the search has to beat. Older studies
    enqueued one default configuration instead.
    """
    enqueued = [t for t in trials if record.RECIPE in t.user_attrs or "fixed_params" in t.system_attrs]
    if not enqueued:
        return None
    scored = [t for t in enqueued if not math.isnan(trial_accuracy(t))]
    if not scored:
        return min(t.number for t in enqueued)
    sign = 1.0 if direction == "maximize" else -1.0
    return max(scored, key=lambda t: (sign * trial_accuracy(t), -t.number)).number


def baseline_label(trials: Sequence[FrozenTrial], number: int | None) -> str:
    """How the report names the baseline: its recipe, the space's start, or a config given in advance."""
    attrs = next((t.user_attrs for t in trials if t.number == number), {})
    if attrs.get(record.RECIPE):
        return f"the {attrs[record.RECIPE]} recipe"
    if attrs.get(record.START):
        return f"{attrs[record.START]}'s start, the known-good recipe for this budget"
    return "a configuration given in advance"


# ---------------------------------------------------------------- cell text


def hyperparameters(row: pd.Series, params: Sequence[str]) -> str:
    """``name=value`` pairs of a row's sampled parameters, three significant digits.

    A baseline samples nothing: it shows its recipe (from the model column) instead.
    """
    text = " ".join(f"{name}={value_text(row[name])}" for name in params if not missing(row[name]))
    model = row.get("model")
    if not text and isinstance(model, str) and model.endswith(")") and "(" in model:
        return "recipe " + model[model.rindex("(") + 1 : -1]
    return text


def value_text(value: Any) -> str:
    """A parameter value as shown: floats to three significant digits."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def missing(value: Any) -> bool:
    """Whether a cell is empty (None, NaN or pandas' NA)."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def text(value: Any) -> str:
    """A cell as text, ``-`` when empty."""
    return "-" if missing(value) else str(value)


def percent(value: float, digits: int = 2) -> str:
    """An accuracy fraction as a percentage, ``-`` when empty."""
    return "-" if missing(value) else f"{100 * value:.{digits}f}%"


def objective_text(value: float, metric: str = METRIC) -> str:
    """An objective's value as shown: accuracy in percent, anything else to four significant digits."""
    if metric == METRIC:
        return percent(value)
    return "-" if missing(value) else f"{value:.4g}"


def seconds(value: float) -> str:
    """Seconds rounded to whole seconds, ``-`` when empty."""
    return "-" if missing(value) else f"{value:.0f}"


def millions(value: Any) -> str:
    """A parameter count in millions, ``-`` when empty."""
    return "-" if missing(value) else f"{value / 1e6:.2f}M"


# ---------------------------------------------------------------- the terminal table


def format_leaderboard(frame: pd.DataFrame, top: int = 10) -> str:
    """Renders the best rows of a trials frame as a fixed-width table.

    Args:
        frame: The output of :func:`trials_frame`.
        top: How many rows to show.

    Returns:
        The table, one line per trial (rank, trial, state, val acc in percent,
        epochs, seconds, parameter count in millions, sampled
        hyperparameters), without a trailing newline.
    """
    metric, direction = frame.attrs.get("metric", METRIC), frame.attrs.get("direction", "maximize")
    key = OBJECTIVE if OBJECTIVE in frame.columns else METRIC
    frame = frame.sort_values(key, ascending=direction == "minimize", na_position="last", kind="stable")
    shown = frame.head(max(top, 0))
    if shown.empty:
        return "no trials"
    params = param_names(frame)
    objective = {} if key == METRIC else {
        metric.replace("_", " "): [objective_text(value, metric) for value in shown[OBJECTIVE]]}
    table = {
        "rank": [text(rank) for rank in shown["rank"]],
        "trial": [str(number) for number in shown["number"]],
        "state": list(shown["state"]),
        **objective,
        "val acc": [percent(value) for value in shown[METRIC]],
        "epochs": [str(epochs) for epochs in shown["epochs"]],
        "seconds": [seconds(value) for value in shown["train_seconds"]],
        "params": [millions(value) for value in shown["param_count"]],
        "hyperparameters": [hyperparameters(row, params) for _, row in shown.iterrows()],
    }
    return _fixed_width(table, left={"state", "hyperparameters"})


def _fixed_width(table: dict[str, list[str]], left: set[str]) -> str:
    # Hand-written rather than DataFrame.to_string: pandas right-aligns text.
    widths = {name: max(len(name), *map(len, cells)) for name, cells in table.items()}

    def line(cells: Iterable[tuple[str, str]]) -> str:
        return "  ".join(
            cell.ljust(widths[name]) if name in left else cell.rjust(widths[name]) for name, cell in cells
        ).rstrip()

    rows = zip(*table.values(), strict=True)
    return "\n".join([line((name, name) for name in table), *(line(zip(table, row)) for row in rows)])

"""Leaderboard of one Optuna study: a pandas frame, a terminal table, an HTML report.

Reads the storage only. Run from the repository root::

    python dashboards/leaderboard.py --study NAME [--storage URL] [--out PATH] [--top N]
"""

from __future__ import annotations

import argparse
import html
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

__all__ = ["DEFAULT_STORAGE", "format_leaderboard", "main", "trials_frame", "write_report"]

DEFAULT_STORAGE = "sqlite:///results/optuna.db"
METRIC = "val_acc"  # the study's one objective: a fraction in [0, 1], maximized
CURVES = 10  # learning curves drawn in colour; other pruned trials are faded

_LEADING = ("rank", "number", "state", "model", METRIC, "epochs", "train_seconds", "param_count")
_TRAILING = ("fail_reason",)
FIXED_COLUMNS = (*_LEADING, *_TRAILING)


class _UserError(Exception):
    """A mistake the user can fix (storage URL, study name, output path)."""


# ---------------------------------------------------------------- the frame


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """Tabulates every trial of a study, best first.

    Args:
        study: A study whose single objective is validation accuracy.

    Returns:
        One row per trial with columns ``rank`` (1-based, only for trials with
        an accuracy), ``number``, ``state``, ``model``, ``val_acc`` (COMPLETE:
        the objective; PRUNED: the last intermediate value; otherwise NaN),
        ``epochs``, ``train_seconds``, ``param_count``, one column per sampled
        parameter (named as sampled; ``param_<name>`` only where a name clashes
        with a fixed column) and ``fail_reason``. Sorted by ``val_acc``
        descending, NaN last, ties by trial number.
    """
    return _frame(study.get_trials(deepcopy=False))


def _frame(trials: Sequence[FrozenTrial]) -> pd.DataFrame:
    columns = _param_columns(trials)
    rows = [_row(trial, columns) for trial in trials]
    frame = pd.DataFrame(rows, columns=[*_LEADING[1:], *columns.values(), *_TRAILING])
    dtypes = {"number": "int64", "epochs": "int64", "param_count": "Int64"}
    dtypes |= {METRIC: "float64", "train_seconds": "float64"}
    dtypes |= {columns[name]: "Int64" for name in _int_params(trials)}
    frame = frame.astype(dtypes)
    frame = frame.sort_values(
        [METRIC, "number"], ascending=[False, True], na_position="last", ignore_index=True
    )
    ranked = frame[METRIC].notna().tolist()  # sorted: all ranked rows come first
    frame.insert(0, "rank", pd.array([i + 1 if ok else None for i, ok in enumerate(ranked)], "Int64"))
    return frame


def _row(trial: FrozenTrial, columns: dict[str, str]) -> dict[str, Any]:
    attrs = trial.user_attrs
    epochs = attrs.get("epochs_run")
    return {
        "number": trial.number,
        "state": trial.state.name,
        "model": _model_name(attrs.get("config")),
        METRIC: _accuracy(trial),
        "epochs": int(epochs) if _is_number(epochs) else len(trial.intermediate_values),
        "train_seconds": float(attrs["train_seconds"]) if _is_number(attrs.get("train_seconds")) else None,
        "param_count": int(attrs["param_count"]) if _is_number(attrs.get("param_count")) else None,
        "fail_reason": attrs.get("fail_reason"),
        **{columns[name]: value for name, value in trial.params.items()},
    }


def _accuracy(trial: FrozenTrial) -> float:
    if trial.state == TrialState.COMPLETE and trial.values:
        return float(trial.values[0])
    if trial.state == TrialState.PRUNED and trial.intermediate_values:
        return float(trial.intermediate_values[max(trial.intermediate_values)])
    return math.nan


def _model_name(config: Any) -> str | None:
    if not isinstance(config, dict) or config.get("model") is None:
        return None
    depth = config.get("depth")
    return str(config["model"]) if depth is None else f"{config['model']}-{depth}"


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


def _param_names(frame: pd.DataFrame) -> list[str]:
    return [column for column in frame.columns if column not in FIXED_COLUMNS]


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
    frame = frame.sort_values(METRIC, ascending=False, na_position="last", kind="stable")
    shown = frame.head(max(top, 0))
    if shown.empty:
        return "no trials"
    params = _param_names(frame)
    table = {
        "rank": [_text(rank) for rank in shown["rank"]],
        "trial": [str(number) for number in shown["number"]],
        "state": list(shown["state"]),
        "val acc": [_percent(value) for value in shown[METRIC]],
        "epochs": [str(epochs) for epochs in shown["epochs"]],
        "seconds": [_seconds(value) for value in shown["train_seconds"]],
        "params": [_millions(value) for value in shown["param_count"]],
        "hyperparameters": [_hyperparameters(row, params) for _, row in shown.iterrows()],
    }
    return _fixed_width(table, left={"state", "hyperparameters"})


def _fixed_width(table: dict[str, list[str]], left: set[str]) -> str:
    # Hand-written rather than DataFrame.to_string: pandas right-aligns text.
    widths = {name: max(len(name), *map(len, cells)) for name, cells in table.items()}

    def line(cells: Iterable[tuple[str, str]]) -> str:
        return "  ".join(
            text.ljust(widths[name]) if name in left else text.rjust(widths[name]) for name, text in cells
        ).rstrip()

    rows = zip(*table.values(), strict=True)
    return "\n".join([line((name, name) for name in table), *(line(zip(table, row)) for row in rows)])


def _hyperparameters(row: pd.Series, params: Sequence[str]) -> str:
    return " ".join(f"{name}={_value(row[name])}" for name in params if not _missing(row[name]))


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _missing(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _text(value: Any) -> str:
    return "-" if _missing(value) else str(value)


def _percent(value: float) -> str:
    return "-" if _missing(value) else f"{100 * value:.2f}%"


def _seconds(value: float) -> str:
    return "-" if _missing(value) else f"{value:.0f}"


def _millions(value: Any) -> str:
    return "-" if _missing(value) else f"{value / 1e6:.2f}M"


# ---------------------------------------------------------------- the HTML report


def write_report(study: optuna.Study, path: str | Path) -> Path:
    """Writes one self-contained HTML page about a study.

    The page holds the trial counts by state, the best trial, a leaderboard
    table of every trial and the learning curves of the top trials. It embeds
    plotly.js once, so it opens offline. A study without finished trials gets
    a page that says so.

    Args:
        study: The study to report on.
        path: Where to write the page; missing parent folders are created.

    Returns:
        The path written.
    """
    trials = study.get_trials(deepcopy=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(study.study_name, _frame(trials), trials), encoding="utf-8")
    return path


def _page(name: str, frame: pd.DataFrame, trials: Sequence[FrozenTrial]) -> str:
    ranked = frame[frame["rank"].notna()]
    body = [f"<h1>Leaderboard: {html.escape(name)}</h1>", _counts_html(frame)]
    if ranked.empty:
        body.append('<p class="empty">No finished trials yet: no trial has completed or reported an epoch.</p>')
    else:
        body.append(_best_html(ranked))
    if not frame.empty:
        body += ["<h2>Trials</h2>", _table_html(frame)]
    if not ranked.empty:
        body += ["<h2>Learning curves</h2>", _figures_html([_curves_figure(ranked, trials)])]
    return _PAGE.replace("__TITLE__", html.escape(f"Leaderboard: {name}")).replace("__BODY__", "\n".join(body))


def _counts_html(frame: pd.DataFrame) -> str:
    counts = frame["state"].value_counts()
    parts = [f"{counts[state.name]} {state.name.lower()}" for state in TrialState if state.name in counts]
    total = f"{len(frame)} trial{'' if len(frame) == 1 else 's'}"
    return f'<p class="counts">{html.escape(": ".join([total, ", ".join(parts)]) if parts else total)}</p>'


def _best_html(ranked: pd.DataFrame) -> str:
    complete = ranked[ranked["state"] == TrialState.COMPLETE.name]
    best = (complete if not complete.empty else ranked).iloc[0]
    title = "Best complete trial" if not complete.empty else "Best trial so far (none has completed)"
    facts = [f"val acc {_percent(best[METRIC])}", f"{best['epochs']} epochs", best["state"].lower()]
    if not _missing(best["train_seconds"]):
        facts.append(f"{_seconds(best['train_seconds'])} s")
    if not _missing(best["param_count"]):
        facts.append(f"{_millions(best['param_count'])} parameters")
    model = "" if _missing(best["model"]) else f" ({best['model']})"
    items = [
        f"<li><code>{html.escape(name)}</code> = {html.escape(_value(best[name]))}</li>"
        for name in _param_names(ranked)
        if not _missing(best[name])
    ]
    return (
        f'<div class="best"><h2>{title}: #{best["number"]}{html.escape(model)}</h2>'
        f"<p>{html.escape(', '.join(facts))}</p><ul>{''.join(items)}</ul></div>"
    )


def _table_html(frame: pd.DataFrame) -> str:
    params = _param_names(frame)
    shown = pd.DataFrame(
        {
            "rank": [_text(rank) for rank in frame["rank"]],
            "trial": frame["number"].astype(str),
            "model": [_text(model) for model in frame["model"]],
            "hyperparameters": [_hyperparameters(row, params) for _, row in frame.iterrows()],
            "val acc": [_percent(value) for value in frame[METRIC]],
            "epochs": frame["epochs"].astype(str),
            "train seconds": [_seconds(value) for value in frame["train_seconds"]],
            "parameter count": [_millions(value) for value in frame["param_count"]],
            "state": [
                state if _missing(reason) else f"{state}: {reason}"
                for state, reason in zip(frame["state"], frame["fail_reason"], strict=True)
            ],
        }
    )
    return shown.to_html(index=False, escape=True, border=0, classes="leaderboard")


def _curves_figure(ranked: pd.DataFrame, trials: Sequence[FrozenTrial]) -> go.Figure:
    by_number = {trial.number: trial for trial in trials}
    top = ranked.head(CURVES)
    drawn = set(top["number"])
    faded = [
        trial
        for trial in trials
        if trial.state == TrialState.PRUNED and trial.intermediate_values and trial.number not in drawn
    ]
    fig = go.Figure()
    if faded:
        fig.add_trace(_faded_trace(faded))  # first, so the top curves draw over it
    for _, row in top.iterrows():
        curve = sorted(by_number[row["number"]].intermediate_values.items())
        x, y = zip(*curve) if curve else ([row["epochs"]], [row[METRIC]])
        label = f"#{row['number']}" + ("" if _missing(row["model"]) else f" {row['model']}")
        fig.add_trace(
            go.Scatter(
                x=list(x),
                y=list(y),
                name=f"{label} ({_percent(row[METRIC])})",
                mode="lines+markers",
                marker={"size": 4},
                line={"dash": "dot" if row["state"] == TrialState.PRUNED.name else "solid"},
                hovertemplate=f"trial {label}<br>epoch %{{x}}: %{{y:.2%}}<extra>{row['state'].lower()}</extra>",
            )
        )
    fig.update_layout(
        title=f"Validation accuracy per epoch, top {len(top)} trials",
        xaxis_title="epoch",
        yaxis={"title": "val acc", "tickformat": ".0%"},
        legend_title="trial (val acc)",
        template="plotly_white",
        height=520,
    )
    return fig


def _faded_trace(trials: Sequence[FrozenTrial]) -> go.Scatter:
    # One trace with None gaps: hundreds of pruned curves stay one legend entry.
    x: list[int | None] = []
    y: list[float | None] = []
    numbers: list[int | None] = []
    for trial in trials:
        epochs = sorted(trial.intermediate_values)
        x += [*epochs, None]
        y += [*(trial.intermediate_values[epoch] for epoch in epochs), None]
        numbers += [*(trial.number for _ in epochs), None]
    return go.Scatter(
        x=x,
        y=y,
        customdata=numbers,
        name=f"pruned ({len(trials)})",
        mode="lines",
        line={"color": "rgba(120, 120, 120, 0.3)", "width": 1},
        hovertemplate="trial #%{customdata}<br>epoch %{x}: %{y:.2%}<extra>pruned</extra>",
    )


def _figures_html(figures: Sequence[go.Figure]) -> str:
    # plotly.js goes inline with the first figure only: offline, and embedded once.
    return "\n".join(
        fig.to_html(full_html=False, include_plotlyjs=i == 0, default_height=f"{fig.layout.height or 520}px")
        for i, fig in enumerate(figures)
    )


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table.leaderboard { border-collapse: collapse; font-size: 0.9em; }
table.leaderboard th, table.leaderboard td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; }
table.leaderboard td { text-align: right; font-variant-numeric: tabular-nums; }
table.leaderboard td:nth-child(3), table.leaderboard td:nth-child(4),
table.leaderboard td:nth-child(9) { text-align: left; }
.best { background: #f4f7fb; padding: 0.5em 1em; border-radius: 6px; }
.empty { font-size: 1.2em; color: #a33; }
</style>
</head>
<body>
__BODY__
</body>
</html>
"""


# ---------------------------------------------------------------- the command line


def main(argv: Sequence[str] | None = None) -> int:
    """Prints a study's leaderboard and writes its HTML report.

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` when None.

    Returns:
        The exit status: 0, or 2 after a one-line ``error: ...`` on stderr.
    """
    args = _parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(args.out) if args.out else Path("results") / args.study / "leaderboard.html"
    try:
        study = _open_study(args.study, args.storage)
        print(format_leaderboard(trials_frame(study), args.top))
        try:
            out = write_report(study, out)
        except OSError as error:
            raise _UserError(f"cannot write {out}: {error.strerror or error}") from None
    except _UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage URL (default: %(default)s)")
    parser.add_argument("--out", help="HTML file to write (default: results/<study>/leaderboard.html)")
    parser.add_argument("--top", type=_positive_int, default=10, help="rows to print (default: %(default)s)")
    return parser


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _open_study(name: str, url: str) -> optuna.Study:
    sqlite_file = _sqlite_file(url)
    # Optuna would create a missing sqlite file, and an empty study list with it.
    if sqlite_file is not None and not sqlite_file.is_file():
        raise _UserError(f"storage file not found: {sqlite_file} (from --storage {url})")
    try:
        storage = optuna.storages.RDBStorage(url)
        names = optuna.get_all_study_names(storage)
    except (ImportError, RuntimeError, ValueError, SQLAlchemyError) as error:
        raise _UserError(f"cannot open storage {url}: {_first_line(error)}") from None
    if name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise _UserError(f"study {name!r} not found in {url}; studies there: {known}")
    return optuna.load_study(study_name=name, storage=storage)


def _sqlite_file(url: str) -> Path | None:
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = url.removeprefix(prefix).split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())

"""The HTML report of one study: a plain-words summary first, then the figures that back it."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from dashboards import figures
from dashboards.final_run import final_blocks, final_headline, load_final_metrics
from dashboards.frame import (
    METRIC,
    baseline_label,
    baseline_number,
    best_row,
    frame_of,
    millions,
    missing,
    param_names,
    percent,
    seconds,
    text,
    value_text,
)
from dashboards.importance import Importance, param_importances
from dashboards.page import Block, definitions, section, table, write_page
from studies import record

__all__ = ["write_report"]

COMPLETE = TrialState.COMPLETE.name
_STATE_WORDS = {
    TrialState.RUNNING: "running",
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.WAITING: "waiting",
}
# Who stops trials early, by the scheduler's name in the study's settings.
_STOPPERS = {"asha": "ASHA", "hyperband": "HyperBand", "median": "the median stopping rule"}


def _stopper(settings: Mapping[str, Any]) -> str:
    """The study's early-stopping rule as a reader knows it (older studies recorded none: ASHA)."""
    name = settings.get("scheduler") if isinstance(settings, Mapping) else None
    return _STOPPERS.get(str(name), "the scheduler") if name else "ASHA"


def write_report(
    study: optuna.Study,
    path: str | Path,
    *,
    final_metrics: Mapping[str, Any] | str | Path | None = None,
) -> Path:
    """Writes one self-contained HTML report about a study.

    The page opens with a summary in words (which configuration won, by how
    much, at what cost, which hyperparameters mattered), then accuracy against
    cost with the Pareto front, parameter importances (Optuna's PED-ANOVA),
    the leaderboard table, learning curves, parallel coordinates, the best
    accuracy per architecture family and, given a final run, its test
    accuracy, per-class accuracy and confusion matrix. plotly.js is embedded
    once, so the page opens offline. A study without finished trials gets a
    page that says so.

    Args:
        study: The study to report on.
        path: Where to write the page; missing parent folders are created.
        final_metrics: The final run of this study: the dict studies/final.py
            wrote as metrics.json, or the path of that file.

    Returns:
        The path written.

    Raises:
        OSError: ``final_metrics`` names a file that cannot be read.
        ValueError: ``final_metrics`` is malformed or belongs to another study.
    """
    final = _final(final_metrics, study.study_name)
    trials = study.get_trials(deepcopy=False)
    frame = frame_of(trials, *record.objective(study))
    settings = study.user_attrs.get(record.SETTINGS)
    settings = settings if isinstance(settings, dict) else {}
    blocks = study_blocks(study.study_name, frame, trials, settings, final)
    return write_page(path, f"Leaderboard: {study.study_name}", blocks)


def _final(final_metrics: Mapping[str, Any] | str | Path | None, study: str) -> Mapping[str, Any] | None:
    if final_metrics is None:
        return None
    final = final_metrics if isinstance(final_metrics, Mapping) else load_final_metrics(final_metrics)
    if final.get("study") not in (None, study):
        raise ValueError(f"the final run is of study {final['study']!r}, not {study!r}")
    return final


def study_blocks(
    name: str,
    frame: pd.DataFrame,
    trials: Sequence[FrozenTrial],
    settings: Mapping[str, Any],
    final: Mapping[str, Any] | None = None,
) -> list[Block]:
    """Every block of one study's report, in reading order."""
    blocks: list[Block] = [f"<h1>Leaderboard: {html.escape(name)}</h1>", _subtitle(frame, settings)]
    best = best_row(frame)
    if best is None:
        blocks.append(
            '<p class="empty">No finished trials yet: no trial has completed or reported an epoch.</p>'
        )
        if not frame.empty:
            blocks += [section("Trials", "trials"), _leaderboard_table(frame, trials, None, [])]
        return [*blocks, _footer()]
    importance = param_importances(trials, _budget(settings, frame))
    order = list(importance.values) if importance else []
    order += [p for p in param_names(frame) if p not in order]
    blocks.append(_summary(frame, trials, best, importance, final))
    blocks += [
        section(
            "Accuracy against cost",
            "cost",
            "Each dot is a trial: up is more accurate, left is cheaper. "
            "The red staircase is the Pareto front: "
            "complete trials that no other complete trial beats on both accuracy and cost. Grey dots were "
            f"stopped early by {_stopper(settings)}, so their cost and accuracy are those of a shorter run.",
        ),
    ]
    if frame[["train_seconds", "param_count"]].notna().any().any():
        blocks.append(figures.cost_figure(frame, int(best["number"]), _baseline(frame, trials)))
    else:
        blocks.append('<p class="empty">No trial recorded its train seconds or parameter count.</p>')
    blocks.append(
        section(
            "Which hyperparameters mattered",
            "importance",
            "Optuna's PED-ANOVA importance of each hyperparameter for "
            + (html.escape(importance.target) if importance else "reaching the top trials")
            + ". A long bar means the best trials concentrate in a narrow part of that parameter's range.",
        )
    )
    if importance:
        blocks.append(figures.importance_figure(importance))
        if not importance.final:
            blocks.append(
                f'<p class="caption">Most trials were stopped before the full budget, so trials are compared '
                f"at epoch {importance.epoch}; what helps early in training can differ from what helps "
                "at the "
                "end.</p>"
            )
    else:
        blocks.append('<p class="empty">Too few trials reached a common epoch to estimate importances.</p>')
    blocks += [
        section(
            "Leaderboard",
            "trials",
            f"Every trial, best first. Pruned trials are ranked by their accuracy at the epoch "
            f"{_stopper(settings)} stopped them, so compare them with complete ones only at equal epochs "
            "(see the learning curves). "
            "Parameters are listed most important first.",
        ),
        _leaderboard_table(frame, trials, int(best["number"]), order),
        section(
            "Learning curves",
            "curves",
            f"Validation accuracy after each epoch for the top {figures.CURVES} trials; "
            "the other pruned trials are the grey lines behind them.",
        ),
        figures.curves_figure(frame, trials),
    ]
    parallel = figures.parallel_figure(frame, trials)
    if parallel is not None:
        blocks += [
            section(
                "Parallel coordinates",
                "parallel",
                "One line per trial across its hyperparameters, coloured by validation accuracy "
                "(pruned trials at the epoch they were stopped). Drag along an axis to filter.",
            ),
            parallel,
        ]
    family = figures.family_figure(frame)
    if family is not None:
        blocks += [
            section(
                "Best accuracy per architecture family",
                "families",
                "The bar is each family's best complete trial (hatched: only pruned trials so far); "
                "dots are all its trials.",
            ),
            family,
        ]
    if final is not None:
        blocks += final_blocks(final, int(best["number"]) if best["state"] == COMPLETE else None)
    if settings:
        blocks += [section("Study settings", "settings"), definitions(_flat(settings))]
    return [*blocks, _footer()]


def _subtitle(frame: pd.DataFrame, settings: Mapping[str, Any]) -> str:
    counts = frame["state"].value_counts()
    words = {**_STATE_WORDS, TrialState.PRUNED: f"pruned by {_stopper(settings)}"}
    parts = [f"{counts[state.name]} {words[state]}" for state in TrialState if state.name in counts]
    total = f"{len(frame)} trial{'' if len(frame) == 1 else 's'}"
    line = ", ".join(f"{key} {settings[key]}" for key in ("space", "preset") if settings.get(key))
    counted = total + (": " + ", ".join(parts) if parts else "")
    return f'<p class="subtitle counts">{html.escape("; ".join(p for p in (line, counted) if p))}</p>'


def _budget(settings: Mapping[str, Any], frame: pd.DataFrame) -> int | None:
    fixed = settings.get("fixed")
    if isinstance(fixed, dict) and isinstance(fixed.get("epochs"), int):
        return fixed["epochs"]
    complete = frame.loc[frame["state"] == COMPLETE, "epochs"]
    return int(complete.max()) if not complete.empty else None


# ---------------------------------------------------------------- the summary in words


def _summary(
    frame: pd.DataFrame,
    trials: Sequence[FrozenTrial],
    best: pd.Series,
    importance: Importance | None,
    final: Mapping[str, Any] | None,
) -> str:
    complete = frame[(frame["state"] == COMPLETE) & frame[METRIC].notna()]
    done = best["state"] == COMPLETE
    number = int(best["number"])
    model = "" if missing(best["model"]) else f" ({best['model']})"
    items = []
    headline = (
        f"<b>Winner: trial #{number}{html.escape(model)}</b>, {percent(best[METRIC])} validation accuracy "
        f"after {best['epochs']} epochs"
        if done
        else f"<b>No trial has completed yet.</b> Best so far: trial #{number}{html.escape(model)}, "
        f"{percent(best[METRIC])} validation accuracy after {best['epochs']} epochs (pruned)"
    )
    items.append(f'<li class="headline">{headline}.</li>')
    if done:
        items.append(f"<li>{_margin(complete, trials, number)}</li>")
    items.append(f"<li>{_cost(frame, best, _baseline(frame, trials))}</li>")
    if importance:
        top = list(importance.values.items())[:3]
        shares = ", ".join(f"<b>{html.escape(name)}</b> {share:.0%}" for name, share in top)
        chosen = ", ".join(
            f"{html.escape(name)}={html.escape(value_text(best[name]))}"
            for name, _ in top
            if name in best.index and not missing(best[name])
        )
        items.append(
            f"<li>What mattered most: {shares} of the importance (PED-ANOVA, for "
            f"{html.escape(importance.target)}). The winner used {chosen}.</li>"
        )
    if final is not None:
        items.append(
            f'<li>Final run: <b>{html.escape(final_headline(final))}</b> (<a href="#final">details</a>).</li>'
        )
    box = _config_table(frame, best, _baseline(frame, trials), importance)
    return (
        f'<div class="summary" id="summary"><ul>{"".join(items)}</ul>'
        f"<h3>Winning configuration (trial #{number})</h3>{box}</div>"
    )


def _config_table(
    frame: pd.DataFrame, best: pd.Series, base: int | None, importance: Importance | None
) -> str:
    """The winner's hyperparameters, most important first, beside the baseline's."""
    shares = importance.values if importance else {}
    params = sorted(param_names(frame), key=lambda name: -shares.get(name, -1.0))
    rows = frame.set_index("number")
    base_row = rows.loc[base] if base is not None and base in rows.index and base != best["number"] else None
    header = ["hyperparameter", f"winner #{best['number']}"]
    if base_row is not None:
        header.append(f"baseline #{base}")
    if shares:
        header.append("importance")
    body = []
    for name in params:
        if missing(best[name]):
            continue
        row = [name, value_text(best[name])]
        if base_row is not None:
            row.append("-" if missing(base_row[name]) else value_text(base_row[name]))
        if shares:
            row.append(f"{shares[name]:.0%}" if name in shares else "-")
        body.append(row)
    return table(header, body, table_id="best-config", css="data config") if body else ""


def _baseline(frame: pd.DataFrame, trials: Sequence[FrozenTrial]) -> int | None:
    return baseline_number(trials, frame.attrs.get("direction", "maximize"))


def _margin(complete: pd.DataFrame, trials: Sequence[FrozenTrial], winner: int) -> str:
    best = complete.iloc[0]
    parts = []
    if len(complete) > 1:
        second = complete.iloc[1]
        parts.append(
            f"{_points(best[METRIC] - second[METRIC])} over the runner-up, trial #{second['number']} "
            f"({percent(second[METRIC])})"
        )
    base = _baseline(complete, trials)
    by_number = complete.set_index("number")
    if base is not None and base != winner and base in by_number.index:
        parts.append(
            f"{_points(best[METRIC] - by_number.loc[base, METRIC])} over the baseline, trial #{base} "
            f"({html.escape(baseline_label(trials, base))}, {percent(by_number.loc[base, METRIC])})"
        )
    elif base is not None and base != winner:
        stopped = _stopped_baseline(trials, winner, base)
        if stopped:
            parts.append(stopped)
    if base == winner:
        parts.append(f"the winner is the baseline: no sampled configuration beat "
                     f"{baseline_label(trials, base)}")
    if not parts:
        return "It is the only complete trial so far."
    return "By how much: " + "; ".join(parts) + "."


def _stopped_baseline(trials: Sequence[FrozenTrial], winner: int, base: int) -> str | None:
    """A baseline the scheduler stopped early, against the winner at the epoch it stopped.

    studies/run.py starts the reference recipes after the first sampled trials,
    so ASHA stops a weak one like any other trial: its last value is from fewer
    epochs than the winner's, and only the same epoch compares fairly.
    """
    by_number = {t.number: t for t in trials}
    baseline, best = by_number.get(base), by_number.get(winner)
    if baseline is None or best is None or baseline.state != TrialState.PRUNED:
        return None
    if not baseline.intermediate_values:
        return None
    epoch = max(baseline.intermediate_values)
    if epoch not in best.intermediate_values:
        return None
    theirs, ours = baseline.intermediate_values[epoch], best.intermediate_values[epoch]
    return (
        f"{_points(ours - theirs)} over the baseline at the epoch the scheduler stopped it: trial #{base} "
        f"({html.escape(baseline_label(trials, base))}) had {percent(theirs)} after {epoch} "
        f"epoch{'' if epoch == 1 else 's'}, the winner {percent(ours)}"
    )


def _points(delta: float) -> str:
    return f"<b>{100 * delta:+.2f} points</b>"


def _cost(frame: pd.DataFrame, best: pd.Series, base: int | None) -> str:
    rows = frame.set_index("number")
    base_row = rows.loc[base] if base is not None and base in rows.index and base != best["number"] else None
    cost = []
    for column, show, what in (
        ("train_seconds", _seconds_text, " of training"),
        ("param_count", millions, " parameters"),
    ):
        if missing(best[column]):
            continue
        cost.append(show(best[column]) + what)
        if base_row is not None and base_row["state"] == COMPLETE and not missing(base_row[column]):
            if best[column] == base_row[column]:
                cost[-1] += " (the same as the baseline)"
            elif base_row[column]:
                change = best[column] / base_row[column] - 1
                cost[-1] += f" ({change:+.0%} against the baseline's {show(base_row[column])})"
    sentence = "At what cost: " + (" and ".join(cost) if cost else "unknown (no cost recorded)")
    front = figures.pareto_front(frame, "train_seconds")
    if len(front) > 1:
        steps = ", ".join(
            f"#{row['number']} {percent(row[METRIC])} in {seconds(row['train_seconds'])} s"
            for _, row in front.iterrows()
        )
        sentence += f". Pareto front of accuracy against train seconds: {steps}"
    total = frame["train_seconds"].sum(min_count=1)
    if not missing(total):
        sentence += f". The whole search trained for {total / 60:.1f} min over {len(frame)} trials"
    return html.escape(sentence) + "."


# ---------------------------------------------------------------- the table


def _seconds_text(value: float) -> str:
    return f"{seconds(value)} s"


def _leaderboard_table(
    frame: pd.DataFrame, trials: Sequence[FrozenTrial], winner: int | None, order: Sequence[str]
) -> str:
    params = [name for name in order if name in frame.columns] or param_names(frame)
    base = _baseline(frame, trials)
    header = [
        "rank", "trial", "architecture", "key parameters", "val acc",
        "epochs", "train seconds", "parameter count", "state",
    ]  # fmt: skip
    rows, css = [], []
    for _, row in frame.iterrows():
        number = int(row["number"])
        model = text(row["model"]) + (" (baseline)" if number == base else "")
        state = row["state"] if missing(row["fail_reason"]) else f"{row['state']}: {row['fail_reason']}"
        rows.append(
            [
                text(row["rank"]),
                str(number),
                model,
                " ".join(f"{name}={value_text(row[name])}" for name in params if not missing(row[name])),
                percent(row[METRIC]),
                str(row["epochs"]),
                seconds(row["train_seconds"]),
                millions(row["param_count"]),
                state,
            ]
        )
        css.append("winner" if number == winner else ("faded" if row["state"] != COMPLETE else ""))
    return table(header, rows, table_id="leaderboard", css="data leaderboard", row_css=css)


def _flat(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _footer() -> str:
    return (
        "<footer>Written by dashboards/leaderboard.py from the Optuna storage. Every figure is interactive: "
        "hover for a trial's details, click legend entries to hide them. The page needs no network.</footer>"
    )

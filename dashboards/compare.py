"""Several studies side by side: two search spaces, or the runs of a benchmark.

Run from the repository root::

    python dashboards/compare.py [--storage URL ...] [--study NAME ...] [--results DIR] [--out PATH]

Every study of every ``--storage`` is compared, or only those named by
``--study``. Final runs are picked up from RESULTS/final/STUDY/metrics.json.
"""

from __future__ import annotations

import argparse
import html
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState

from dashboards.figures import pareto_front
from dashboards.final_run import final_path, load_final_metrics
from dashboards.frame import METRIC, best_row, frame_of, millions, missing, percent, seconds, text
from dashboards.importance import param_importances
from dashboards.page import Block, section, style, table, write_page
from dashboards.sources import DEFAULT_STORAGE, UserError, open_storage, study_names
from studies import record
from studies.record import redact_url

__all__ = ["StudyRun", "compare_frame", "main", "write_comparison"]


_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _color(i: int) -> str:
    # One colour per study, the same in every figure.
    return _PALETTE[i % len(_PALETTE)]


@dataclass(frozen=True)
class StudyRun:
    """One study to compare: its label on the page, its trials, and its final run if any."""

    label: str
    study: optuna.Study
    final: Mapping[str, Any] | None = None
    trials: list[FrozenTrial] = field(default_factory=list, compare=False)

    @classmethod
    def of(
        cls, study: optuna.Study, label: str | None = None, final: Mapping[str, Any] | None = None
    ) -> StudyRun:
        return cls(label or study.study_name, study, final, study.get_trials(deepcopy=False))


def compare_frame(runs: Sequence[StudyRun]) -> pd.DataFrame:
    """One row per study: counts by state, the winner, its cost, search cost and final test accuracy.

    Args:
        runs: The studies to compare.

    Returns:
        Columns ``study``, ``space``, ``preset``, ``budget`` (the fixed
        settings, e.g. ``5 epochs, 25% data, batch 128``), ``trials``, ``complete``,
        ``pruned``, ``failed``, ``best_trial``, ``model``, ``val_acc``,
        ``train_seconds`` and ``param_count`` (of the best trial),
        ``search_seconds`` (all trials), ``test_acc_mean``, ``test_acc_std``;
        sorted by ``val_acc`` descending.
    """
    rows = []
    for run in runs:
        frame = frame_of(run.trials)
        best = best_row(frame)
        settings = run.study.user_attrs.get(record.SETTINGS)
        settings = settings if isinstance(settings, dict) else {}
        states = frame["state"].value_counts()
        complete = best is not None and best["state"] == TrialState.COMPLETE.name
        rows.append(
            {
                "study": run.label,
                "space": settings.get("space"),
                "preset": settings.get("preset"),
                "budget": _budget(settings),
                "trials": len(frame),
                "complete": int(states.get("COMPLETE", 0)),
                "pruned": int(states.get("PRUNED", 0)),
                "failed": int(states.get("FAIL", 0)),
                "best_trial": int(best["number"]) if complete else None,
                "model": best["model"] if complete else None,
                METRIC: best[METRIC] if complete else math.nan,
                "train_seconds": best["train_seconds"] if complete else math.nan,
                "param_count": best["param_count"] if complete else None,
                "search_seconds": frame["train_seconds"].sum(min_count=1),
                "test_acc_mean": (run.final or {}).get("test_acc_mean", math.nan),
                "test_acc_std": (run.final or {}).get("test_acc_std", math.nan),
            }
        )
    frame = pd.DataFrame(rows).astype({"best_trial": "Int64", "param_count": "Int64"})
    return frame.sort_values(METRIC, ascending=False, na_position="last", ignore_index=True)


def _budget(settings: Mapping[str, Any]) -> str | None:
    fixed = settings.get("fixed")
    if not isinstance(fixed, dict) or not fixed:
        return None
    words = {
        "epochs": lambda v: f"{v} epochs",
        "data_fraction": lambda v: f"{float(v):.0%} data",
        "batch_size": lambda v: f"batch {v}",
    }
    return ", ".join(words[key](value) if key in words else f"{key} {value}" for key, value in fixed.items())


def write_comparison(runs: Sequence[StudyRun], path: str | Path) -> Path:
    """Writes one self-contained HTML page comparing studies.

    The page holds a table of each study's winner, cost and final test
    accuracy, the best accuracy found against training time spent, every
    trial's accuracy against its cost with each study's Pareto front, and
    each study's parameter importances.

    Args:
        runs: The studies to compare (see :meth:`StudyRun.of`).
        path: Where to write the page; missing parent folders are created.

    Returns:
        The path written.
    """
    summary = compare_frame(runs)
    blocks: list[Block] = [
        f"<h1>Comparison of {len(runs)} stud{'y' if len(runs) == 1 else 'ies'}</h1>",
        f'<p class="subtitle">{html.escape(", ".join(run.label for run in runs))}</p>',
        _verdict(summary),
        section("Winners", "winners", "Each study's best complete trial, best first."),
        _summary_table(summary),
        section(
            "Best accuracy against search time",
            "anytime",
            "The best complete trial's validation accuracy so far, against the training seconds all trials "
            "had used by then (in the order trials finished). Higher and further left is a better search.",
        ),
        anytime_figure(runs),
        section(
            "Accuracy against cost",
            "cost",
            "Every trial with an accuracy; filled dots completed, open ones were pruned. The lines are each "
            "study's Pareto front of complete trials.",
        ),
        cost_comparison_figure(runs),
    ]
    importance = importance_comparison_figure(runs)
    if importance is not None:
        blocks += [
            section(
                "Which hyperparameters mattered, per study",
                "importance",
                "Optuna's PED-ANOVA importances, normalized per study, each at the deepest epoch that "
                "enough of its trials reached.",
            ),
            importance,
        ]
    blocks.append(
        "<footer>Written by dashboards/compare.py from the Optuna storage. "
        "The page needs no network.</footer>"
    )
    return write_page(path, f"Comparison: {', '.join(run.label for run in runs)}", blocks)


def _verdict(summary: pd.DataFrame) -> str:
    done = summary[summary[METRIC].notna()]
    if done.empty:
        return '<p class="empty">No study has a complete trial yet.</p>'
    top = done.iloc[0]
    line = (
        f"<b>Best: {html.escape(top['study'])}</b>, trial #{top['best_trial']} "
        f"({html.escape(text(top['model']))}) "
        f"at {percent(top[METRIC])} validation accuracy"
    )
    if len(done) > 1:
        second = done.iloc[1]
        line += (
            f", {100 * (top[METRIC] - second[METRIC]):+.2f} points over {html.escape(second['study'])} "
            f"({percent(second[METRIC])})"
        )
    return f'<div class="summary" id="summary"><p class="headline">{line}.</p></div>'


def _summary_table(summary: pd.DataFrame) -> str:
    header = [
        "study", "space", "preset", "budget", "trials (complete/pruned/failed)", "best trial",
        "architecture", "val acc", "train seconds", "parameter count", "search minutes", "test acc (final)",
    ]  # fmt: skip
    rows = [
        [
            row["study"],
            text(row["space"]),
            text(row["preset"]),
            text(row["budget"]),
            f"{row['trials']} ({row['complete']}/{row['pruned']}/{row['failed']})",
            text(row["best_trial"]),
            text(row["model"]),
            percent(row[METRIC]),
            seconds(row["train_seconds"]),
            millions(row["param_count"]),
            "-" if missing(row["search_seconds"]) else f"{row['search_seconds'] / 60:.1f}",
            "-"
            if missing(row["test_acc_mean"])
            else f"{percent(row['test_acc_mean'])} ± {percent(row['test_acc_std'])}",
        ]
        for _, row in summary.iterrows()
    ]
    return table(header, rows, table_id="comparison", css="data compare")


def anytime_figure(runs: Sequence[StudyRun]) -> go.Figure:
    """Best complete validation accuracy so far against cumulative training seconds, per study."""
    fig = go.Figure()
    for i, run in enumerate(runs):
        finished = [t for t in run.trials if t.state != TrialState.RUNNING]
        finished.sort(key=lambda t: (t.datetime_complete is None, t.datetime_complete or 0, t.number))
        spent, best, xs, ys, numbers = 0.0, -math.inf, [], [], []
        for trial in finished:
            spent += float(trial.user_attrs.get(record.TRAIN_SECONDS) or 0.0)
            if trial.state == TrialState.COMPLETE and trial.values and trial.values[0] > best:
                best = trial.values[0]
                xs.append(spent)
                ys.append(best)
                numbers.append(trial.number)
        if xs:
            xs.append(spent)
            ys.append(best)
            numbers.append(numbers[-1])
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                customdata=numbers,
                name=run.label,
                mode="lines+markers",
                line={"shape": "hv", "color": _color(i)},
                hovertemplate="%{y:.2%} (trial #%{customdata}) after %{x:.0f} s<extra>"
                + run.label
                + "</extra>",
            )
        )
    style(
        fig,
        height=420,
        xaxis={"title": "training seconds spent by the search (all trials)", "rangemode": "tozero"},
        yaxis={"title": "best validation accuracy so far", "tickformat": ".0%"},
    )
    return fig


def cost_comparison_figure(runs: Sequence[StudyRun]) -> go.Figure:
    """Every trial's accuracy against train seconds, with each study's Pareto front, one colour per study."""
    fig = go.Figure()
    for i, run in enumerate(runs):
        color = _color(i)
        frame = frame_of(run.trials)
        ranked = frame[frame[METRIC].notna() & frame["train_seconds"].notna()]
        for state, symbol in (("COMPLETE", "circle"), ("PRUNED", "circle-open")):
            rows = ranked[ranked["state"] == state]
            fig.add_trace(
                go.Scatter(
                    x=rows["train_seconds"],
                    y=rows[METRIC],
                    customdata=rows["number"],
                    mode="markers",
                    marker={"color": color, "symbol": symbol, "size": 9 if state == "COMPLETE" else 7},
                    name=f"{run.label}: {state.lower()}",
                    legendgroup=run.label,
                    hovertemplate="trial #%{customdata}: %{y:.2%} in %{x:.0f} s<extra>"
                    + run.label
                    + "</extra>",
                )
            )
        front = pareto_front(frame, "train_seconds")
        if not front.empty:
            fig.add_trace(
                go.Scatter(
                    x=front["train_seconds"],
                    y=front[METRIC],
                    mode="lines",
                    line={"color": color, "shape": "vh", "width": 2},
                    name=f"{run.label}: Pareto front",
                    legendgroup=run.label,
                    hoverinfo="skip",
                )
            )
    style(
        fig,
        height=460,
        xaxis={"title": "train seconds"},
        yaxis={"title": "validation accuracy", "tickformat": ".0%"},
    )
    return fig


def importance_comparison_figure(runs: Sequence[StudyRun]) -> go.Figure | None:
    """Grouped bars: each study's normalized PED-ANOVA importance per hyperparameter."""
    found = [(i, run.label, param_importances(run.trials)) for i, run in enumerate(runs)]
    found = [(i, label, result) for i, label, result in found if result is not None]
    if not found:
        return None
    names: list[str] = []
    for _, _, result in found:
        names += [name for name in result.values if name not in names]
    fig = go.Figure()
    for i, label, result in found:
        fig.add_trace(
            go.Bar(
                x=names,
                y=[result.values.get(name, 0.0) for name in names],
                name=label,
                marker={"color": _color(i)},
                hovertemplate="%{x}: %{y:.1%}<extra>"
                + label
                + f" (epoch {result.epoch}, {result.n_trials} trials)</extra>",
            )
        )
    style(
        fig,
        barmode="group",
        height=400,
        yaxis={"title": "share of importance", "tickformat": ".0%"},
    )
    return fig


# ---------------------------------------------------------------- the command line


def main(argv: Sequence[str] | None = None) -> int:
    """Writes the comparison page of the studies named on the command line.

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` when None.

    Returns:
        The exit status: 0, or 2 after a one-line ``error: ...`` on stderr.
    """
    args = _parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(args.out) if args.out else args.results / "compare.html"
    try:
        runs = _runs(args.storage or [DEFAULT_STORAGE], args.study, args.results)
        summary = compare_frame(runs)
        print(summary[["study", "trials", "best_trial", METRIC, "search_seconds"]].to_string(index=False))
        try:
            out = write_comparison(runs, out)
        except OSError as error:
            raise UserError(f"cannot write {out}: {error.strerror or error}") from None
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def _runs(urls: Sequence[str], wanted: Sequence[str] | None, results: Path) -> list[StudyRun]:
    found: list[tuple[str, str, optuna.storages.RDBStorage]] = []
    everything: list[str] = []
    for url in urls:
        storage = open_storage(url)
        names = study_names(storage, url)
        everything += names
        found += [(name, url, storage) for name in names if not wanted or name in wanted]
    missing_names = [name for name in wanted or [] if name not in {name for name, _, _ in found}]
    if missing_names:
        known = ", ".join(sorted(set(everything))) or "none"
        raise UserError(f"study {missing_names[0]!r} not found in {', '.join(map(redact_url, urls))}; "
                        f"studies there: {known}")
    if not found:
        raise UserError(f"no studies in {', '.join(map(redact_url, urls))}")
    clashes = {name for name, _, _ in found if sum(other == name for other, _, _ in found) > 1}
    runs = []
    for name, url, storage in found:
        label = f"{name} ({redact_url(url)})" if name in clashes else name
        try:
            path = final_path(name, results)
        except ValueError:  # a name no tool of ours made: it has no final run under --results
            path = None
        final = None
        if path is not None and path.is_file():
            try:
                final = load_final_metrics(path)
            except (OSError, ValueError) as error:
                raise UserError(f"bad final-run metrics {path}: {error}") from None
        runs.append(StudyRun.of(optuna.load_study(study_name=name, storage=storage), label, final))
    return runs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--storage", action="append", help=f"Optuna storage URL, repeatable (default: {DEFAULT_STORAGE})"
    )
    parser.add_argument("--study", action="append", help="a study to compare, repeatable (default: all)")
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="results folder, for final runs (default: %(default)s)",
    )
    parser.add_argument("--out", help="HTML file to write (default: RESULTS/compare.html)")
    return parser


if __name__ == "__main__":
    sys.exit(main())

"""The strategy benchmark's page and terminal tables, from the frames of ``dashboards.strategy_frames``.

Plotly and pandas only; the page is self-contained (dashboards/page.py embeds
plotly.js once).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import plotly.colors
import plotly.graph_objects as go

from dashboards.page import Block, section, style, table, write_page

__all__ = ["curve_figure", "overhead_rows", "overhead_text", "summary_rows", "summary_text", "write_report"]

GOAL_UTILIZATION = 0.90  # the goals for the study driver's overhead
GOAL_OVERHEAD_SECONDS = 1.0
_COLORS = plotly.colors.qualitative.Plotly
_SUMMARY_HEADER = ["strategy", "seeds", "trials", "best val acc (complete)", "best val acc (incl. pruned)",
                   "trial-epochs", "wall min", "trial-epochs to reach", "wall min to reach", "utilization"]
_OVERHEAD_HEADER = ["study", "trials", "slots", "compute s", "study wall s", "utilization",
                    "idle slot-s/trial", "start-up s/trial", "driver s", "driver start-up + wrap-up s",
                    "goal met", "note"]


# ---------------------------------------------------------------- cells as text


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _acc(mean: float, std: float) -> str:
    if _missing(mean):
        return "-"
    return f"{100 * mean:.1f}%" if _missing(std) else f"{100 * mean:.1f} ± {100 * std:.1f}%"


def _num(mean: float, std: float = math.nan, digits: int = 0) -> str:
    if _missing(mean):
        return "-"
    return f"{mean:.{digits}f}" if _missing(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _reached(row: pd.Series, value: float, digits: int) -> str:
    if row["reached"] == 0:
        return "not reached"
    text = f"{value:.{digits}f}"
    return text if row["reached"] == row["seeds"] else f"{text} ({row['reached']}/{row['seeds']} seeds)"


def summary_rows(strategies: pd.DataFrame) -> list[list[str]]:
    """The summary table's cells (header: ``_SUMMARY_HEADER``), one row per strategy."""
    return [[
        row["strategy"], str(row["seeds"]), _num(row["trials"], digits=0),
        _acc(row["best_complete_mean"], row["best_complete_std"]),
        _acc(row["best_any_mean"], row["best_any_std"]),
        _num(row["trial_epochs_mean"], row["trial_epochs_std"]),
        _num(row["wall_minutes_mean"], row["wall_minutes_std"], 1),
        _reached(row, row["reach_epochs"], 0), _reached(row, row["reach_wall_minutes"], 1),
        "-" if _missing(row["utilization"]) else f"{row['utilization']:.0%}",
    ] for _, row in strategies.iterrows()]


def overhead_rows(studies: pd.DataFrame) -> list[list[str]]:
    """The overhead table's cells (header: ``_OVERHEAD_HEADER``), one row per study."""
    rows = []
    for _, row in studies.iterrows():
        met = (row["utilization"] >= GOAL_UTILIZATION, row["startup_per_trial"] <= GOAL_OVERHEAD_SECONDS)
        notes = []
        if row["resumed"]:
            notes.append("resumed: wall includes the pause")
        if row["slots_source"] != "recorded":
            notes.append(f"slots {row['slots_source']}")
        rows.append([
            row["study"], str(row["trials"]), str(row["slots"]), _num(row["train_seconds"], digits=1),
            _num(row["wall_seconds"], digits=1),
            "-" if _missing(row["utilization"]) else f"{row['utilization']:.0%}",
            _num(row["overhead_per_trial"], digits=2), _num(row["startup_per_trial"], digits=2),
            _num(row["driver_seconds"], digits=1),
            _num(row["startup_seconds"], digits=1),
            "yes" if all(met) else "no (" + ", ".join(
                name for name, ok in zip(("utilization", "overhead"), met, strict=True) if not ok) + ")",
            "; ".join(notes),
        ])
    return rows


def summary_text(strategies: pd.DataFrame) -> str:
    """The summary table as plain text, for the terminal."""
    return _text_table(_SUMMARY_HEADER, summary_rows(strategies))


def overhead_text(studies: pd.DataFrame) -> str:
    """The overhead table as plain text, for the terminal."""
    return _text_table(_OVERHEAD_HEADER, overhead_rows(studies))


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    # The first column left-aligned, the numbers right.
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [header, *rows]]
    return "\n".join(lines)


# ---------------------------------------------------------------- figures


def _rgba(color: str, alpha: float) -> str:
    r, g, b = plotly.colors.hex_to_rgb(color)
    return f"rgba({r},{g},{b},{alpha})"


def curve_figure(means: pd.DataFrame, x_title: str, x_scale: float = 1.0) -> go.Figure:
    """Best-so-far validation accuracy, mean line and ± std band per strategy, as steps.

    Args:
        means: :func:`mean_curves`.
        x_title: The x axis title.
        x_scale: Divides x (60 turns seconds into minutes).
    """
    fig = go.Figure()
    for i, (strategy, g) in enumerate(means.groupby("strategy", sort=False)):
        color, x = _COLORS[i % len(_COLORS)], g["x"] / x_scale
        mean, std = g["best_complete_mean"], g["best_complete_std"].fillna(0.0)
        step = {"shape": "hv", "width": 0}
        fig.add_trace(go.Scatter(x=x, y=mean + std, mode="lines", line=step, legendgroup=strategy,
                                 showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=mean - std, mode="lines", line=step, legendgroup=strategy,
                                 fill="tonexty", fillcolor=_rgba(color, 0.18), showlegend=False,
                                 hoverinfo="skip"))
        fig.add_trace(go.Scatter(
            x=x, y=mean, mode="lines", name=f"{strategy} (complete)", legendgroup=strategy,
            line={"shape": "hv", "color": color, "width": 2.5},
            customdata=g["best_complete_std"],
            hovertemplate="%{y:.1%} ± %{customdata:.1%} at %{x:.1f}<extra>" + strategy + "</extra>"))
        fig.add_trace(go.Scatter(
            x=x, y=g["best_any_mean"], mode="lines", name=f"{strategy} (incl. pruned)",
            legendgroup=strategy, visible="legendonly",
            line={"shape": "hv", "color": color, "width": 1.5, "dash": "dot"},
            hovertemplate="%{y:.1%} at %{x:.1f}<extra>" + strategy + " incl. pruned</extra>"))
    return style(fig, height=440, xaxis={"title": x_title, "rangemode": "tozero"},
                 yaxis={"title": "best validation accuracy so far", "tickformat": ".0%"})


# ---------------------------------------------------------------- the page


def write_report(path: Path, *, title: str, grid: str, budget: str, reference: str, target: float,
                 strategies: pd.DataFrame, studies: pd.DataFrame, by_epochs: pd.DataFrame,
                 by_wall: pd.DataFrame) -> Path:
    """Writes the benchmark's self-contained HTML page and returns its path."""
    esc = html.escape
    reach_caption = (
        "“To reach”: the trial-epochs (and wall minutes) until a study's best COMPLETE accuracy first "
        f"reached the reference {esc(reference)}'s final best, {_acc(target, math.nan)} (the mean over "
        "its seeds of their best COMPLETE accuracy); the mean over the seeds that reached it. "
        "Best val acc (complete) is the fair “best found”: a trial that ran its whole budget. "
        "Incl. pruned also counts a PRUNED trial's last validation accuracy, measured after fewer epochs. "
        "Mean ± std over seeds (sample std).")
    overhead_caption = (
        "Per study. Compute: the sum of every finished trial's own train_seconds (its epochs and "
        "validation). Study wall: from the first trial's start to the last trial's end. "
        "Utilization = compute / (study wall × slots); "
        "overhead per trial = (study wall × slots − compute) / trials, so slots left idle "
        "(e.g. while the last trial runs alone) count as overhead. "
        "Slots = floor(CPUs / CPUs per trial) (and GPUs / GPUs per trial with a GPU). Driver: the run.py "
        "process's wall time, Python and Ray start-up, data loading and the leaderboard page included. "
        f"Goal: utilization ≥ {GOAL_UTILIZATION:.0%} "
        f"and start-up ≤ {GOAL_OVERHEAD_SECONDS:g} s per trial (a trial's duration beyond its "
        "compute, plus a freed slot's wait for it; idle slot-s/trial also counts slots left "
        "idle at the end with no trial to run).")
    blocks: list[Block] = [
        f"<h1>{esc(title)}</h1>",
        f'<p class="subtitle">{esc(grid)}</p>',
        _verdict(strategies, reference, target, budget),
        section("Best accuracy against trial-epochs", "by-epochs",
                "Best validation accuracy so far among COMPLETE trials "
                "(line: mean over seeds; band: ± 1 std) against the epochs all of the study's trials had "
                "trained by then, in the order trials finished. Dotted, hidden until clicked in the legend: "
                "the same counting PRUNED trials' last validation accuracy. A seed keeps its final value "
                "after its study ended; the line starts once every seed has a COMPLETE trial."),
        curve_figure(by_epochs, "trial-epochs (cumulative, all trials)"),
        section("Best accuracy against wall time", "by-wall",
                "The same against wall minutes since the study's first trial started (the driver's start-up "
                "before that is in the overhead table)."),
        curve_figure(by_wall, "wall minutes since the first trial started", x_scale=60.0),
        section("Summary", "summary-table", reach_caption),
        table(_SUMMARY_HEADER, summary_rows(strategies), table_id="summary", css="data compare"),
        section("Overhead", "overhead", overhead_caption),
        table(_OVERHEAD_HEADER, overhead_rows(studies), table_id="overhead-table", css="data compare"),
        ("<footer>Written by studies/benchmark.py from the Optuna storage; the numbers are also in the "
         "CSV files beside this page. The page needs no network.</footer>"),
    ]
    return write_page(path, title, blocks)


def _verdict(strategies: pd.DataFrame, reference: str, target: float, budget: str) -> str:
    esc = html.escape
    items = [f"<li>{esc(budget)}</li>"]
    ranked = strategies[strategies["best_complete_mean"].notna()]
    if ranked.empty:
        items.append("<li>No study has a COMPLETE trial yet.</li>")
    else:
        top = ranked.iloc[0]
        items.append(f"<li><b>Best: {esc(top['strategy'])}</b>, "
                     f"{_acc(top['best_complete_mean'], top['best_complete_std'])} best COMPLETE validation "
                     f"accuracy over {top['seeds']} seed(s).</li>")
        ref = strategies[strategies["strategy"] == reference]
        if not _missing(target) and not ref.empty:
            reach = "; ".join(f"{r['strategy']}: {_reached(r, r['reach_epochs'], 0)}"
                              for _, r in strategies.iterrows())
            items.append(f"<li>Trial-epochs to reach the reference {esc(reference)}'s final best "
                         f"({_acc(target, math.nan)}): {esc(reach)}.</li>")
    return f'<div class="summary" id="verdict"><ul>{"".join(items)}</ul></div>'

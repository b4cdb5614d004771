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

from dashboards.page import Block, section, style, table, text_table, write_page

__all__ = ["curve_figure", "overhead_rows", "overhead_text", "pairwise_rows", "pairwise_text", "rank_figure",
           "seed_pair_rows", "seed_pairs_text", "summary_rows", "summary_text", "write_report"]

GOAL_UTILIZATION = 0.90  # the goals for the study driver's overhead
GOAL_OVERHEAD_SECONDS = 1.0
_COLORS = plotly.colors.qualitative.Plotly
_SUMMARY_HEADER = ["strategy", "seeds", "trials", "best val acc (complete): IQM [95% CI]",
                   "best val acc (incl. pruned): IQM [95% CI]", "trial-epochs: IQM [95% CI]", "wall min: IQM",
                   "trial-epochs to reach", "wall min to reach", "utilization"]
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


def _interval(value: float, lo: float, hi: float, digits: int = 1, percent: bool = True) -> str:
    """``69.5% [68.7, 70.7]``: a value and its interval (just the value when there is none)."""
    if _missing(value):
        return "-"
    scale, unit = (100.0, "%") if percent else (1.0, "")
    text = f"{scale * value:.{digits}f}{unit}"
    return text if _missing(lo) else f"{text} [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"


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
        _interval(row["best_complete_iqm"], row["best_complete_lo"], row["best_complete_hi"]),
        _interval(row["best_any_iqm"], row["best_any_lo"], row["best_any_hi"]),
        _interval(row["trial_epochs_iqm"], row["trial_epochs_lo"], row["trial_epochs_hi"], 0, percent=False),
        _num(row["wall_minutes_iqm"], digits=1),
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


def seed_pair_rows(seed_pairs: pd.DataFrame, reference: str) -> tuple[list[str], list[list[str]]]:
    """Each study against the reference's study of the same seed: header and rows."""
    header = ["strategy", "seed", f"{reference}'s final best", "trial-epochs to reach it",
              f"share of {reference}'s trial-epochs", "at equal trial-epochs", "best there",
              f"{reference}'s best there"]
    rows = []
    for _, row in seed_pairs.iterrows():
        reached = not _missing(row["reach_epochs"])
        rows.append([
            row["strategy"], str(row["seed"]), _acc(row["target"], math.nan),
            f"{row['reach_epochs']:.0f} of {row['reference_epochs']:.0f}" if reached else "not reached",
            f"{row['reach_share']:.0%}" if reached else "-", _num(row["equal_epochs"]),
            _acc(row["best_at_equal"], math.nan), _acc(row["reference_at_equal"], math.nan),
        ])
    return header, rows


def seed_pairs_text(seed_pairs: pd.DataFrame, reference: str) -> str:
    """:func:`seed_pair_rows` as plain text, for the terminal."""
    return text_table(*seed_pair_rows(seed_pairs, reference))


def pairwise_rows(pairs: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The probability-of-improvement matrix: header and rows, P(row's seed beats column's seed) [95% CI]."""
    names = list(dict.fromkeys([*pairs["strategy"], *pairs["other"]]))
    cell = {(r["strategy"], r["other"]): _interval(r["p"], r["lo"], r["hi"], 2, percent=False)
            for _, r in pairs.iterrows()}
    return (["P(row beats column)", *names],
            [[a, *("" if a == b else cell.get((a, b), "-") for b in names)] for a in names])


def pairwise_text(pairs: pd.DataFrame) -> str:
    """:func:`pairwise_rows` as plain text, for the terminal."""
    return text_table(*pairwise_rows(pairs))


def summary_text(strategies: pd.DataFrame) -> str:
    """The summary table as plain text, for the terminal."""
    return text_table(_SUMMARY_HEADER, summary_rows(strategies))


def overhead_text(studies: pd.DataFrame) -> str:
    """The overhead table as plain text, for the terminal."""
    return text_table(_OVERHEAD_HEADER, overhead_rows(studies))


# ---------------------------------------------------------------- figures


def _rgba(color: str, alpha: float) -> str:
    r, g, b = plotly.colors.hex_to_rgb(color)
    return f"rgba({r},{g},{b},{alpha})"


def curve_figure(means: pd.DataFrame, x_title: str, x_scale: float = 1.0) -> go.Figure:
    """Best-so-far validation accuracy: the IQM over seeds as a line, its bootstrap 95% interval as a band.

    Args:
        means: :func:`mean_curves`.
        x_title: The x axis title.
        x_scale: Divides x (60 turns seconds into minutes).
    """
    fig = go.Figure()
    for i, (strategy, g) in enumerate(means.groupby("strategy", sort=False)):
        color, x = _COLORS[i % len(_COLORS)], g["x"] / x_scale
        line_y = g["best_complete_iqm"]
        lo, hi = g["best_complete_lo"].fillna(line_y), g["best_complete_hi"].fillna(line_y)
        step = {"shape": "hv", "width": 0}
        fig.add_trace(go.Scatter(x=x, y=hi, mode="lines", line=step, legendgroup=strategy,
                                 showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=lo, mode="lines", line=step, legendgroup=strategy,
                                 fill="tonexty", fillcolor=_rgba(color, 0.18), showlegend=False,
                                 hoverinfo="skip"))
        fig.add_trace(go.Scatter(
            x=x, y=line_y, mode="lines", name=f"{strategy} (complete)", legendgroup=strategy,
            line={"shape": "hv", "color": color, "width": 2.5},
            customdata=list(zip(lo, hi, strict=True)),
            hovertemplate="IQM %{y:.1%} [%{customdata[0]:.1%}, %{customdata[1]:.1%}] at %{x:.1f}<extra>"
                          + strategy + "</extra>"))
        fig.add_trace(go.Scatter(
            x=x, y=g["best_any_iqm"], mode="lines", name=f"{strategy} (incl. pruned)",
            legendgroup=strategy, visible="legendonly",
            line={"shape": "hv", "color": color, "width": 1.5, "dash": "dot"},
            hovertemplate="%{y:.1%} at %{x:.1f}<extra>" + strategy + " incl. pruned</extra>"))
    return style(fig, height=440, xaxis={"title": x_title, "rangemode": "tozero"},
                 yaxis={"title": "best validation accuracy so far", "tickformat": ".0%"})


def rank_figure(ranks: pd.DataFrame, x_title: str, x_scale: float = 1.0) -> go.Figure:
    """Average rank over seeds (1 = best) of each strategy against the budget, as steps."""
    fig = go.Figure()
    for i, (strategy, g) in enumerate(ranks.groupby("strategy", sort=False)):
        fig.add_trace(go.Scatter(
            x=g["x"] / x_scale, y=g["rank"], mode="lines", name=strategy,
            line={"shape": "hv", "color": _COLORS[i % len(_COLORS)], "width": 2.5},
            hovertemplate="rank %{y:.2f} at %{x:.1f}<extra>" + strategy + "</extra>"))
    count = ranks["strategy"].nunique() if not ranks.empty else 1
    # Rank 1 at the top: a reversed fixed range, with a tick at every half rank.
    return style(fig, height=360, xaxis={"title": x_title, "rangemode": "tozero"},
                 yaxis={"title": "average rank (1 = best)", "range": [count + 0.15, 0.85],
                        "tickmode": "array", "tickvals": [1 + i / 2 for i in range(2 * count - 1)]})


# ---------------------------------------------------------------- the page


def write_report(path: Path, *, title: str, grid: str, budget: str, reference: str, target: float,
                 strategies: pd.DataFrame, studies: pd.DataFrame, by_epochs: pd.DataFrame,
                 by_wall: pd.DataFrame, pairs: pd.DataFrame | None = None,
                 ranks: pd.DataFrame | None = None, seed_pairs: pd.DataFrame | None = None) -> Path:
    """Writes the benchmark's self-contained HTML page and returns its path."""
    esc = html.escape
    reach_caption = (
        "“To reach”: the trial-epochs (and wall minutes) until a study's best COMPLETE accuracy first "
        f"reached the reference {esc(reference)}'s final best, {_acc(target, math.nan)} (the mean over "
        "its seeds of their best COMPLETE accuracy); the mean over the seeds that reached it. "
        "Best val acc (complete) is the fair “best found”: a trial that ran its whole budget. "
        "Incl. pruned also counts a PRUNED trial's last validation accuracy, measured after fewer epochs. "
        f"{_STATS_NOTE}")
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
                "(line: interquartile mean over seeds; band: its bootstrap 95% interval) against the epochs all of the study's trials had "
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
        *_seed_pair_blocks(seed_pairs, reference),
        *_pairwise_blocks(pairs, ranks),
        section("Overhead", "overhead", overhead_caption),
        table(_OVERHEAD_HEADER, overhead_rows(studies), table_id="overhead-table", css="data compare"),
        ("<footer>Written by studies/benchmark.py from the Optuna storage; the numbers are also in the "
         "CSV files beside this page. The page needs no network.</footer>"),
    ]
    return write_page(path, title, blocks)


_STATS_NOTE = (
    "IQM: the interquartile mean over seeds, the mean of the middle half of their values (3 seeds: "
    "(lowest + 4 × middle + highest) / 6), robust to one lucky or unlucky seed. [95% CI]: a percentile "
    "bootstrap interval (4,000 resamples of the seeds, scipy.stats.bootstrap). With 3 seeds an interval is "
    "wide and coarse: read overlapping intervals as “not shown to differ”.")


def _seed_pair_blocks(seed_pairs: pd.DataFrame | None, reference: str) -> list[Block]:
    if seed_pairs is None or seed_pairs.empty:
        return []
    header, rows = seed_pair_rows(seed_pairs, reference)
    return [section("Seed by seed", "seed-pairs",
                    f"Each study against the {html.escape(reference)} study of the same seed: the trial-epochs "
                    "until its best COMPLETE accuracy first reached that study's final best, as a share of "
                    "that study's trial-epochs, and both studies' best COMPLETE accuracy after the same "
                    "number of trial-epochs (the smaller of the two studies' totals). The summary's "
                    "“to reach” uses the mean over seeds instead, which one lucky seed can move."),
            table(header, rows, table_id="seed-pairs-table", css="data compare")]


def _pairwise_blocks(pairs: pd.DataFrame | None, ranks: pd.DataFrame | None) -> list[Block]:
    blocks: list[Block] = []
    if pairs is not None and not pairs.empty:
        header, rows = pairwise_rows(pairs)
        blocks += [
            section("Probability of improvement", "improvement",
                    "P(row beats column): the probability that the best COMPLETE validation accuracy of a "
                    "seed of the row's strategy is higher than that of a seed of the column's (ties count "
                    "half; Mann-Whitney U / (n m)), with a bootstrap 95% interval resampling each "
                    "strategy's seeds. 0.5 is no difference; an interval that leaves out 0.5 is one "
                    "that the seeds show."),
            table(header, rows, table_id="improvement-table", css="data compare")]
    if ranks is not None and not ranks.empty:
        blocks += [
            section("Average rank against trial-epochs", "ranks",
                    "At each point of the budget, the strategies' best-so-far COMPLETE accuracies ranked "
                    "within each seed (1 = best; none yet ranks last, ties share the mean rank), the "
                    "ranks averaged over the seeds every strategy ran."),
            rank_figure(ranks, "trial-epochs (cumulative, all trials)")]
    return blocks


def _verdict(strategies: pd.DataFrame, reference: str, target: float, budget: str) -> str:
    esc = html.escape
    items = [f"<li>{esc(budget)}</li>"]
    ranked = strategies[strategies["best_complete_iqm"].notna()]
    if ranked.empty:
        items.append("<li>No study has a COMPLETE trial yet.</li>")
    else:
        top = ranked.iloc[0]
        items.append(f"<li><b>Best: {esc(top['strategy'])}</b>, "
                     f"{_interval(top['best_complete_iqm'], top['best_complete_lo'], top['best_complete_hi'])} "
                     f"best COMPLETE validation accuracy (IQM [95% CI]) over {top['seeds']} seed(s).</li>")
        ref = strategies[strategies["strategy"] == reference]
        if not _missing(target) and not ref.empty:
            reach = "; ".join(f"{r['strategy']}: {_reached(r, r['reach_epochs'], 0)}"
                              for _, r in strategies.iterrows())
            items.append(f"<li>Trial-epochs to reach the reference {esc(reference)}'s final best "
                         f"({_acc(target, math.nan)}): {esc(reach)}.</li>")
    return f'<div class="summary" id="verdict"><ul>{"".join(items)}</ul></div>'

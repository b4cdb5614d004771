"""Plotly figures of one study, drawn from its trials frame (and trials, for curves).

Every function returns a ``go.Figure`` and writes nothing; dashboards.report
puts them on a page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from dashboards.frame import METRIC, hyperparameters, missing, param_names, percent
from dashboards.importance import Importance
from dashboards.page import style

__all__ = [
    "CURVES",
    "cost_figure",
    "curves_figure",
    "family_figure",
    "importance_figure",
    "parallel_figure",
    "pareto_front",
]

CURVES = 10  # learning curves drawn in colour; other pruned trials are faded
COMPLETE = TrialState.COMPLETE.name
PRUNED = TrialState.PRUNED.name
_FADED = "rgba(120, 120, 120, 0.35)"
_PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22")
_FRONT = "#d62728"


def pareto_front(frame: pd.DataFrame, cost: str) -> pd.DataFrame:
    """The COMPLETE trials that no other COMPLETE trial beats on both accuracy and cost.

    Only complete trials ran the full budget, so only they are comparable;
    a pruned trial is cheap because it was stopped.

    Args:
        frame: A trials frame.
        cost: The cost column, ``train_seconds`` or ``param_count``.

    Returns:
        The front's rows, cheapest first (accuracy rises along it).
    """
    done = frame[(frame["state"] == COMPLETE) & frame[METRIC].notna() & frame[cost].notna()]
    done = done.sort_values([cost, METRIC], ascending=[True, False], kind="stable")
    keep, best = [], -math.inf
    for index, accuracy in done[METRIC].items():
        if accuracy > best:
            keep.append(index)
            best = accuracy
    return done.loc[keep]


# ---------------------------------------------------------------- accuracy against cost


def cost_figure(frame: pd.DataFrame, best: int | None = None, baseline: int | None = None) -> go.Figure:
    """Validation accuracy against train seconds and against parameter count.

    Complete trials are coloured by architecture family, pruned ones faded,
    the Pareto front of complete trials drawn as a red staircase, the winning
    trial ringed in red and the baseline in black.

    Args:
        frame: A trials frame.
        best: The winning trial's number, ringed when given.
        baseline: The baseline trial's number (the space's default), ringed when given.
    """
    costs = {"train_seconds": "train seconds", "param_count": "parameters"}
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.06,
        subplot_titles=[f"accuracy vs {label}" for label in costs.values()],
    )
    ranked = frame[frame[METRIC].notna()]
    params = param_names(frame)
    hover = [_hover(row, params) for _, row in ranked.iterrows()]
    ranked = ranked.assign(hover=hover)
    families = sorted(ranked["family"].fillna("unknown").unique())
    colors = {family: _PALETTE[i % len(_PALETTE)] for i, family in enumerate(families)}
    for col, cost in enumerate(costs, start=1):
        first = col == 1
        have = ranked[ranked[cost].notna()]
        pruned = have[have["state"] != COMPLETE]
        if not pruned.empty:
            fig.add_trace(
                _points(pruned, cost, "pruned (stopped early)", _FADED, 7, first, "pruned"), row=1, col=col
            )
        complete = have[have["state"] == COMPLETE]
        for family, group in complete.groupby(complete["family"].fillna("unknown"), sort=True):
            fig.add_trace(
                _points(group, cost, str(family), colors[family], 10, first, f"family-{family}"),
                row=1,
                col=col,
            )
        front = pareto_front(frame, cost)
        if not front.empty:
            fig.add_trace(
                go.Scatter(
                    x=front[cost],
                    y=front[METRIC],
                    mode="lines",
                    line={"color": _FRONT, "width": 2, "shape": "vh"},
                    name="Pareto front (complete trials)",
                    legendgroup="front",
                    showlegend=first,
                    hoverinfo="skip",
                ),
                row=1,
                col=col,
            )
        rings = [(best, "best", _FRONT, "top left")]
        if baseline != best:
            rings.insert(0, (baseline, "baseline", "#222", "bottom left"))
        for number, label, color, where in rings:
            ring = have[have["number"] == number]
            if number is not None and not ring.empty:
                fig.add_trace(_ring(ring, cost, f"{label} #{number}", color, where, first), row=1, col=col)
        values = have[cost].astype(float)
        spread = not values.empty and values.min() > 0 and values.max() / values.min() > 20
        axis = {"type": "log", "tickvals": _log_ticks(values)} if spread else {"type": "linear"}
        fig.update_xaxes(title_text=costs[cost], tickformat="~s", row=1, col=col, **axis)
    fig.update_yaxes(title_text="validation accuracy", tickformat=".0%", row=1, col=1)
    style(fig, height=460, legend={"orientation": "h", "y": -0.2}, margin={"t": 50})
    return fig


def _ring(rows: pd.DataFrame, cost: str, label: str, color: str, where: str, legend: bool) -> go.Scatter:
    return go.Scatter(
        x=rows[cost],
        y=rows[METRIC],
        mode="markers+text",
        marker={"size": 20, "color": "rgba(0,0,0,0)", "line": {"color": color, "width": 2.5}},
        text=[label],
        textposition=where,
        textfont={"color": color},
        name=label,
        legendgroup=label,
        showlegend=legend,
        hoverinfo="skip",
    )


def _log_ticks(values: pd.Series) -> list[float]:
    # 1-2-5 ticks: plotly's own log ticks label every digit, which crowds the axis.
    low, high = values.min() / 1.5, values.max() * 1.5
    ticks = [
        m * 10.0**k
        for k in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        for m in (1, 2, 5)
    ]
    return [t for t in ticks if low <= t <= high]


def _points(
    rows: pd.DataFrame, cost: str, name: str, color: str | None, size: int, legend: bool, group: str
) -> go.Scatter:
    return go.Scatter(
        x=rows[cost],
        y=rows[METRIC],
        mode="markers",
        name=name,
        legendgroup=group,
        showlegend=legend,
        marker={"size": size, "color": color, "line": {"width": 0.5, "color": "white"}},
        text=rows["hover"],
        hovertemplate="%{text}<extra></extra>",
    )


def _hover(row: pd.Series, params: Sequence[str]) -> str:
    model = "" if missing(row["model"]) else f" {row['model']}"
    cost = f"{row['train_seconds']:.0f} s" if not missing(row["train_seconds"]) else "? s"
    size = f"{row['param_count'] / 1e6:.2f}M params" if not missing(row["param_count"]) else ""
    return (
        f"<b>trial #{row['number']}</b>{model}, {row['state'].lower()} after {row['epochs']} epochs"
        f"<br>val acc {percent(row[METRIC])}, {cost}, {size}<br>{hyperparameters(row, params)}"
    )


# ---------------------------------------------------------------- importances


def importance_figure(importance: Importance) -> go.Figure:
    """A horizontal bar per hyperparameter, most important on top."""
    names = list(importance.values)[::-1]  # plotly draws the first bar at the bottom
    shares = [importance.values[name] for name in names]
    fig = go.Figure(
        go.Bar(
            x=shares,
            y=names,
            orientation="h",
            text=[f"{share:.0%}" for share in shares],
            textposition="outside",
            marker={"color": "#1f77b4"},
            hovertemplate="%{y}: %{x:.1%} of the total importance<extra></extra>",
        )
    )
    style(
        fig,
        height=max(260, 60 + 32 * len(names)),
        xaxis={
            "title": "share of importance (PED-ANOVA, normalized)",
            "tickformat": ".0%",
            "rangemode": "tozero",
        },
        margin={"l": 140},
    )
    return fig


# ---------------------------------------------------------------- parallel coordinates


def parallel_figure(frame: pd.DataFrame, trials: Sequence[FrozenTrial]) -> go.Figure | None:
    """One line per trial with an accuracy, across every sampled hyperparameter.

    Log-scaled parameters get a log axis and categorical ones a tick per
    choice. Parameters that some trials lack (conditional ones) are left out.
    Returns None when no trial has an accuracy or nothing was sampled.
    """
    ranked = frame[frame[METRIC].notna()]
    distributions: dict[str, object] = {}
    for trial in trials:
        for name, dist in trial.distributions.items():
            distributions.setdefault(name, dist)
    params = [name for name in param_names(frame) if name in distributions and ranked[name].notna().all()]
    if ranked.empty or not params:
        return None
    dimensions = [_dimension(name, ranked[name], distributions[name]) for name in params]
    dimensions.append({"label": "epochs run", "values": ranked["epochs"].astype(float).tolist()})
    accuracy = ranked[METRIC].tolist()
    dimensions.append({"label": "val acc", "values": accuracy, "tickformat": ".0%"})
    fig = go.Figure(
        go.Parcoords(
            line={
                "color": accuracy,
                "colorscale": "Viridis",
                "showscale": True,
                "colorbar": {"title": {"text": "val acc"}, "tickformat": ".0%"},
            },
            dimensions=dimensions,
            labelangle=-20,
        )
    )
    style(fig, height=460, margin={"l": 60, "r": 60, "t": 80})
    return fig


def _dimension(name: str, values: pd.Series, dist: object) -> dict[str, object]:
    if isinstance(dist, CategoricalDistribution):
        choices = list(dist.choices)
        index = {choice: i for i, choice in enumerate(choices)}
        return {
            "label": name,
            "values": [index.get(value, -1) for value in values],
            "tickvals": list(range(len(choices))),
            "ticktext": [str(choice) for choice in choices],
            "range": [-0.2, len(choices) - 0.8],
        }
    numbers = values.astype(float)
    if isinstance(dist, FloatDistribution | IntDistribution) and dist.log:
        low, high = math.log10(dist.low), math.log10(dist.high)
        ticks = [float(t) for t in range(math.ceil(low), math.floor(high) + 1)] or [low, high]
        return {
            "label": f"{name} (log)",
            "values": [math.log10(v) for v in numbers],
            "range": [low, high],
            "tickvals": ticks,
            "ticktext": [f"{10**t:.3g}" for t in ticks],
        }
    dimension: dict[str, object] = {"label": name, "values": numbers.tolist()}
    if isinstance(dist, FloatDistribution | IntDistribution):
        dimension["range"] = [dist.low, dist.high]
    return dimension


# ---------------------------------------------------------------- learning curves


def curves_figure(frame: pd.DataFrame, trials: Sequence[FrozenTrial]) -> go.Figure:
    """Validation accuracy per epoch: the top trials in colour, other pruned ones faded behind."""
    ranked = frame[frame["rank"].notna()]
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
        label = f"#{row['number']}" + ("" if missing(row["model"]) else f" {row['model']}")
        fig.add_trace(
            go.Scatter(
                x=list(x),
                y=list(y),
                name=f"{label} ({percent(row[METRIC])})",
                mode="lines+markers",
                marker={"size": 5},
                line={"dash": "dot" if row["state"] == PRUNED else "solid"},
                hovertemplate=f"trial {label}<br>epoch %{{x}}: %{{y:.2%}}"
                f"<extra>{row['state'].lower()}</extra>",
            )
        )
    style(
        fig,
        xaxis={"title": "epoch", "dtick": 1},
        yaxis={"title": "validation accuracy", "tickformat": ".0%"},
        legend_title="trial (val acc); dotted: pruned",
        height=480,
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
        mode="lines+markers",
        marker={"size": 4, "color": _FADED},
        line={"color": _FADED, "width": 1},
        hovertemplate="trial #%{customdata}<br>epoch %{x}: %{y:.2%}<extra>pruned</extra>",
    )


# ---------------------------------------------------------------- architecture families


def family_figure(frame: pd.DataFrame) -> go.Figure | None:
    """Best validation accuracy per architecture family, every trial shown as a dot.

    The bar is the family's best complete trial (its best pruned one, hatched,
    when none completed). Returns None when no trial names its family.
    """
    ranked = frame[frame[METRIC].notna() & frame["family"].notna()]
    if ranked.empty:
        return None
    families = sorted(
        ranked["family"].unique(), key=lambda f: -ranked.loc[ranked["family"] == f, METRIC].max()
    )
    bests, labels, patterns = [], [], []
    for family in families:
        rows = ranked[ranked["family"] == family]
        complete = rows[rows["state"] == COMPLETE]
        best = (complete if not complete.empty else rows).iloc[0]
        bests.append(best[METRIC])
        labels.append(f"{percent(best[METRIC])}<br>#{best['number']} {best['model']}")
        patterns.append("" if not complete.empty else "/")
    fig = go.Figure(
        go.Bar(
            x=families,
            y=bests,
            text=labels,
            textposition="inside",
            insidetextanchor="start",
            width=0.5,
            marker={"color": "#c6dbef", "pattern": {"shape": patterns}},
            name="best complete trial",
            hovertemplate="%{x}: best %{y:.2%}<extra></extra>",
        )
    )
    for state, color in ((COMPLETE, "#08519c"), (PRUNED, _FADED)):
        rows = ranked[ranked["state"] == state]
        if not rows.empty:
            fig.add_trace(
                go.Scatter(
                    x=rows["family"],
                    y=rows[METRIC],
                    mode="markers",
                    marker={"color": color, "size": 8},
                    name=f"{state.lower()} trials",
                    customdata=rows["number"],
                    hovertemplate="trial #%{customdata}: %{y:.2%}<extra>%{x}</extra>",
                )
            )
    style(
        fig,
        height=380,
        yaxis={"title": "validation accuracy", "tickformat": ".0%", "rangemode": "tozero"},
        xaxis={"title": "architecture family"},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig

"""The final run's metrics.json (written by studies/final.py) as report blocks.

The final run re-trains one trial's configuration on train + validation with
several seeds and evaluates each on the test split; this module only reads
its JSON file.
"""

from __future__ import annotations

import html
import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards.frame import percent
from dashboards.page import Block, definitions, section, style, table
from studies.record import study_folder

__all__ = ["budget_line", "final_blocks", "final_headline", "final_path", "load_final_metrics"]

_SEEDS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#17becf",
)  # one colour per seed, both panels
_REQUIRED = ("study", "trial", "test_acc_mean", "test_acc_std", "seeds", "classes", "runs")


def final_path(study: str, results: str | Path = "results") -> Path:
    """Where studies/final.py writes a study's metrics: ``RESULTS/final/STUDY/metrics.json``.

    Raises:
        ValueError: a study name that cannot name a folder (``../x``, say).
    """
    return study_folder(Path(results) / "final", study) / "metrics.json"


def load_final_metrics(path: str | Path) -> dict[str, Any]:
    """Reads and checks a final run's metrics.json.

    Args:
        path: The file studies/final.py wrote.

    Returns:
        The parsed metrics.

    Raises:
        OSError: The file cannot be read.
        ValueError: It is not JSON, or lacks a key the report needs.
    """
    try:
        metrics = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON: {error}") from None
    _check(metrics, str(path))
    return metrics


def _check(metrics: Any, where: str) -> None:
    if not isinstance(metrics, dict):
        raise ValueError(f"{where}: expected a JSON object")
    absent = [key for key in _REQUIRED if key not in metrics]
    if absent:
        raise ValueError(f"{where}: missing key(s) {', '.join(absent)}")
    if not isinstance(metrics["runs"], list) or not all(isinstance(run, dict) for run in metrics["runs"]):
        raise ValueError(f"{where}: 'runs' must be a list of objects")


def final_headline(metrics: Mapping[str, Any]) -> str:
    """One sentence: test accuracy mean ± std over the seeds, and what was re-trained."""
    seeds = list(metrics["seeds"])
    return (
        f"test accuracy {percent(metrics['test_acc_mean'])} ± {percent(metrics['test_acc_std'])} "
        f"(mean ± std over {len(seeds)} seed{'s' if len(seeds) != 1 else ''}: "
        f"{', '.join(map(str, seeds))}) re-training trial #{metrics['trial']} on train + validation"
    )


def budget_line(metrics: Mapping[str, Any]) -> str:
    """The search's budget and accuracy beside the final run's, or "" for older metrics."""
    search, final = metrics.get("search_budget"), metrics.get("final_budget")
    if not isinstance(search, Mapping) or not isinstance(final, Mapping):
        return ""
    try:
        text = (f"Search: {search['epochs']} epochs on {search['data_fraction']:.0%} of train"
                + (f", validation accuracy {percent(metrics['val_acc'])}" if metrics.get("val_acc") is not None else "")
                + f". Final run: {final['epochs']} epochs on {final['data_fraction']:.0%} of train + validation"
                + (f" ({final['minutes']:g} min per seed asked)" if final.get("minutes") else "")
                + f", test accuracy {percent(metrics['test_acc_mean'])}.")
    except (KeyError, TypeError, ValueError):
        return ""
    return text


def final_blocks(metrics: Mapping[str, Any], best_trial: int | None = None) -> list[Block]:
    """The report's final-run section.

    Args:
        metrics: A final run's metrics (see :func:`load_final_metrics`).
        best_trial: The study's current best trial, to warn when the final
            run re-trained another one.

    Returns:
        Headline, per-seed table, per-class accuracy, confusion matrix,
        training curves and provenance.
    """
    _check(metrics, "final metrics")
    runs = metrics["runs"]
    blocks: list[Block] = [
        section(
            "Final run: the winner on the test split",
            "final",
            "The chosen configuration re-trained from scratch on train + validation at the final run's "
            "budget, once per seed, then evaluated once on the held-out test split, which the search never saw.",
        )
    ]
    lines = [f'<p class="headline"><b>{html.escape(final_headline(metrics))}</b>']
    if "val_acc" in metrics:
        lines.append(f"; its validation accuracy during the search was {percent(metrics['val_acc'])}")
    lines.append(".</p>")
    budgets = budget_line(metrics)
    if budgets:
        lines.append(f"<p>{html.escape(budgets)}</p>")
    if best_trial is not None and best_trial != metrics["trial"]:
        lines.append(
            f'<p class="empty">The study\'s best trial is now #{best_trial}; this final run re-trained '
            f"#{html.escape(str(metrics['trial']))}. Run studies/final.py again to test the new best.</p>"
        )
    blocks.append("".join(lines))
    if isinstance(metrics.get("top"), list) and metrics["top"]:
        top = [t for t in metrics["top"] if isinstance(t, dict)]
        blocks.append("<h3>The search's best configurations at the final budget (one seed each)</h3>")
        blocks.append(table(["trial", "search val acc", "final test acc", "final epochs"], [
            [f"#{t.get('trial')}" + (" (re-trained with every seed)" if t.get("trial") == metrics["trial"] else ""),
             percent(t.get("val_acc")), percent(t.get("test_acc")), str(t.get("epochs", "-"))] for t in top],
            table_id="final-top"))
        rho = metrics.get("top_rank_correlation")
        if isinstance(rho, int | float):
            blocks.append(f"<p>Rank correlation (Spearman) of search and final accuracy: {rho:+.2f}. "
                          "The winner was picked on its first seed's test accuracy; "
                          + (f"its other seeds, not used to pick it, average "
                             f"{percent(metrics['test_acc_mean_unselected'])}.</p>"
                             if isinstance(metrics.get("test_acc_mean_unselected"), int | float) else "</p>"))
    rows = [
        [
            str(run.get("seed", "-")),
            percent(run.get("test_acc")),
            f"{run['test_loss']:.4f}" if isinstance(run.get("test_loss"), int | float) else "-",
            f"{run['train_seconds']:.0f}" if isinstance(run.get("train_seconds"), int | float) else "-",
        ]
        for run in runs
    ]
    blocks.append(table(["seed", "test acc", "test loss", "train seconds"], rows, table_id="final-seeds"))
    classes = list(metrics["classes"])
    if classes and any(isinstance(run.get("per_class_acc"), dict) for run in runs):
        blocks += ["<h3>Accuracy per class</h3>", per_class_figure(classes, runs)]
    confusions = [run["confusion"] for run in runs if _is_matrix(run.get("confusion"), len(classes))]
    if classes and confusions:
        seeds = f"{len(confusions)} seed{'s' if len(confusions) != 1 else ''}"
        blocks += [
            f"<h3>Confusion matrix (summed over {seeds})</h3>",
            confusion_figure(classes, confusions),
        ]
    if any(run.get("history") for run in runs):
        blocks += ["<h3>Training curves</h3>", history_figure(runs)]
    blocks.append("<h3>Provenance</h3>" + definitions(_provenance(metrics)))
    return blocks


def per_class_figure(classes: list[str], runs: list[dict[str, Any]]) -> go.Figure:
    """Mean test accuracy per class over seeds, the spread over seeds as error bars."""
    means, stds = [], []
    for name in classes:
        values = [run["per_class_acc"][name] for run in runs if name in (run.get("per_class_acc") or {})]
        means.append(statistics.fmean(values) if values else None)
        stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    fig = go.Figure(
        go.Bar(
            x=classes,
            y=means,
            error_y={"type": "data", "array": stds, "visible": True},
            marker={"color": "#1f77b4"},
            text=[percent(m, 1) for m in means],
            textposition="inside",
            insidetextanchor="start",
            hovertemplate="%{x}: %{y:.2%}<extra></extra>",
        )
    )
    style(
        fig,
        height=360,
        yaxis={"title": "test accuracy", "tickformat": ".0%", "range": [0, 1]},
        xaxis={"title": "true class"},
    )
    return fig


def confusion_figure(classes: list[str], confusions: list[list[list[int]]]) -> go.Figure:
    """Counts summed over seeds; colour is the share of each true class (row)."""
    n = len(classes)
    counts = [[sum(matrix[i][j] for matrix in confusions) for j in range(n)] for i in range(n)]
    shares = [[cell / max(1, sum(row)) for cell in row] for row in counts]
    fig = go.Figure(
        go.Heatmap(
            z=shares,
            x=classes,
            y=classes,
            customdata=counts,
            colorscale="Blues",
            zmin=0,
            zmax=1,
            text=counts if n <= 20 else None,
            texttemplate="%{text}" if n <= 20 else None,
            colorbar={"title": {"text": "share of row"}, "tickformat": ".0%"},
            hovertemplate="true %{y}, predicted %{x}: %{customdata} (%{z:.1%} of %{y})<extra></extra>",
        )
    )
    style(
        fig,
        height=max(420, 60 + 36 * n),
        xaxis={"title": "predicted class", "side": "bottom"},
        yaxis={"title": "true class", "autorange": "reversed"},
    )
    return fig


def history_figure(runs: list[dict[str, Any]]) -> go.Figure:
    """Training loss and accuracy per epoch, one line per seed."""
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["train loss", "train accuracy"], horizontal_spacing=0.1
    )
    for i, run in enumerate(runs):
        history = [h for h in run.get("history") or [] if isinstance(h, dict) and "epoch" in h]
        epochs = [h["epoch"] for h in history]
        name = f"seed {run.get('seed', '?')}"
        for col, key in ((1, "train_loss"), (2, "train_acc")):
            fig.add_trace(
                go.Scatter(
                    x=epochs,
                    y=[h.get(key) for h in history],
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    line={"color": _SEEDS[i % len(_SEEDS)]},
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_yaxes(tickformat=".0%", row=1, col=2)
    style(fig, height=340)
    return fig


def _is_matrix(value: Any, n: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == n
        and all(isinstance(row, list) and len(row) == n for row in value)
    )


def _provenance(metrics: Mapping[str, Any]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    prov = metrics.get("provenance") or {}
    if "git_commit" in prov:
        facts["git commit"] = (
            f"{prov['git_commit']}{' (uncommitted changes)' if prov.get('git_dirty') else ''}"
        )
    versions = prov.get("versions") or {}
    if versions:
        facts["versions"] = ", ".join(f"{name} {version}" for name, version in versions.items())
    for key in ("python", "platform", "hostname", "cpu", "torch_threads", "gpu", "time"):
        if key in prov:
            facts[key.replace("_", " ")] = "none" if prov[key] is None else prov[key]
    if "wall_seconds" in metrics:
        facts["wall time"] = f"{metrics['wall_seconds']:.0f} s"
    if "data" in metrics:
        facts["data"] = metrics["data"]
    config = metrics.get("config")
    if isinstance(config, dict):
        facts["config"] = ", ".join(f"{key}={value}" for key, value in config.items())
    checkpoints = [run["checkpoint"] for run in metrics["runs"] if run.get("checkpoint")]
    if checkpoints:
        facts["checkpoints"] = ", ".join(checkpoints)
    return facts

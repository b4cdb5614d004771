"""The equal-budget architecture leaderboard: one row per family, its page and CSV.

Reads what studies/families.py left: each family's study (the Optuna storage)
and its final run's metrics.json (written by studies/final.py). Test accuracy
is the interquartile mean over the final run's seeds with a percentile
bootstrap 95% interval (dashboards/stats.py); cost is the final run's train
time per seed, the model's parameters and forward FLOPs, and the search's
compute. The Pareto front: families no other family beats on test accuracy
while costing no more (train time; parameters).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import plotly.graph_objects as go
from optuna.trial import TrialState

from dashboards import stats
from dashboards.page import Block, section, style, table, write_page
from dashboards.page import text_table as page_text_table
from studies import record

__all__ = ["COLUMNS", "family_frame", "family_row", "pareto_flags", "write_families_page"]

COLUMNS = ["family", "study", "trials", "complete", "search_val_acc", "search_train_seconds", "depth", "width",
           "seeds", "test_acc_iqm", "test_acc_lo", "test_acc_hi", "test_acc_mean", "test_accs",
           "final_train_seconds", "final_epochs", "params", "flops", "pareto_time", "pareto_params", "note"]


def family_row(family: str, study: optuna.Study | None, metrics_path: Path) -> dict[str, Any]:
    """One family's numbers: its study's search and its final run (NaN for what is missing).

    Args:
        family: The model family.
        study: Its study, or None when there is none yet.
        metrics_path: ``RESULTS/final/STUDY/metrics.json``.
    """
    row: dict[str, Any] = {c: math.nan for c in COLUMNS}
    row.update({"family": family, "study": study.study_name if study else "", "note": "",
                "pareto_time": False, "pareto_params": False, "test_accs": ""})
    if study is None:
        row["note"] = "not searched yet"
        return row
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    row.update({"trials": len(trials), "complete": len(complete),
                "search_train_seconds": sum(float(t.user_attrs.get(record.TRAIN_SECONDS) or 0.0) for t in trials)})
    best = record.best_trial(study.get_trials(deepcopy=False), "maximize") if complete else None
    if best is not None:
        row["search_val_acc"] = best.values[0]
    if not metrics_path.is_file():
        row["note"] = "no COMPLETE trial to re-train" if best is None else "no final run yet"
        return row
    metrics = json.loads(metrics_path.read_text())
    accs = [float(r["test_acc"]) for r in metrics["runs"]]
    lo, hi = stats.bootstrap_ci(accs)
    cost = metrics.get("model_cost") or {}
    config = metrics.get("config") or {}
    row.update({
        "depth": config.get("depth", math.nan), "width": config.get("width", math.nan), "seeds": len(accs),
        "test_acc_iqm": stats.iqm(accs), "test_acc_lo": lo, "test_acc_hi": hi,
        "test_acc_mean": sum(accs) / len(accs), "test_accs": " ".join(f"{a:.4f}" for a in accs),
        "final_train_seconds": sum(float(r["train_seconds"]) for r in metrics["runs"]) / len(accs),
        "final_epochs": config.get("epochs", math.nan),
        "params": cost.get("params", math.nan), "flops": cost.get("flops", math.nan)})
    return row


def pareto_flags(accuracy: Sequence[float], cost: Sequence[float]) -> list[bool]:
    """True for each point no other point dominates: at least as accurate and at most as costly,
    and strictly better in one. Points with a missing value are never on the front."""
    points = list(zip(accuracy, cost, strict=True))
    ok = [not (math.isnan(a) or math.isnan(c)) for a, c in points]
    flags = []
    for i, (a, c) in enumerate(points):
        flags.append(ok[i] and not any(
            ok[j] and a2 >= a and c2 <= c and (a2 > a or c2 < c)
            for j, (a2, c2) in enumerate(points) if j != i))
    return flags


def family_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a frame with the Pareto flags set, best test accuracy (IQM) first."""
    frame = pd.DataFrame(list(rows), columns=COLUMNS)
    acc = frame["test_acc_iqm"].astype(float).tolist()
    frame["pareto_time"] = pareto_flags(acc, frame["final_train_seconds"].astype(float).tolist())
    frame["pareto_params"] = pareto_flags(acc, frame["params"].astype(float).tolist())
    return frame.sort_values("test_acc_iqm", ascending=False, na_position="last", ignore_index=True)


def _pct(value: float) -> str:
    return "-" if _missing(value) else f"{100 * value:.1f}%"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _count(value: float, unit: str = "") -> str:
    if _missing(value):
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.2f}{suffix}{unit}"
    return f"{value:.0f}{unit}"


_HEADER = ["family", "test acc: IQM [95% CI]", "seeds", "search best val acc", "trials (complete)",
           "depth / width", "final train min per seed", "epochs", "params", "FLOPs / image", "search compute min",
           "Pareto (time / params)", "note"]


def table_rows(frame: pd.DataFrame) -> list[list[str]]:
    """The leaderboard table's cells (header ``_HEADER``)."""
    rows = []
    for _, r in frame.iterrows():
        test = "-" if _missing(r["test_acc_iqm"]) else (
            f"{100 * r['test_acc_iqm']:.1f}%" + ("" if _missing(r["test_acc_lo"]) else
                                                f" [{100 * r['test_acc_lo']:.1f}, {100 * r['test_acc_hi']:.1f}]"))
        front = " / ".join("yes" if r[k] else "no" for k in ("pareto_time", "pareto_params"))
        rows.append([
            r["family"], test, "-" if _missing(r["seeds"]) else f"{r['seeds']:.0f}", _pct(r["search_val_acc"]),
            "-" if _missing(r["trials"]) else f"{r['trials']:.0f} ({r['complete']:.0f})",
            "-" if _missing(r["depth"]) else f"{r['depth']:.0f} / {r['width']:.0f}",
            "-" if _missing(r["final_train_seconds"]) else f"{r['final_train_seconds'] / 60:.1f}",
            "-" if _missing(r["final_epochs"]) else f"{r['final_epochs']:.0f}",
            _count(r["params"]), _count(r["flops"]),
            "-" if _missing(r["search_train_seconds"]) else f"{r['search_train_seconds'] / 60:.1f}",
            front, r["note"] or ""])
    return rows


def text_table(frame: pd.DataFrame) -> str:
    """The leaderboard as plain text, for the terminal."""
    return page_text_table(_HEADER, table_rows(frame))


def _front_figure(frame: pd.DataFrame, cost: str, flag: str, x_title: str, scale: float) -> go.Figure:
    done = frame[frame["test_acc_iqm"].notna() & frame[cost].notna()]
    fig = go.Figure()
    low = (done["test_acc_iqm"] - done["test_acc_lo"]).fillna(0.0)
    high = (done["test_acc_hi"] - done["test_acc_iqm"]).fillna(0.0)
    fig.add_trace(go.Scatter(
        x=done[cost] / scale, y=done["test_acc_iqm"], mode="markers+text", text=done["family"],
        textposition="top center", name="family (IQM, 95% CI)",
        error_y={"type": "data", "symmetric": False, "array": high, "arrayminus": low},
        marker={"size": 10, "color": ["#d62728" if f else "#1f77b4" for f in done[flag]]},
        hovertemplate="%{text}: %{y:.1%} at %{x:.3g}<extra></extra>"))
    front = done[done[flag]].sort_values(cost)
    if len(front):
        fig.add_trace(go.Scatter(x=front[cost] / scale, y=front["test_acc_iqm"], mode="lines", name="Pareto front",
                                 line={"shape": "hv", "color": "#d62728", "dash": "dot"}, hoverinfo="skip"))
    return style(fig, height=420, xaxis={"title": x_title, "type": "log"},
                 yaxis={"title": "test accuracy (IQM over seeds)", "tickformat": ".0%"})


def write_families_page(path: Path, frame: pd.DataFrame, *, title: str, budget: str) -> Path:
    """Writes the self-contained leaderboard page and returns its path."""
    esc = html.escape
    ranked = frame[frame["test_acc_iqm"].notna()]
    if ranked.empty:
        verdict = "<li>No family has a final run yet.</li>"
    else:
        top = ranked.iloc[0]
        front = ", ".join(ranked.loc[ranked["pareto_time"], "family"])
        verdict = (f"<li><b>Most accurate: {esc(top['family'])}</b>, {esc(table_rows(ranked.iloc[:1])[0][1])} "
                   f"test accuracy over {top['seeds']:.0f} seeds.</li>"
                   f"<li>Pareto front of accuracy against train time: {esc(front)}.</li>")
    blocks: list[Block] = [
        f"<h1>{esc(title)}</h1>",
        f'<div class="summary" id="verdict"><ul><li>{esc(budget)}</li>{verdict}</ul></div>',
        section("Leaderboard", "leaderboard",
                "One row per family, best test accuracy first. Test accuracy: the interquartile mean over the "
                "final run's seeds (3 seeds: (lowest + 4 × middle + highest) / 6) with a percentile bootstrap "
                "95% interval; overlapping intervals are not shown to differ. Search best val acc: the "
                "family's best COMPLETE trial at the search's fidelity. Final train min: the mean over seeds "
                "of the final run's training time. FLOPs: forward, one image (a multiply-add is 2). "
                "Search compute: the sum of the family's trials' training time. Pareto: no other family is "
                "at least as accurate for at most the train time (parameters)."),
        table(_HEADER, table_rows(frame), table_id="families", css="data compare",
              row_css=["winner" if i == 0 and not ranked.empty else "" for i in range(len(frame))]),
        section("Accuracy against train time", "front-time",
                "Each family's test accuracy (IQM, bars: 95% interval) against its final run's train minutes "
                "per seed; red: on the Pareto front."),
        _front_figure(frame, "final_train_seconds", "pareto_time", "final train minutes per seed (log)", 60.0),
        section("Accuracy against parameters", "front-params", "The same against trainable parameters."),
        _front_figure(frame, "params", "pareto_params", "parameters (log)", 1.0),
        ("<footer>Written by studies/families.py from the Optuna storage and the final runs' metrics.json; "
         "the numbers are also in the CSV file beside this page. The page needs no network.</footer>"),
    ]
    return write_page(path, title, blocks)

"""The benchmark's numbers, read from the Optuna storage with pandas (no torch, no Ray).

Per study: its trials in the order they finished, with cumulative trial-epochs,
wall seconds since its first trial started and the best validation accuracy so
far; its utilization of the parallel slots and its overhead per trial. Per
strategy (sampler x scheduler): the interquartile mean over seeds of those step
curves with a bootstrap 95% interval (dashboards/stats.py), and a summary row.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from dashboards import stats
from dashboards.frame import trial_accuracy
from studies import record

__all__ = [
    "Cell",
    "StudyRecord",
    "curves_frame",
    "mean_curves",
    "overhead_per_trial",
    "pairwise_frame",
    "reach",
    "reference_target",
    "seed_pairs_frame",
    "step_values",
    "strategy_frame",
    "study_frame",
    "study_name",
    "trial_curve",
    "utilization",
]

BENCH_ATTR = record.BENCHMARK  # the study user attribute the benchmark writes: slots and driver runs
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_TOLERANCE = 1e-9  # a mean of equal accuracies can land an ulp above each of them


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell of the grid: a sampler, a scheduler, a variant of the options ("" for none) and a seed."""

    sampler: str
    scheduler: str
    seed: int
    variant: str = ""

    @property
    def strategy(self) -> str:
        """``tpe-asha``, or ``tpe-asha+VARIANT``: what the benchmark compares, over seeds."""
        return f"{self.sampler}-{self.scheduler}" + (f"+{self.variant}" if self.variant else "")


def study_name(space: str, preset: str, cell: Cell) -> str:
    """The study a cell runs as, e.g. ``bench-resnet_cifar-quick-tpe-asha-s0``
    (``...-tpe-asha-VARIANT-s0`` for a variant)."""
    variant = f"-{cell.variant}" if cell.variant else ""
    return f"bench-{space}-{preset}-{cell.sampler}-{cell.scheduler}{variant}-s{cell.seed}"


@dataclasses.dataclass(frozen=True)
class StudyRecord:
    """A stored study of the benchmark: its trials and what the benchmark recorded about it."""

    name: str
    cell: Cell
    trials: list[FrozenTrial]
    settings: Mapping[str, Any]
    slots: int
    slots_source: str  # "recorded" or how the slots were assumed
    runs: list[Mapping[str, Any]]  # one per driver run: driver_seconds, trials_before, ...

    @classmethod
    def of(cls, study: optuna.Study, cell: Cell, assumed_slots: int) -> StudyRecord:
        """Reads a study; ``assumed_slots`` stands in where the benchmark recorded none."""
        bench = study.user_attrs.get(BENCH_ATTR)
        bench = bench if isinstance(bench, dict) else {}
        slots = bench.get("slots")
        source = "recorded"
        if not isinstance(slots, int) or slots < 1:
            slots, source = assumed_slots, f"assumed {assumed_slots} (not recorded)"
        settings = study.user_attrs.get(record.SETTINGS)
        return cls(study.study_name, cell, study.get_trials(deepcopy=False),
                   settings if isinstance(settings, dict) else {}, slots, source,
                   list(bench.get("runs") or []))


# ---------------------------------------------------------------- one study


def _counted(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    # Trials a killed driver left RUNNING are FAILed as "stale" on resume; they
    # are not part of the requested budget (run.py re-runs them), so not here either.
    return [t for t in trials if t.state in _FINISHED and not record.is_stale(t)
            and t.datetime_start is not None and t.datetime_complete is not None]


def _epochs(trial: FrozenTrial) -> int:
    epochs = trial.user_attrs.get(record.EPOCHS_RUN)
    return int(epochs) if isinstance(epochs, (int, float)) else len(trial.intermediate_values)


def _train_seconds(trial: FrozenTrial) -> float:
    seconds = trial.user_attrs.get(record.TRAIN_SECONDS)
    return float(seconds) if isinstance(seconds, (int, float)) else 0.0


def trial_curve(trials: Sequence[FrozenTrial]) -> pd.DataFrame:
    """A study's finished trials in the order they finished, with running totals.

    Args:
        trials: The study's trials; RUNNING, WAITING and stale FAIL trials are left out.

    Returns:
        One row per trial, ordered by completion time: ``number``, ``state``,
        ``epochs_run``, ``train_seconds``, ``value`` (COMPLETE: the objective,
        PRUNED: its last intermediate value, FAIL: NaN), ``trial_epochs``
        (cumulative epochs_run), ``wall_seconds`` (from the first trial's start
        to this trial's end), ``best_complete`` (best COMPLETE value so far, NaN
        before the first) and ``best_any`` (best of COMPLETE and PRUNED values).
    """
    counted = sorted(_counted(trials), key=lambda t: (t.datetime_complete, t.number))
    columns = ["number", "state", "epochs_run", "train_seconds", "value", "trial_epochs",
               "wall_seconds", "best_complete", "best_any"]
    if not counted:
        return pd.DataFrame(columns=columns)
    first = min(t.datetime_start for t in counted)
    frame = pd.DataFrame({
        "number": [t.number for t in counted],
        "state": [t.state.name for t in counted],
        "epochs_run": [_epochs(t) for t in counted],
        "train_seconds": [_train_seconds(t) for t in counted],
        "value": [trial_accuracy(t) for t in counted],
        "wall_seconds": [(t.datetime_complete - first).total_seconds() for t in counted],
    })
    frame["trial_epochs"] = frame["epochs_run"].cumsum()
    complete = frame["value"].where(frame["state"] == TrialState.COMPLETE.name)
    frame["best_complete"] = complete.cummax()  # cummax skips NaN and keeps it before the first
    frame["best_any"] = frame["value"].cummax()
    frame["best_complete"] = frame["best_complete"].ffill()
    frame["best_any"] = frame["best_any"].ffill()
    return frame[columns]


def reach(curve: pd.DataFrame, target: float) -> tuple[float, float]:
    """Trial-epochs and wall seconds at which ``best_complete`` first reached ``target``.

    Returns:
        ``(trial_epochs, wall_seconds)``, both NaN when it never did (or the target is NaN).
    """
    if math.isnan(target) or curve.empty:
        return math.nan, math.nan
    hit = curve[curve["best_complete"] >= target - _TOLERANCE]
    if hit.empty:
        return math.nan, math.nan
    return float(hit["trial_epochs"].iloc[0]), float(hit["wall_seconds"].iloc[0])


def utilization(train_seconds: float, wall_seconds: float, slots: int) -> float:
    """Share of the slots' wall time spent in trials' own compute."""
    capacity = wall_seconds * slots
    return train_seconds / capacity if capacity > 0 else math.nan


def overhead_per_trial(train_seconds: float, wall_seconds: float, slots: int, trials: int) -> float:
    """Slot-seconds not spent in a trial's own compute, per trial (idle slots included)."""
    return (wall_seconds * slots - train_seconds) / trials if trials else math.nan


# ---------------------------------------------------------------- many studies


def curves_frame(records: Sequence[StudyRecord]) -> pd.DataFrame:
    """:func:`trial_curve` of every study, stacked, with ``study``, ``strategy``, ``sampler``,
    ``scheduler`` and ``seed`` columns in front."""
    parts = []
    for rec in records:
        curve = trial_curve(rec.trials)
        curve.insert(0, "order", range(1, len(curve) + 1))
        for i, (key, value) in enumerate((("study", rec.name), ("strategy", rec.cell.strategy),
                                          ("sampler", rec.cell.sampler),
                                          ("scheduler", rec.cell.scheduler), ("seed", rec.cell.seed))):
            curve.insert(i, key, value)
        parts.append(curve)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def step_values(xs: Sequence[float], ys: Sequence[float], grid: Sequence[float]) -> np.ndarray:
    """A step function's values on ``grid``: the y of the last x at or before each point.

    NaN before the first x; the last y holds after the last x.
    """
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    idx = np.searchsorted(xs, np.asarray(grid, dtype=float), side="right") - 1
    out = np.full(len(idx), np.nan)
    ok = idx >= 0
    out[ok] = ys[idx[ok]]
    return out


def mean_curves(curves: pd.DataFrame, x: str) -> pd.DataFrame:
    """Each strategy's best-so-far step curves against ``x``, summarised over seeds.

    The grid is every x at which any study's curve steps (and 0), shared by all
    strategies, so the mean of the step functions is exact. A seed's curve holds
    its last value after its study ended, up to the strategy's longest seed;
    a point's mean is NaN until every seed has a value there.

    Args:
        curves: :func:`curves_frame`.
        x: ``trial_epochs`` or ``wall_seconds``.

    Returns:
        Columns ``strategy``, ``x``, ``seeds``, and for ``best_complete`` and
        ``best_any``: ``_mean``, ``_std`` (over seeds with ddof 1: NaN for one
        seed), ``_iqm`` and ``_lo``/``_hi`` (the IQM's percentile bootstrap 95%
        interval: NaN for one seed or where a seed has no value yet).
    """
    if curves.empty:
        return pd.DataFrame(columns=["strategy", "x", "seeds"] + [
            f"{y}_{s}" for y in ("best_complete", "best_any") for s in ("mean", "std", "iqm", "lo", "hi")])
    grid = np.unique(np.concatenate([[0.0], curves[x].to_numpy(dtype=float)]))
    parts = []
    for strategy, group in curves.groupby("strategy", sort=False):
        seeds = [g.sort_values(x) for _, g in group.groupby("seed")]
        points = grid[grid <= max(g[x].max() for g in seeds)]
        part = pd.DataFrame({"strategy": strategy, "x": points, "seeds": len(seeds)})
        for y in ("best_complete", "best_any"):
            stack = np.vstack([step_values(g[x], g[y], points) for g in seeds])
            part[f"{y}_mean"] = stack.mean(axis=0)
            part[f"{y}_std"] = stack.std(axis=0, ddof=1) if len(seeds) > 1 else np.nan
            part[f"{y}_iqm"] = stats.iqm(stack, axis=0)
            part[f"{y}_lo"], part[f"{y}_hi"] = stats.column_intervals(stack)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def study_frame(records: Sequence[StudyRecord], reference: str) -> pd.DataFrame:
    """One row per study: results, cost, reaching the reference, and overhead.

    Args:
        records: The benchmark's studies.
        reference: The strategy (``sampler-scheduler``) whose final best, the mean
            over its seeds of the best COMPLETE value, the others have to reach.

    Returns:
        Columns ``study``, ``strategy``, ``sampler``, ``scheduler``, ``seed``,
        ``trials``, ``complete``, ``pruned``, ``failed``, ``best_complete``,
        ``best_any``, ``trial_epochs``, ``wall_seconds`` (first trial start to
        last trial end), ``reach_epochs``, ``reach_wall_seconds`` (NaN: not
        reached), ``slots``, ``slots_source``, ``train_seconds`` (sum),
        ``utilization``, ``overhead_per_trial`` (idle slots at the end
        included), ``startup_per_trial`` (:func:`startup_per_trial`: what each
        trial itself costs beyond its compute), ``driver_seconds`` (the run.py
        processes' wall time, Ray start-up included; NaN if not recorded),
        ``startup_seconds`` (driver minus study wall), ``driver_runs`` and
        ``resumed`` (the study ran in more than one driver run, or a killed run
        left stale trials: its wall time then includes the pause).
    """
    rows, curves = [], {}
    for rec in records:
        curve = curves[rec.name] = trial_curve(rec.trials)
        counted = _counted(rec.trials)
        states = curve["state"].value_counts()
        wall = ((max(t.datetime_complete for t in counted) - min(t.datetime_start for t in counted))
                .total_seconds() if counted else math.nan)
        train = float(curve["train_seconds"].sum())
        driver = [float(r["driver_seconds"]) for r in rec.runs if "driver_seconds" in r]
        driver_seconds = sum(driver) if driver else math.nan
        stale = any(record.is_stale(t) for t in rec.trials)
        rows.append({
            "study": rec.name, "strategy": rec.cell.strategy, "sampler": rec.cell.sampler,
            "scheduler": rec.cell.scheduler, "seed": rec.cell.seed, "trials": len(curve),
            "complete": int(states.get("COMPLETE", 0)), "pruned": int(states.get("PRUNED", 0)),
            "failed": int(states.get("FAIL", 0)),
            "best_complete": curve["best_complete"].iloc[-1] if len(curve) else math.nan,
            "best_any": curve["best_any"].iloc[-1] if len(curve) else math.nan,
            "trial_epochs": int(curve["epochs_run"].sum()), "wall_seconds": wall,
            "slots": rec.slots, "slots_source": rec.slots_source, "train_seconds": train,
            "utilization": utilization(train, wall, rec.slots),
            "overhead_per_trial": overhead_per_trial(train, wall, rec.slots, len(curve)),
            "startup_per_trial": startup_per_trial(counted, rec.slots),
            "driver_seconds": driver_seconds, "startup_seconds": driver_seconds - wall,
            "driver_runs": len(rec.runs), "resumed": len(rec.runs) > 1 or stale,
        })
    frame = pd.DataFrame(rows)
    target = reference_target(frame, reference)
    hits = [reach(curves[name], target) for name in frame["study"]]
    frame.insert(frame.columns.get_loc("slots"), "reach_epochs", [h[0] for h in hits])
    frame.insert(frame.columns.get_loc("slots"), "reach_wall_seconds", [h[1] for h in hits])
    return frame


def seed_pairs_frame(curves: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Each study against the reference strategy's study of the same seed.

    The mean over seeds (:func:`study_frame`'s ``reach_epochs``) can hide a seed
    whose reference got lucky; paired by seed, both studies saw the same seed.

    Args:
        curves: :func:`curves_frame`.
        reference: The strategy (``sampler-scheduler``) the others are paired with.

    Returns:
        One row per study of another strategy whose seed the reference also ran,
        in the curves' order: ``strategy``, ``seed``, ``target`` (the reference
        seed's final best COMPLETE accuracy), ``reach_epochs`` (trial-epochs
        until this study's best COMPLETE first reached it; NaN: never),
        ``reference_epochs`` (the reference study's trial-epochs),
        ``reach_share`` (``reach_epochs / reference_epochs``),
        ``equal_epochs`` (the smaller of the two studies' trial-epochs) and
        ``best_at_equal`` / ``reference_at_equal`` (each study's best COMPLETE
        accuracy after that many trial-epochs; NaN: none yet).
    """
    columns = ["strategy", "seed", "target", "reach_epochs", "reference_epochs", "reach_share",
               "equal_epochs", "best_at_equal", "reference_at_equal"]
    if curves.empty:
        return pd.DataFrame(columns=columns)
    refs = {seed: g for seed, g in curves[curves["strategy"] == reference].groupby("seed")}
    rows = []
    for (strategy, seed), own in curves[curves["strategy"] != reference].groupby(["strategy", "seed"],
                                                                                 sort=False):
        ref = refs.get(seed)
        if ref is None:
            continue
        target = float(ref["best_complete"].iloc[-1])
        ref_epochs, own_epochs = float(ref["trial_epochs"].iloc[-1]), float(own["trial_epochs"].iloc[-1])
        reached = reach(own, target)[0]
        equal = min(own_epochs, ref_epochs)
        rows.append({
            "strategy": strategy, "seed": seed, "target": target, "reach_epochs": reached,
            "reference_epochs": ref_epochs, "reach_share": reached / ref_epochs if ref_epochs else math.nan,
            "equal_epochs": equal,
            "best_at_equal": float(step_values(own["trial_epochs"], own["best_complete"], [equal])[0]),
            "reference_at_equal": float(step_values(ref["trial_epochs"], ref["best_complete"], [equal])[0]),
        })
    return pd.DataFrame(rows, columns=columns)


def startup_per_trial(trials: Sequence[FrozenTrial], slots: int) -> float:
    """Mean seconds a trial costs beyond its own compute: start-up and reporting.

    Per trial, its stored duration minus its ``train_seconds`` (actor reuse, model
    build, checkpoints), plus, for every trial that had to wait for a slot (all
    but the first ``slots``), the time from the latest trial end before its start
    to its start (the free slot's wait). Unlike ``overhead_per_trial`` it leaves
    out slots idle only because no trial was left to run. A trial that a time
    budget cut (``stopped_by``) lost its unfinished epoch's compute, which is
    not overhead: only its wait for a slot counts.
    """
    done = sorted((t for t in trials if t.datetime_start and t.datetime_complete),
                  key=lambda t: t.datetime_start)
    if not done:
        return math.nan
    inside = [(t.datetime_complete - t.datetime_start).total_seconds() - _train_seconds(t)
              for t in done if record.STOPPED_BY not in t.user_attrs]
    waits = []
    for t in done[max(1, slots):]:
        ended = [o.datetime_complete for o in done if o.datetime_complete <= t.datetime_start]
        waits.append((t.datetime_start - max(ended)).total_seconds() if ended else 0.0)
    return (sum(inside) + sum(waits)) / len(done)


def reference_target(studies: pd.DataFrame, reference: str) -> float:
    """The reference strategy's final best: mean over its seeds of their best COMPLETE value."""
    return float(studies.loc[studies["strategy"] == reference, "best_complete"].mean())


def strategy_frame(studies: pd.DataFrame) -> pd.DataFrame:
    """One row per strategy: :func:`study_frame`'s columns summarised over seeds.

    Returns:
        Columns ``strategy``, ``sampler``, ``scheduler``, ``seeds``, ``trials``
        (mean); for ``best_complete``, ``best_any``, ``trial_epochs`` and
        ``wall_minutes``: ``_mean``, ``_std``, ``_iqm`` (interquartile mean
        over seeds) and ``_lo``/``_hi`` (its percentile bootstrap 95%
        interval, dashboards/stats.py; NaN for one seed);
        ``reached`` (seeds that reached the reference), ``reach_epochs`` and
        ``reach_wall_minutes`` (means over the seeds that reached it),
        ``utilization`` and ``overhead_per_trial`` (means); best
        ``best_complete_iqm`` first.
    """
    rows = []
    for strategy, g in studies.groupby("strategy", sort=False):
        row = {"strategy": strategy, "sampler": g["sampler"].iloc[0], "scheduler": g["scheduler"].iloc[0],
               "seeds": len(g), "trials": g["trials"].mean()}
        for name, column in (("best_complete", g["best_complete"]), ("best_any", g["best_any"]),
                             ("trial_epochs", g["trial_epochs"]), ("wall_minutes", g["wall_seconds"] / 60)):
            values = column.to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            row[f"{name}_mean"] = column.mean()
            row[f"{name}_std"] = column.std(ddof=1) if len(g) > 1 else math.nan
            row[f"{name}_iqm"] = stats.iqm(finite) if len(finite) else math.nan
            row[f"{name}_lo"], row[f"{name}_hi"] = stats.bootstrap_ci(finite)
        rows.append({
            **row,
            "reached": int(g["reach_epochs"].notna().sum()),
            "reach_epochs": g["reach_epochs"].mean(),
            "reach_wall_minutes": (g["reach_wall_seconds"] / 60).mean(),
            "utilization": g["utilization"].mean(), "overhead_per_trial": g["overhead_per_trial"].mean(),
        })
    frame = pd.DataFrame(rows)
    return frame.sort_values("best_complete_iqm", ascending=False, na_position="last", ignore_index=True)


def pairwise_frame(studies: pd.DataFrame, column: str = "best_complete") -> pd.DataFrame:
    """For every ordered pair of strategies, the probability that a seed of the first beats one of the second.

    Args:
        studies: :func:`study_frame`.
        column: The per-study value compared (higher is better).

    Returns:
        Columns ``strategy``, ``other``, ``p`` (:func:`dashboards.stats.prob_improvement`),
        ``lo``, ``hi`` (its bootstrap 95% interval) and ``seeds``/``other_seeds``
        (the finite values compared); strategies in the frame's order.
    """
    groups = {s: g[column].to_numpy(dtype=float) for s, g in studies.groupby("strategy", sort=False)}
    rows = []
    for strategy, values in groups.items():
        for other, others in groups.items():
            if other == strategy:
                continue
            lo, hi = stats.prob_improvement_ci(values, others)
            rows.append({"strategy": strategy, "other": other, "p": stats.prob_improvement(values, others),
                         "lo": lo, "hi": hi, "seeds": int(np.isfinite(values).sum()),
                         "other_seeds": int(np.isfinite(others).sum())})
    return pd.DataFrame(rows, columns=["strategy", "other", "p", "lo", "hi", "seeds", "other_seeds"])

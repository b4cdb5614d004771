"""The figures, the Pareto front and the importances, on the demo study and on hand-made frames."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState, create_trial

from dashboards import figures
from dashboards.frame import trials_frame
from dashboards.importance import param_importances
from tests.dashboards.conftest import SPACE


def _frame(rows: list[tuple[int, str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["number", "state", "val_acc", "train_seconds"])


def test_pareto_front_keeps_complete_trials_not_beaten_on_both() -> None:
    frame = _frame(
        [
            (0, "COMPLETE", 0.70, 300.0),
            (1, "COMPLETE", 0.74, 350.0),
            (2, "COMPLETE", 0.72, 400.0),  # dominated by 1
            (3, "PRUNED", 0.90, 10.0),  # pruned: cheap because stopped, never on the front
            (4, "COMPLETE", 0.60, 100.0),
            (5, "COMPLETE", 0.60, 120.0),  # as accurate as 4, dearer
            (6, "COMPLETE", math.nan, 50.0),
        ]
    )
    assert list(figures.pareto_front(frame, "train_seconds")["number"]) == [4, 0, 1]


def test_importances_compare_trials_at_a_common_epoch(demo_study: optuna.Study) -> None:
    importance = param_importances(demo_study.trials, budget=6)

    assert importance is not None
    reached_3 = sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED) and 3 in t.intermediate_values
        for t in demo_study.trials
    )
    assert (importance.epoch, importance.n_trials, importance.final) == (3, reached_3, False)
    assert next(iter(importance.values)) == "lr"  # the demo's accuracy depends on lr most
    assert sum(importance.values.values()) == pytest.approx(1.0)
    assert set(importance.values) == set(SPACE)
    assert "validation accuracy at epoch 3" in importance.target


def test_importances_need_enough_trials() -> None:
    study = optuna.create_study(direction="maximize")
    for lr in (0.001, 0.002, 0.005):
        study.add_trial(
            create_trial(
                value=lr, params={"lr": lr}, distributions={"lr": SPACE["lr"]}, intermediate_values={1: lr}
            )
        )
    assert param_importances(study.trials) is None
    assert param_importances([]) is None


def test_figures_of_the_demo_study(demo_study: optuna.Study) -> None:
    frame = trials_frame(demo_study)
    trials = demo_study.trials

    cost = figures.cost_figure(frame, best=4, baseline=0)
    names = [trace.name for trace in cost.data]
    legend = {"pruned (stopped early)", "resnet", "vgg", "Pareto front (complete trials)"}
    legend |= {"best #4", "baseline #0"}
    assert legend <= set(names)
    assert len(names) == 2 * len(legend)  # the same traces in both panels
    assert {trace.xaxis for trace in cost.data} == {"x", "x2"}  # seconds and parameter count

    parallel = figures.parallel_figure(frame, trials)
    dims = {dim.label: dim for dim in parallel.data[0].dimensions}
    assert list(dims)[-2:] == ["epochs run", "val acc"]
    assert "lr (log)" in dims and list(dims["optimizer"].ticktext) == ["adamw", "sgd"]
    assert len(dims["val acc"].values) == frame["val_acc"].notna().sum()

    curves = figures.curves_figure(frame, trials)
    assert curves.data[0].name.startswith("pruned (")  # the faded ones, drawn first
    assert len(curves.data) == 1 + figures.CURVES

    family = figures.family_figure(frame)
    assert set(family.data[0].x) == {"resnet", "vgg"}
    assert max(family.data[0].y) == frame["val_acc"].max()


def test_figures_without_families_or_params(tmp_path) -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(create_trial(value=0.5, intermediate_values={1: 0.5}))
    frame = trials_frame(study)
    assert figures.family_figure(frame) is None
    assert figures.parallel_figure(frame, study.trials) is None
    assert figures.cost_figure(frame).data == ()

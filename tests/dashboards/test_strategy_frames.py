"""The strategy benchmark's arithmetic on stored studies whose every number is known."""

from __future__ import annotations

import datetime as dt
import math

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState, create_trial

from dashboards import strategy_frames as sf
from dashboards import strategy_report as sr
from studies import record
from studies.benchmark import slots

T0 = dt.datetime(2026, 1, 1, 12, 0, 0)


def add(study, state, *, start, end, epochs, seconds, value=None, curve=None, **attrs):
    trial = create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                         intermediate_values=curve or {},
                         user_attrs={record.EPOCHS_RUN: epochs, record.TRAIN_SECONDS: seconds, **attrs})
    trial.datetime_start = T0 + dt.timedelta(seconds=start)
    trial.datetime_complete = None if end is None else T0 + dt.timedelta(seconds=end)
    study.add_trial(trial)


def make_study(url, cell, slots=2, driver=None):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=sf.study_name("resnet_cifar", "smoke", cell), storage=url,
                                direction="maximize")
    settings = record.StudySettings(space="resnet_cifar", preset="smoke", fixed={}, data=None,
                                    sampler=cell.sampler, scheduler=cell.scheduler, seed=cell.seed)
    study.set_user_attr(record.SETTINGS, settings.to_dict())
    if slots:
        runs = [{"driver_seconds": d} for d in (driver or [])]
        study.set_user_attr(record.BENCHMARK, {"slots": slots, "cpus": 2, "cpus_per_trial": 1.0, "runs": runs})
    return study


REF0, REF1, TPE0 = sf.Cell("random", "fifo", 0), sf.Cell("random", "fifo", 1), sf.Cell("tpe", "asha", 0)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Three stored studies whose every number is worked out by hand in the tests below."""
    url = f"sqlite:///{tmp_path_factory.mktemp('bench') / 'bench.db'}"
    ref0 = make_study(url, REF0, driver=[30.0])
    C, P, F = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL
    add(ref0, C, start=0, end=10, epochs=2, seconds=8.0, value=0.40, curve={1: 0.3, 2: 0.40})
    add(ref0, P, start=1, end=6, epochs=1, seconds=4.0, curve={1: 0.55})  # finishes first
    add(ref0, C, start=6, end=16, epochs=2, seconds=8.0, value=0.50, curve={1: 0.2, 2: 0.50})
    add(ref0, F, start=10, end=14, epochs=1, seconds=3.0, curve={1: 0.3}, **{record.FAIL_REASON: "non-finite loss"})
    add(ref0, F, start=2, end=40, epochs=1, seconds=1.0)  # no reason: a dead driver's (stale), not counted
    add(ref0, TrialState.RUNNING, start=20, end=None, epochs=0, seconds=0.0)
    ref1 = make_study(url, REF1, driver=[20.0, 5.0])  # resumed once
    add(ref1, C, start=0, end=5, epochs=2, seconds=4.0, value=0.60, curve={1: 0.5, 2: 0.60})
    add(ref1, C, start=0, end=8, epochs=2, seconds=6.0, value=0.70, curve={1: 0.6, 2: 0.70})
    tpe0 = make_study(url, TPE0, slots=None)  # run outside the benchmark: no slots recorded
    add(tpe0, P, start=0, end=2, epochs=1, seconds=1.5, curve={1: 0.65})
    add(tpe0, C, start=0, end=6, epochs=2, seconds=5.0, value=0.62, curve={1: 0.5, 2: 0.62})
    add(tpe0, C, start=2, end=9, epochs=2, seconds=5.0, value=0.58, curve={1: 0.5, 2: 0.58})
    return [sf.StudyRecord.of(optuna.load_study(study_name=sf.study_name("resnet_cifar", "smoke", c),
                                                storage=url), c, assumed_slots=3)
            for c in (REF0, REF1, TPE0)]


def test_a_trial_cut_by_the_time_budget_is_not_start_up_overhead(tmp_path):
    study = make_study(f"sqlite:///{tmp_path / 'cut.db'}", TPE0, slots=1)
    add(study, TrialState.COMPLETE, start=0, end=10, epochs=2, seconds=9.0, value=0.5, curve={1: 0.4, 2: 0.5})
    # Cut 30 s into its first epoch: no epoch recorded, so no compute, but it was not start-up.
    add(study, TrialState.PRUNED, start=12, end=42, epochs=0, seconds=0.0,
        **{record.STOPPED_BY: "the study's time budget (1 min)"})
    (trial_a, trial_b) = study.get_trials()
    # Trial a: 1 s beyond its compute; trial b waited 2 s for the slot and its own 30 s are left out.
    assert sf.startup_per_trial([trial_a, trial_b], slots=1) == pytest.approx((1 + 2) / 2)


def test_trial_curve_orders_by_completion_and_keeps_best_so_far(records):
    curve = sf.trial_curve(records[0].trials)
    assert curve["number"].tolist() == [1, 0, 3, 2]  # stale FAIL and RUNNING left out
    assert curve["state"].tolist() == ["PRUNED", "COMPLETE", "FAIL", "COMPLETE"]
    assert curve["trial_epochs"].tolist() == [1, 3, 4, 6]
    assert curve["wall_seconds"].tolist() == [6.0, 10.0, 14.0, 16.0]
    assert math.isnan(curve["best_complete"].iloc[0])
    assert curve["best_complete"].tolist()[1:] == [0.40, 0.40, 0.50]
    assert curve["best_any"].tolist() == [0.55] * 4  # the pruned trial's last value counts here


def test_study_frame_counts_reach_and_overhead(records):
    studies = sf.study_frame(records, reference="random-fifo").set_index("seed", append=True)
    ref0, ref1, tpe0 = (studies.iloc[i] for i in range(3))
    assert (ref0["trials"], ref0["complete"], ref0["pruned"], ref0["failed"]) == (4, 2, 1, 1)
    assert (ref0["best_complete"], ref0["best_any"], ref0["trial_epochs"]) == (0.50, 0.55, 6)
    # Utilization: 23 s of compute in 16 s wall on 2 slots; the rest spread over 4 trials.
    assert ref0["train_seconds"] == 23.0 and ref0["wall_seconds"] == 16.0 and ref0["slots"] == 2
    assert ref0["utilization"] == pytest.approx(23 / 32)
    assert ref0["overhead_per_trial"] == pytest.approx((32 - 23) / 4)
    # Start-up: durations minus compute 2 + 1 + 2 + 1; the 3rd and 4th trials started
    # the moment a trial ended (6 s, 10 s), so no slot waited.
    assert ref0["startup_per_trial"] == pytest.approx(6 / 4)
    assert tpe0["startup_per_trial"] == pytest.approx((0.5 + 1 + 2) / 3)  # 3 slots: none waits
    assert ref0["driver_seconds"] == 30.0 and ref0["startup_seconds"] == pytest.approx(14.0)
    assert ref0["resumed"]  # a stale trial: its wall may hold a pause
    assert ref1["driver_seconds"] == 25.0 and ref1["driver_runs"] == 2 and ref1["resumed"]
    assert tpe0["slots"] == 3 and tpe0["slots_source"].startswith("assumed") and not tpe0["resumed"]
    assert math.isnan(tpe0["driver_seconds"])
    # Reference's final best: mean(0.50, 0.70) = 0.60 among COMPLETE trials only.
    assert sf.reference_target(studies, "random-fifo") == pytest.approx(0.60)
    assert math.isnan(ref0["reach_epochs"]) and math.isnan(ref0["reach_wall_seconds"])
    assert (ref1["reach_epochs"], ref1["reach_wall_seconds"]) == (2, 5.0)
    # tpe's pruned 0.65 does not count; its COMPLETE 0.62 does, after 1 + 2 trial-epochs.
    assert (tpe0["reach_epochs"], tpe0["reach_wall_seconds"]) == (3, 6.0)


def test_strategy_frame_means_over_seeds(records):
    strategies = sf.strategy_frame(sf.study_frame(records, "random-fifo")).set_index("strategy")
    ref, tpe = strategies.loc["random-fifo"], strategies.loc["tpe-asha"]
    assert ref["seeds"] == 2 and ref["best_complete_mean"] == pytest.approx(0.60)
    assert ref["best_complete_std"] == pytest.approx(math.sqrt(0.02))  # sample std of 0.5, 0.7
    assert ref["trial_epochs_mean"] == 5 and ref["wall_minutes_mean"] == pytest.approx(12 / 60)
    assert ref["reached"] == 1 and ref["reach_epochs"] == 2  # the mean over the seeds that reached it
    assert tpe["seeds"] == 1 and math.isnan(tpe["best_complete_std"]) and tpe["reach_epochs"] == 3
    assert strategies.index.tolist() == ["tpe-asha", "random-fifo"]  # best first


def test_mean_curves_are_exact_step_means(records):
    curves = sf.curves_frame(records)
    assert curves.groupby("study").size().tolist() == [4, 2, 3]
    means = sf.mean_curves(curves, "trial_epochs")
    ref = means[means["strategy"] == "random-fifo"].set_index("x")
    assert ref.index.max() == 6  # the longest seed; the other holds its final value up to there
    assert math.isnan(ref.loc[2, "best_complete_mean"])  # seed 0 has no COMPLETE trial yet
    assert ref.loc[3, "best_complete_mean"] == pytest.approx(0.50)  # 0.40 and 0.60
    assert ref.loc[3, "best_complete_std"] == pytest.approx(math.sqrt(0.02))
    assert ref.loc[6, "best_complete_mean"] == pytest.approx(0.60)  # 0.50 and the held 0.70
    assert math.isnan(ref.loc[1, "best_any_mean"])  # seed 1 has nothing at 1
    by_wall = sf.mean_curves(curves, "wall_seconds")
    tpe = by_wall[by_wall["strategy"] == "tpe-asha"].set_index("x")
    assert tpe.loc[6, "best_complete_mean"] == 0.62 and tpe.loc[9, "best_complete_mean"] == 0.62


def test_reach_tolerates_a_mean_an_ulp_above_the_values():
    curve = pd.DataFrame({"best_complete": [0.1], "trial_epochs": [4], "wall_seconds": [9.0]})
    assert sf.reach(curve, sum([0.1, 0.1, 0.1]) / 3) == (4.0, 9.0)
    assert all(math.isnan(v) for v in sf.reach(curve, 0.11))


def test_step_values_utilization_and_slots():
    assert sf.step_values([1, 3], [0.2, 0.5], [0, 1, 2, 3, 9]).tolist()[1:] == [0.2, 0.2, 0.5, 0.5]
    assert sf.utilization(90.0, 50.0, 2) == pytest.approx(0.9)
    assert sf.overhead_per_trial(90.0, 50.0, 2, 10) == pytest.approx(1.0)
    assert slots(2, 1.0) == 2 and slots(2, 0.5) == 4 and slots(2, 3.0) == 0
    assert slots(16, 2.0, gpus=1, gpus_per_trial=0.25) == 4 and slots(16, 2.0, 1, 1.0) == 1


def test_strategy_frame_reports_iqm_with_a_bootstrap_interval(records):
    strategies = sf.strategy_frame(sf.study_frame(records, "random-fifo")).set_index("strategy")
    ref, tpe = strategies.loc["random-fifo"], strategies.loc["tpe-asha"]
    assert ref["best_complete_iqm"] == pytest.approx(0.60)  # 2 seeds: the mean of 0.5 and 0.7
    assert (ref["best_complete_lo"], ref["best_complete_hi"]) == pytest.approx((0.5, 0.7))
    assert ref["trial_epochs_iqm"] == 5 and (ref["trial_epochs_lo"], ref["trial_epochs_hi"]) == (4, 6)  # 6 and 4
    assert tpe["best_complete_iqm"] == pytest.approx(0.62) and math.isnan(tpe["best_complete_lo"])


def test_pairwise_frame_and_interval_curves(records):
    studies = sf.study_frame(records, "random-fifo")
    pairs = sf.pairwise_frame(studies).set_index(["strategy", "other"])
    # 0.5 and 0.7 against 0.62: one seed wins, one loses.
    assert pairs.loc[("random-fifo", "tpe-asha"), "p"] == pytest.approx(0.5)
    assert pairs.loc[("tpe-asha", "random-fifo"), ["seeds", "other_seeds"]].tolist() == [1, 2]
    assert (pairs.loc[("random-fifo", "tpe-asha"), "lo"], pairs.loc[("random-fifo", "tpe-asha"), "hi"]) == (0, 1)
    means = sf.mean_curves(sf.curves_frame(records), "trial_epochs")
    ref = means[means["strategy"] == "random-fifo"].set_index("x")
    assert ref.loc[6, "best_complete_iqm"] == pytest.approx(0.60)
    assert (ref.loc[6, "best_complete_lo"], ref.loc[6, "best_complete_hi"]) == pytest.approx((0.5, 0.7))
    assert math.isnan(ref.loc[2, "best_complete_lo"])  # seed 0 has no COMPLETE trial yet


def test_seed_pairs_compare_each_study_with_the_same_seeds_reference(records):
    pairs = sf.seed_pairs_frame(sf.curves_frame(records), "random-fifo")
    # Only tpe-asha seed 0 has a reference of its seed (random-fifo seed 0); seed 1's reference
    # (0.70) does not count against it, as the mean over seeds (0.60) would.
    assert pairs[["strategy", "seed"]].values.tolist() == [["tpe-asha", 0]]
    row = pairs.iloc[0]
    assert row["target"] == 0.50 and row["reference_epochs"] == 6
    # tpe's COMPLETE 0.62 arrives after 1 + 2 trial-epochs: half of the reference's 6.
    assert row["reach_epochs"] == 3 and row["reach_share"] == pytest.approx(0.5)
    # At 5 trial-epochs (tpe's total) tpe has 0.62, the reference 0.40 (its 0.50 came at 6).
    assert (row["equal_epochs"], row["best_at_equal"], row["reference_at_equal"]) == (5, 0.62, 0.40)
    header, rows = sr.seed_pair_rows(pairs, "random-fifo")
    assert rows == [["tpe-asha", "0", "50.0%", "3 of 6", "50%", "5", "62.0%", "40.0%"]]
    assert len(header) == len(rows[0])


def test_seed_pairs_say_when_the_reference_is_never_reached(records):
    curves = sf.curves_frame(records)
    # Make seed 0's reference better than anything tpe found: tpe never reaches it.
    curves.loc[curves["study"] == records[0].name, "best_complete"] = 0.90
    row = sf.seed_pairs_frame(curves, "random-fifo").iloc[0]
    assert math.isnan(row["reach_epochs"]) and math.isnan(row["reach_share"])
    assert sr.seed_pair_rows(sf.seed_pairs_frame(curves, "random-fifo"), "random-fifo")[1][0][3:5] == [
        "not reached", "-"]
    assert sf.seed_pairs_frame(curves.iloc[0:0], "random-fifo").empty

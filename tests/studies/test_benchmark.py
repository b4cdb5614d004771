"""The benchmark: its arithmetic on a stored study with known numbers, bad input, one real run."""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState, create_trial

from studies import benchmark as bm

ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 1, 1, 12, 0, 0)


def add(study, state, *, start, end, epochs, seconds, value=None, curve=None, **attrs):
    trial = create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                         intermediate_values=curve or {},
                         user_attrs={"epochs_run": epochs, "train_seconds": seconds, **attrs})
    trial.datetime_start = T0 + dt.timedelta(seconds=start)
    trial.datetime_complete = None if end is None else T0 + dt.timedelta(seconds=end)
    study.add_trial(trial)


def make_study(url, cell, slots=2, driver=None):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=bm.study_name("resnet_cifar", "smoke", cell), storage=url,
                                direction="maximize")
    study.set_user_attr("settings", {"space": "resnet_cifar", "preset": "smoke"})
    if slots:
        runs = [{"driver_seconds": d} for d in (driver or [])]
        study.set_user_attr("benchmark", {"slots": slots, "cpus": 2, "cpus_per_trial": 1.0, "runs": runs})
    return study


REF0, REF1, TPE0 = bm.Cell("random", "fifo", 0), bm.Cell("random", "fifo", 1), bm.Cell("tpe", "asha", 0)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Three stored studies whose every number is worked out by hand in the tests below."""
    url = f"sqlite:///{tmp_path_factory.mktemp('bench') / 'bench.db'}"
    ref0 = make_study(url, REF0, driver=[30.0])
    C, P, F = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL
    add(ref0, C, start=0, end=10, epochs=2, seconds=8.0, value=0.40, curve={1: 0.3, 2: 0.40})
    add(ref0, P, start=1, end=6, epochs=1, seconds=4.0, curve={1: 0.55})  # finishes first
    add(ref0, C, start=6, end=16, epochs=2, seconds=8.0, value=0.50, curve={1: 0.2, 2: 0.50})
    add(ref0, F, start=10, end=14, epochs=1, seconds=3.0, curve={1: 0.3})
    add(ref0, F, start=2, end=40, epochs=1, seconds=1.0, stale=True)  # a killed run's: not counted
    add(ref0, TrialState.RUNNING, start=20, end=None, epochs=0, seconds=0.0)
    ref1 = make_study(url, REF1, driver=[20.0, 5.0])  # resumed once
    add(ref1, C, start=0, end=5, epochs=2, seconds=4.0, value=0.60, curve={1: 0.5, 2: 0.60})
    add(ref1, C, start=0, end=8, epochs=2, seconds=6.0, value=0.70, curve={1: 0.6, 2: 0.70})
    tpe0 = make_study(url, TPE0, slots=None)  # run outside the benchmark: no slots recorded
    add(tpe0, P, start=0, end=2, epochs=1, seconds=1.5, curve={1: 0.65})
    add(tpe0, C, start=0, end=6, epochs=2, seconds=5.0, value=0.62, curve={1: 0.5, 2: 0.62})
    add(tpe0, C, start=2, end=9, epochs=2, seconds=5.0, value=0.58, curve={1: 0.5, 2: 0.58})
    return [bm.StudyRecord.of(optuna.load_study(study_name=bm.study_name("resnet_cifar", "smoke", c),
                                                storage=url), c, assumed_slots=3)
            for c in (REF0, REF1, TPE0)]


def test_trial_curve_orders_by_completion_and_keeps_best_so_far(records):
    curve = bm.trial_curve(records[0].trials)
    assert curve["number"].tolist() == [1, 0, 3, 2]  # stale FAIL and RUNNING left out
    assert curve["state"].tolist() == ["PRUNED", "COMPLETE", "FAIL", "COMPLETE"]
    assert curve["trial_epochs"].tolist() == [1, 3, 4, 6]
    assert curve["wall_seconds"].tolist() == [6.0, 10.0, 14.0, 16.0]
    assert math.isnan(curve["best_complete"].iloc[0])
    assert curve["best_complete"].tolist()[1:] == [0.40, 0.40, 0.50]
    assert curve["best_any"].tolist() == [0.55] * 4  # the pruned trial's last value counts here


def test_study_frame_counts_reach_and_overhead(records):
    studies = bm.study_frame(records, reference="random-fifo").set_index("seed", append=True)
    ref0, ref1, tpe0 = (studies.iloc[i] for i in range(3))
    assert (ref0["trials"], ref0["complete"], ref0["pruned"], ref0["failed"]) == (4, 2, 1, 1)
    assert (ref0["best_complete"], ref0["best_any"], ref0["trial_epochs"]) == (0.50, 0.55, 6)
    # Utilization: 23 s of compute in 16 s wall on 2 slots; the rest spread over 4 trials.
    assert ref0["train_seconds"] == 23.0 and ref0["wall_seconds"] == 16.0 and ref0["slots"] == 2
    assert ref0["utilization"] == pytest.approx(23 / 32)
    assert ref0["overhead_per_trial"] == pytest.approx((32 - 23) / 4)
    assert ref0["driver_seconds"] == 30.0 and ref0["startup_seconds"] == pytest.approx(14.0)
    assert ref0["resumed"]  # a stale trial: its wall may hold a pause
    assert ref1["driver_seconds"] == 25.0 and ref1["driver_runs"] == 2 and ref1["resumed"]
    assert tpe0["slots"] == 3 and tpe0["slots_source"].startswith("assumed") and not tpe0["resumed"]
    assert math.isnan(tpe0["driver_seconds"])
    # Reference's final best: mean(0.50, 0.70) = 0.60 among COMPLETE trials only.
    assert bm.reference_target(studies, "random-fifo") == pytest.approx(0.60)
    assert math.isnan(ref0["reach_epochs"]) and math.isnan(ref0["reach_wall_seconds"])
    assert (ref1["reach_epochs"], ref1["reach_wall_seconds"]) == (2, 5.0)
    # tpe's pruned 0.65 does not count; its COMPLETE 0.62 does, after 1 + 2 trial-epochs.
    assert (tpe0["reach_epochs"], tpe0["reach_wall_seconds"]) == (3, 6.0)


def test_strategy_frame_means_over_seeds(records):
    strategies = bm.strategy_frame(bm.study_frame(records, "random-fifo")).set_index("strategy")
    ref, tpe = strategies.loc["random-fifo"], strategies.loc["tpe-asha"]
    assert ref["seeds"] == 2 and ref["best_complete_mean"] == pytest.approx(0.60)
    assert ref["best_complete_std"] == pytest.approx(math.sqrt(0.02))  # sample std of 0.5, 0.7
    assert ref["trial_epochs_mean"] == 5 and ref["wall_minutes_mean"] == pytest.approx(12 / 60)
    assert ref["reached"] == 1 and ref["reach_epochs"] == 2  # the mean over the seeds that reached it
    assert tpe["seeds"] == 1 and math.isnan(tpe["best_complete_std"]) and tpe["reach_epochs"] == 3
    assert strategies.index.tolist() == ["tpe-asha", "random-fifo"]  # best first


def test_mean_curves_are_exact_step_means(records):
    curves = bm.curves_frame(records)
    assert curves.groupby("study").size().tolist() == [4, 2, 3]
    means = bm.mean_curves(curves, "trial_epochs")
    ref = means[means["strategy"] == "random-fifo"].set_index("x")
    assert ref.index.max() == 6  # the longest seed; the other holds its final value up to there
    assert math.isnan(ref.loc[2, "best_complete_mean"])  # seed 0 has no COMPLETE trial yet
    assert ref.loc[3, "best_complete_mean"] == pytest.approx(0.50)  # 0.40 and 0.60
    assert ref.loc[3, "best_complete_std"] == pytest.approx(math.sqrt(0.02))
    assert ref.loc[6, "best_complete_mean"] == pytest.approx(0.60)  # 0.50 and the held 0.70
    assert math.isnan(ref.loc[1, "best_any_mean"])  # seed 1 has nothing at 1
    by_wall = bm.mean_curves(curves, "wall_seconds")
    tpe = by_wall[by_wall["strategy"] == "tpe-asha"].set_index("x")
    assert tpe.loc[6, "best_complete_mean"] == 0.62 and tpe.loc[9, "best_complete_mean"] == 0.62


def test_reach_tolerates_a_mean_an_ulp_above_the_values():
    curve = pd.DataFrame({"best_complete": [0.1], "trial_epochs": [4], "wall_seconds": [9.0]})
    assert bm.reach(curve, sum([0.1, 0.1, 0.1]) / 3) == (4.0, 9.0)
    assert all(math.isnan(v) for v in bm.reach(curve, 0.11))


def test_step_values_utilization_and_slots():
    assert bm.step_values([1, 3], [0.2, 0.5], [0, 1, 2, 3, 9]).tolist()[1:] == [0.2, 0.2, 0.5, 0.5]
    assert bm.utilization(90.0, 50.0, 2) == pytest.approx(0.9)
    assert bm.overhead_per_trial(90.0, 50.0, 2, 10) == pytest.approx(1.0)
    assert bm.slots(2, 1.0) == 2 and bm.slots(2, 0.5) == 4 and bm.slots(2, 3.0) == 0
    assert bm.slots(16, 2.0, gpus=1, gpus_per_trial=0.25) == 4 and bm.slots(16, 2.0, 1, 1.0) == 1


BAD = {
    "unknown sampler": (["--samplers", "tpe,bogus"], "unknown sampler 'bogus'; known: cmaes, gp, qmc"),
    "unknown scheduler": (["--schedulers", "pbt"], "unknown scheduler 'pbt'"),
    "seeds not integers": (["--seeds", "0,one"], "--seeds: expected comma-separated whole numbers"),
    "zero trials": (["--trials", "0"], "--trials: must be at least 1"),
    "missing data": (["--data", "/no/such/dir"], "data path '/no/such/dir' does not exist"),
    "reference not in grid": (["--schedulers", "asha", "--reference", "tpe-fifo"],
                              "--reference 'tpe-fifo' is not in the grid; strategies: tpe-asha, random-asha"),
    "a study name": (["--study", "mine"], "--study: the benchmark names its studies"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gets_one_line_and_status_2(case, capsys, tmp_path):
    args, expected = BAD[case]
    try:
        status = bm.main(["--preset", "smoke", "--results", str(tmp_path), *args])
    except SystemExit as exit_:  # argparse's errors
        status = exit_.code
    assert status == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert not (tmp_path / "benchmark.db").exists()


def test_a_cell_run_with_another_budget_is_refused_before_any_cell_runs(tiny_cifar, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'benchmark.db'}"
    data = str(Path(tiny_cifar).resolve())
    fixed = {"epochs": 2, "data_fraction": 1.0, "batch_size": 64}
    for sampler, epochs in (("tpe", 2), ("random", 3)):  # tpe's matches; random's ran 3 epochs
        study = make_study(url, bm.Cell(sampler, "fifo", 0))
        study.set_user_attr("settings", {"space": "resnet_cifar", "preset": "smoke",
                                         "fixed": {**fixed, "epochs": epochs}, "data": data})
    status = bm.main(["--preset", "smoke", "--samplers", "tpe,random", "--schedulers", "fifo", "--seeds", "0",
                      "--data", data, "--data-fraction", "1", "--results", str(tmp_path)])
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: study 'bench-resnet_cifar-smoke-random-fifo-s0' was run with other settings "
                   "(fixed differ); repeat the original options or pass another --storage")
    assert not (tmp_path / "benchmark").exists()  # nothing ran, nothing written


def test_benchmark_runs_the_grid_and_writes_csv_and_html(tiny_cifar, tmp_path):
    """The real thing at smoke size: 2 samplers x 1 scheduler x 1 seed, 3 trials each."""
    results = tmp_path / "results"
    command = [sys.executable, str(ROOT / "studies" / "benchmark.py"), "--preset", "smoke",
               "--samplers", "tpe,random", "--schedulers", "fifo", "--seeds", "0", "--trials", "3",
               "--data", str(tiny_cifar), "--data-fraction", "1", "--results", str(results),
               "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    names = ["bench-resnet_cifar-smoke-tpe-fifo-s0", "bench-resnet_cifar-smoke-random-fifo-s0"]
    studies = pd.read_csv(results / "benchmark" / "resnet_cifar-smoke.csv")
    assert studies["study"].tolist() == names and studies["trials"].tolist() == [3, 3]
    assert (studies["complete"] == 3).all() and (studies["slots"] >= 1).all()  # fifo prunes nothing
    assert ((studies["utilization"] > 0) & (studies["utilization"] <= 1)).all()
    assert (studies["driver_seconds"] > studies["wall_seconds"]).all()
    # random-fifo is the reference: it reaches its own final best.
    assert studies.set_index("study").loc[names[1], "reach_epochs"] <= 6
    curves = pd.read_csv(results / "benchmark" / "resnet_cifar-smoke-curves.csv")
    assert curves.groupby("study").size().to_dict() == {name: 3 for name in names}
    assert (curves.groupby("study")["trial_epochs"].max() == 6).all()
    page = (results / "benchmark" / "resnet_cifar-smoke.html").read_text()
    assert page.count("plotly.js v") == 1  # embedded once, for two figures
    for text in ("tpe-fifo", "random-fifo", "Equal budget: every cell runs 3 finished trials",
                 'id="summary"', 'id="overhead-table"', "incl. pruned"):
        assert text in page
    assert "tpe-fifo" in proc.stdout and "utilization" in proc.stdout
    storage = f"sqlite:///{results / 'benchmark.db'}"
    runs = optuna.load_study(study_name=names[0], storage=storage).user_attrs["benchmark"]["runs"]
    assert len(runs) == 1 and runs[0]["trials_after"] == 3

    again = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("3 finished trials, skipped") == 2
    assert optuna.load_study(study_name=names[0], storage=storage).user_attrs["benchmark"]["runs"] == runs

"""The benchmark command: bad input, a grid run with other settings, one real run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest

from studies import benchmark as bm
from studies import record

ROOT = Path(__file__).resolve().parents[2]


BAD = {
    "unknown sampler": (["--samplers", "tpe,bogus"], "unknown sampler 'bogus'; known: cmaes, gp, qmc"),
    "unknown scheduler": (["--schedulers", "pbt"], "unknown scheduler 'pbt'"),
    "seeds not integers": (["--seeds", "0,one"], "--seeds: expected comma-separated whole numbers"),
    "negative seed": (["--seeds", "0,-3"], "--seeds: must be in [0, 2**32), got -3"),
    "seed too large": (["--seeds", "4294967296"], "--seeds: must be in [0, 2**32), got 4294967296"),
    "zero trials": (["--trials", "0"], "--trials: must be at least 1"),
    "missing data": (["--data", "/no/such/dir"], "data path '/no/such/dir' does not exist"),
    "reference not in grid": (["--schedulers", "asha", "--reference", "tpe-fifo"],
                              "--reference 'tpe-fifo' is not in the grid; strategies: tpe-asha, random-asha"),
    "a study name": (["--study", "mine"], "--study: the benchmark names its studies"),
    "unknown strategy": (["--strategies", "tpe-asha,random-bogus"],
                         "--strategies: unknown strategy 'random-bogus'; expected SAMPLER-SCHEDULER"),
    "bad variant name": (["--variant", "Grace/2"], "variant name 'Grace/2': use lowercase letters"),
    "variant file missing": (["--variant", "g2=/no/such.toml"], "--variant g2=/no/such.toml: no such file"),
    "variant sets what the benchmark sets": (["--variant", "v={trials_toml}"],
                                             "trials is set by the benchmark for every cell"),
    "variant with a typo": (["--variant", "v={typo_toml}"],
                            "unknown option 'grace_periods' (did you mean 'grace-period'?)"),
    "variant with a bad value": (["--variant", "v={zero_toml}"], "grace_period: must be at least 1"),
    "repeated variant": (["--variant", "a", "--variant", "a"], "--variant: a variant name is repeated"),
    "variant with an unknown space": (["--variant", "v={space_toml}"], "unknown search space 'nope'"),
    "variant with start and no_start": (["--variant", "v={both_toml}"],
                                        "start and no_start contradict each other; set one"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gets_one_line_and_status_2(case, capsys, tmp_path):
    args, expected = BAD[case]
    files = {"trials_toml": "trials = 3\n", "typo_toml": "grace_periods = 2\n", "zero_toml": "grace_period = 0\n",
             "space_toml": 'space = "nope"\n', "both_toml": "start = true\nno_start = true\n"}
    for key, text in files.items():
        (tmp_path / f"{key}.toml").write_text(text)
    args = [a.format(**{k: tmp_path / f"{k}.toml" for k in files}) for a in args]
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
    from search_spaces import SpaceLimits
    from studies.run import build_settings
    from studies.storage import open_storage, open_study
    from trainers.data import load_dataset

    fingerprint = load_dataset(data, cache_dir=tmp_path / "cache").fingerprint()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for sampler, epochs in (("tpe", 2), ("random", 3)):  # tpe's matches; random's ran 3 epochs
        settings = build_settings(space="resnet_cifar", preset="smoke", fixed={**fixed, "epochs": epochs},
                                  limits=SpaceLimits(), data=fingerprint, data_source=data,
                                  objectives=["val_acc"], sampler=sampler, scheduler="fifo", baselines=False,
                                  seed=0)
        open_study(open_storage(url), bm.study_name("resnet_cifar", "smoke", bm.Cell(sampler, "fifo", 0)),
                   settings)
    status = bm.main(["--preset", "smoke", "--samplers", "tpe,random", "--schedulers", "fifo", "--seeds", "0",
                      "--data", data, "--data-fraction", "1", "--results", str(tmp_path),
                      "--cache-dir", str(tmp_path / "cache")])
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
                 'id="summary"', 'id="overhead-table"', "incl. pruned", 'id="improvement-table"',
                 "IQM [95% CI]", "Average rank against trial-epochs", 'id="seed-pairs-table"'):
        assert text in page
    assert "tpe-fifo" in proc.stdout and "utilization" in proc.stdout
    assert "seed by seed against random-fifo's study of the same seed" in proc.stdout
    storage = f"sqlite:///{results / 'benchmark.db'}"
    runs = optuna.load_study(study_name=names[0], storage=storage).user_attrs["benchmark"]["runs"]
    assert len(runs) == 1 and runs[0]["trials_after"] == 3

    again = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("3 finished trials, skipped") == 2
    assert optuna.load_study(study_name=names[0], storage=storage).user_attrs["benchmark"]["runs"] == runs


@pytest.mark.slow
def test_variants_run_each_strategy_once_per_variant(tiny_cifar, tmp_path):
    """--variant compares levers: the same strategy with and without a run.py option, as two strategies."""
    (tmp_path / "short.toml").write_text("epochs = 1\ngrace_period = 1\ntime_budget = 30\n")
    results = tmp_path / "results"
    command = [sys.executable, str(ROOT / "studies" / "benchmark.py"), "--preset", "smoke",
               "--strategies", "random-fifo", "--variant", "base", "--variant", f"short={tmp_path / 'short.toml'}",
               "--seeds", "0", "--trials", "2", "--data", str(tiny_cifar), "--data-fraction", "1",
               "--results", str(results), "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    studies = pd.read_csv(results / "benchmark" / "resnet_cifar-smoke.csv").set_index("study")
    base, short = "bench-resnet_cifar-smoke-random-fifo-base-s0", "bench-resnet_cifar-smoke-random-fifo-short-s0"
    assert studies.loc[base, "strategy"] == "random-fifo+base" and studies.loc[short, "strategy"] == "random-fifo+short"
    # The smoke preset's 2 epochs per trial against the variant's 1: 4 and 2 trial-epochs.
    assert (studies.loc[base, "trial_epochs"], studies.loc[short, "trial_epochs"]) == (4, 2)
    assert "Variants: base (no options); short (epochs=1, grace-period=1, time-budget=30)" in proc.stdout
    assert "A variant's time budget ends its cells when it runs out, whatever their trial count." in proc.stdout
    assert "grid: 2 strategies (random-fifo+base, random-fifo+short) x 1 seeds = 2 studies" in proc.stdout
    storage = f"sqlite:///{results / 'benchmark.db'}"
    settings = optuna.load_study(study_name=short, storage=storage).user_attrs["settings"]
    assert settings["fixed"]["epochs"] == 1
    again = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0 and again.stdout.count("2 finished trials, skipped") == 2, again.stderr[-2000:]
    # Asked for one more trial, the variant without a time budget runs it; the one whose
    # recorded run had a time budget is done (its budget, not the count, ended it).
    more = subprocess.run([*command[:command.index("--trials")], "--trials", "3",
                           *command[command.index("--trials") + 2:]],
                          check=False, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert more.returncode == 0, more.stdout[-2000:] + more.stderr[-3000:]
    assert f"{short}: 2 finished trials within its 30-minute time budget, skipped" in more.stdout
    assert f"{base}: running 1 trial(s)" in more.stdout
    finished = {name: record.finished_count(optuna.load_study(study_name=name, storage=storage).trials)
                for name in (base, short)}
    assert finished == {base: 3, short: 2}

"""The whole product at smoke size: real Ray Tune, real Optuna storage, real images."""

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[2]


def run(script, *args, timeout=600):
    return subprocess.run([sys.executable, str(ROOT / "studies" / script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def snapshot(study):
    return [(t.number, t.state, t.value, t.intermediate_values, t.user_attrs) for t in study.trials
            if t.state != TrialState.RUNNING]


@pytest.fixture(scope="module")
def study_run(tiny_cifar, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    common = ["--preset", "smoke", "--data", tiny_cifar, "--data-fraction", "1",
              "--results", results, "--cache-dir", results / "cache"]
    proc = run("run.py", *common, "--trials", 4)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results, common, proc


def test_study_records_true_states_curves_and_attributes(study_run):
    results, common, proc = study_run
    study = optuna.load_study(study_name="resnet_cifar-smoke",
                              storage=f"sqlite:///{results / 'optuna.db'}")
    trials = study.trials
    assert len(trials) == 4
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert TrialState.COMPLETE in {t.state for t in trials}
    # The reference recipes follow the first wave of sampled trials (one per parallel slot, one
    # trial per CPU here), so ASHA's rungs hold results when they arrive; scaled to the preset,
    # they sample nothing.
    from studies import cli, record

    first = min(cli.machine_cpus(), 2)
    recipes = [t.user_attrs.get("recipe") for t in trials]
    assert recipes == [None] * first + ["keras_reference", "torch_reference"] + [None] * (2 - first)
    keras, torch_ref = trials[first], trials[first + 1]
    assert keras.params == {} and keras.user_attrs["config"]["depth"] == 20
    assert torch_ref.user_attrs["config"]["width"] == 8  # capped at the smoke preset's widest
    sampled = [t for t in trials if "recipe" not in t.user_attrs]
    assert len(sampled) == 2 and all(t.params for t in sampled)
    # A 2-epoch budget searches weak augmentation only, and the study records the cap it sampled under.
    assert record.settings_of(study).limits["max_aug_strength"] == 0.1
    assert all(t.params["aug_strength"] <= 0.1 for t in sampled)
    assert study.metric_names == ["val_acc"]
    for t in trials:
        epochs = t.user_attrs["epochs_run"]
        assert sorted(t.intermediate_values) == list(range(1, epochs + 1))
        assert t.user_attrs["train_seconds"] > 0 and t.user_attrs["param_count"] > 0
        assert t.user_attrs["ray_trial_id"] and t.user_attrs["config"]["epochs"] == 2
        if t.state == TrialState.COMPLETE:
            assert epochs == 2 and t.value == t.intermediate_values[2]
        else:
            assert epochs < 2
    # Optuna is asked for a trial only when one of the 2 slots is free, so stored
    # start times (and durations) are when trials really ran, not when they queued.
    for t in trials:
        running = [o for o in trials if o.number != t.number and o.datetime_start < t.datetime_start
                   and (o.datetime_complete - t.datetime_start).total_seconds() > 1.0]
        assert len(running) < 2, (t.number, [o.number for o in running])
    assert (results / "resnet_cifar-smoke" / "leaderboard.html").stat().st_size > 100_000
    out = proc.stdout
    assert "preset: smoke" in out and "rank" in out
    assert f"optuna-dashboard sqlite:///{results / 'optuna.db'} --host 127.0.0.1" in out
    final = next(line for line in out.splitlines() if line.startswith("Final run"))
    assert final.endswith(f"python studies/final.py --study resnet_cifar-smoke --results {results} "
                          f"--data {common[3]}")  # no password here, so nothing kept in the environment


def test_baselines_first_starts_the_study_with_the_reference_recipes(tiny_cifar, tmp_path):
    proc = run("run.py", "--preset", "smoke", "--data", tiny_cifar, "--results", tmp_path, "--trials", 3,
               "--epochs", 1, "--baselines-first", "--cache-dir", tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="resnet_cifar-smoke", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    # Without the flag a 3-trial study on 2 or more CPUs would run one sampled trial first.
    assert [t.user_attrs.get("recipe") for t in study.trials] == ["keras_reference", "torch_reference", None]


def test_final_run_trains_seeds_and_reports_test_accuracy(study_run):
    results, common, _ = study_run
    # The command run.py suggests, without --preset: the study's own (smoke) budget, not this
    # machine's default (quick: 12 minutes a seed).
    no_preset = [a for a in common if a != "--preset" and a != "smoke"]
    proc = run("final.py", "--study", "resnet_cifar-smoke", *no_preset, "--seeds", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "preset: smoke (the preset study 'resnet_cifar-smoke' ran)" in proc.stdout
    out = results / "final" / "resnet_cifar-smoke"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["epochs"] == 2  # the smoke search's epochs
    accs = [r["test_acc"] for r in metrics["runs"]]
    assert len(accs) == 2 and metrics["seeds"] == [0, 1]
    assert metrics["test_acc_mean"] == pytest.approx(sum(accs) / 2)
    assert all(0 <= a <= 1 for a in accs)
    assert metrics["config"]["val_fraction"] == 0.0
    prov = metrics["provenance"]
    assert torch.__version__.startswith(prov["versions"]["torch"]) and prov["versions"]["optuna"]
    assert "git_commit" in prov and prov["python"] and metrics["wall_seconds"] > 0
    assert len(metrics["runs"][0]["confusion"]) == 10
    assert sum(map(sum, metrics["runs"][0]["confusion"])) == 100  # the whole test split
    bundle = torch.load(out / "model_seed0.pt", weights_only=True)  # the model bundle: trainers/bundle.py
    assert "head.weight" in bundle["state_dict"] and bundle["classes"] == metrics["classes"]
    assert "test accuracy" in proc.stdout and "±" in proc.stdout
    assert "seed 1: 100%" in proc.stdout and "2/2" in proc.stdout  # the per-epoch progress bar
    page = (results / "resnet_cifar-smoke" / "leaderboard.html").read_text()
    assert "Final run: the winner on the test split" in page  # final.py rewrote the report


def test_rerun_continues_the_study_without_touching_finished_trials(study_run):
    results, common, _ = study_run
    storage = f"sqlite:///{results / 'optuna.db'}"
    before = snapshot(optuna.load_study(study_name="resnet_cifar-smoke", storage=storage))
    proc = run("run.py", *common, "--trials", 4)
    assert proc.returncode == 0 and "4 finished, running up to 0 more" in proc.stdout
    proc = run("run.py", *common, "--trials", 5)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = snapshot(optuna.load_study(study_name="resnet_cifar-smoke", storage=storage))
    assert after[:4] == before and len(after) == 5


@pytest.mark.slow
def test_top_k_retrains_the_best_distinct_configs_then_the_winner_with_every_seed(study_run):
    shared, common, _ = study_run
    # Its own FIFO study: every trial COMPLETE, so there are two distinct configs to re-train
    # (ASHA stops the fixture's recipes like any other trial, which can leave one COMPLETE).
    results = shared / "fifo"
    common = [*common[:common.index("--results")], "--results", results, "--cache-dir", shared / "cache"]
    proc = run("run.py", *common, "--trials", 3, "--scheduler", "fifo", "--no-baselines")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run("final.py", *common, "--top", 2, "--seeds", 2, "--epochs", 1,
               "--results", results / "top_k")  # its own final folder, same storage
    assert proc.returncode == 2 and "no study storage" in proc.stderr  # --results names the storage too
    proc = run("final.py", *common, "--top", 2, "--seeds", 2, "--epochs", 1,
               "--storage", f"sqlite:///{results / 'optuna.db'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = results / "final" / "resnet_cifar-smoke"
    metrics = json.loads((out / "metrics.json").read_text())
    top = metrics["top"]
    study = optuna.load_study(study_name="resnet_cifar-smoke", storage=f"sqlite:///{results / 'optuna.db'}")
    ranked = sorted((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: (-t.value, t.number))
    assert [t["trial"] for t in top] == [t.number for t in ranked[:2]]
    assert [t["val_acc"] for t in top] == [t.value for t in ranked[:2]]
    for t in top:  # one seed each, at the same budget
        assert (out / "top" / f"trial_{t['trial']}" / "model_seed0.pt").is_file() and t["epochs"] == 1
        assert not (out / "top" / f"trial_{t['trial']}" / "model_seed1.pt").exists()
    winner = max(top, key=lambda t: t["test_acc"])["trial"]
    assert metrics["trial"] == winner and metrics["seeds"] == [0, 1]
    seed0 = json.loads((out / "top" / f"trial_{winner}" / "seed0.json").read_text())["run"]
    assert metrics["runs"][0]["test_acc"] == seed0["test_acc"]  # adopted, not trained again
    assert metrics["test_acc_mean_unselected"] == metrics["runs"][1]["test_acc"]
    assert "search val acc" in proc.stdout and "<- best" in proc.stdout
    page = (results / "resnet_cifar-smoke" / "leaderboard.html").read_text()
    assert "final-top" in page and "Final run: 1 epochs on 100% of train + validation" in page

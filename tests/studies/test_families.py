"""The equal-budget architecture leaderboard: its arithmetic on hand-made results, and one real run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState, create_trial

from dashboards import families as fam
from dashboards import stats
from studies import families as cmd
from studies import record

ROOT = Path(__file__).resolve().parents[2]


def test_pareto_front_keeps_the_points_nothing_beats_for_less():
    acc = [0.80, 0.70, 0.75, 0.60, math.nan, 0.75]
    cost = [100.0, 10.0, 50.0, 20.0, 1.0, 60.0]
    # 0.60 at 20 loses to 0.70 at 10; 0.75 at 60 loses to 0.75 at 50; NaN is never on the front.
    assert fam.pareto_flags(acc, cost) == [True, True, True, False, False, False]
    assert fam.pareto_flags([0.5, 0.5], [1.0, 1.0]) == [True, True]  # equal points dominate neither


def _study(url, family, values):
    study = optuna.create_study(study_name=cmd.study_name(family, "smoke"), storage=url, direction="maximize")
    for value, seconds in values:
        state = TrialState.COMPLETE if value is not None else TrialState.PRUNED
        study.add_trial(create_trial(state=state, value=value, user_attrs={record.TRAIN_SECONDS: seconds}))
    return study


def _metrics(folder: Path, accs, seconds, params, flops, depth=5, width=6):
    folder.mkdir(parents=True)
    runs = [{"seed": i, "test_acc": a, "train_seconds": s} for i, (a, s) in enumerate(zip(accs, seconds))]
    (folder / "metrics.json").write_text(json.dumps({
        "runs": runs, "config": {"depth": depth, "width": width, "epochs": 7},
        "model_cost": {"params": params, "flops": flops}, "final_budget": {"minutes": 1.0}}))
    return folder / "metrics.json"


def test_family_rows_frame_and_page(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    lenet = _study(url, "lenet5", [(0.30, 10.0), (None, 4.0), (0.35, 12.0)])
    vgg = _study(url, "vgg", [(0.50, 40.0), (0.45, 30.0)])
    pruned = _study(url, "alexnet", [(None, 5.0)])
    rows = [
        fam.family_row("lenet5", lenet, _metrics(tmp_path / "l", [0.40, 0.44, 0.41], [60, 62, 61], 62_000, 1e6)),
        fam.family_row("vgg", vgg, _metrics(tmp_path / "v", [0.60, 0.58, 0.62], [300, 310, 290], 9e6, 3e8, 11, 16)),
        fam.family_row("alexnet", pruned, tmp_path / "none" / "metrics.json"),
        fam.family_row("resnet", None, tmp_path / "none" / "metrics.json"),
    ]
    frame = fam.family_frame(rows)
    assert frame["family"].tolist() == ["vgg", "lenet5", "alexnet", "resnet"]  # best test IQM first
    v, lrow = frame.iloc[0], frame.iloc[1]
    assert v["test_acc_iqm"] == pytest.approx((0.58 + 4 * 0.60 + 0.62) / 6)
    assert (v["test_acc_lo"], v["test_acc_hi"]) == pytest.approx(stats.bootstrap_ci([0.60, 0.58, 0.62]))
    assert v["final_train_seconds"] == pytest.approx(300) and v["params"] == 9e6 and v["depth"] == 11
    assert lrow["search_val_acc"] == 0.35 and lrow["trials"] == 3 and lrow["complete"] == 2
    assert lrow["search_train_seconds"] == pytest.approx(26.0)
    # Both are on the front: vgg is more accurate, lenet5 cheaper.
    assert v["pareto_time"] and lrow["pareto_time"] and v["pareto_params"] and lrow["pareto_params"]
    assert frame.iloc[2]["note"] == "no COMPLETE trial to re-train" and frame.iloc[3]["note"] == "not searched yet"
    assert not frame.iloc[2]["pareto_time"]
    page = fam.write_families_page(tmp_path / "p.html", frame, title="T", budget="B").read_text()
    assert 'id="families"' in page and "Most accurate: vgg" in page and page.count("plotly.js v") == 1
    assert "60.0% [" in page and "9.00M" in page and "300.00M" in page  # vgg's IQM, params, FLOPs
    text = fam.text_table(frame)
    assert text.splitlines()[1].startswith("vgg") and "not searched yet" in text


def test_bad_input_gets_one_line(tmp_path):
    for args, expected in ((["--families", "lenet5,vggg"], "--families: unknown model 'vggg' (did you mean 'vgg'?)"),
                           (["--study", "x"], "--study: the leaderboard names its studies"),
                           (["--data", "/no/such"], "data path '/no/such' does not exist")):
        proc = subprocess.run([sys.executable, str(ROOT / "studies" / "families.py"), "--preset", "smoke",
                               "--results", str(tmp_path), *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "optuna.db").exists()


def test_a_study_run_with_other_models_is_refused(tiny_cifar, tmp_path):
    """--models names the families a study chooses from: continuing it with others is refused."""
    base = [sys.executable, str(ROOT / "studies" / "run.py"), "--space", "cifar_zoo", "--preset", "smoke",
            "--data", str(tiny_cifar), "--results", str(tmp_path), "--cache-dir", str(tmp_path / "cache"),
            "--study", "zoo", "--data-fraction", "1"]
    from search_spaces import SpaceLimits
    from studies.presets import PRESETS
    from studies.run import build_settings
    from studies.storage import open_storage, open_study
    from trainers.data import load_dataset

    fixed = {**PRESETS["smoke"].fixed, "data_fraction": 1.0}
    settings = build_settings(space="cifar_zoo", preset="smoke", fixed=fixed,
                              limits=SpaceLimits(models=("vgg",), max_epochs=fixed["epochs"]),
                              data=load_dataset(str(tiny_cifar), cache_dir=tmp_path / "cache").fingerprint(),
                              data_source=str(tiny_cifar), objectives=["val_acc"], sampler="tpe",
                              scheduler="asha", baselines=False, seed=0)
    open_study(open_storage(f"sqlite:///{tmp_path / 'optuna.db'}"), "zoo", settings)
    proc = subprocess.run([*base, "--models", "resnet", "--no-baselines"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: study 'zoo' was run with models vgg, not --models resnet; "
                                   "repeat its models or pass another --study")


@pytest.mark.slow
def test_families_search_and_final_run_each_family_then_rank_them(tiny_cifar, tmp_path):
    results = tmp_path / "results"
    command = [sys.executable, str(ROOT / "studies" / "families.py"), "--preset", "smoke",
               "--families", "lenet5,airbench", "--trials", "2", "--seeds", "2", "--data", str(tiny_cifar),
               "--data-fraction", "1", "--results", str(results), "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    storage = f"sqlite:///{results / 'optuna.db'}"
    for family in ("lenet5", "airbench"):
        study = optuna.load_study(study_name=f"family-{family}-smoke", storage=storage)
        finished = [t for t in study.trials if t.state.is_finished()]
        assert len(finished) == 2
        # Every trial is the family's own: the zoo restricted by --models, no reference recipes.
        assert {t.user_attrs[record.CONFIG]["model"] for t in finished} == {family}
        metrics = json.loads((results / "final" / f"family-{family}-smoke" / "metrics.json").read_text())
        assert len(metrics["runs"]) == 2 and metrics["config"]["model"] == family
        from trainers.models import count_parameters, create_model

        config = metrics["config"]
        model = create_model(family, 10, depth=config["depth"], width=config["width"],
                             drop_path=config["drop_path"])
        assert metrics["model_cost"]["params"] == count_parameters(model) and metrics["model_cost"]["flops"] > 0
    frame = pd.read_csv(results / "families" / "smoke.csv")
    assert sorted(frame["family"]) == ["airbench", "lenet5"] and (frame["seeds"] == 2).all()
    assert frame["test_acc_iqm"].between(0, 1).all() and frame["pareto_time"].any()
    page = (results / "families" / "smoke.html").read_text()
    assert 'id="families"' in page and "Accuracy against train time" in page
    # The same command again: nothing searched or trained twice.
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("search done (2 finished trials), skipped") == 2 and "final run," not in again.stdout
    assert pd.read_csv(results / "families" / "smoke.csv")["test_accs"].tolist() == frame["test_accs"].tolist()

"""Contract tests for dashboards.leaderboard on a real sqlite RDB storage."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from dashboards.leaderboard import format_leaderboard, main, trials_frame, write_report
from tests.dashboards.conftest import build_study, final_metrics

REPO = Path(__file__).resolve().parents[2]
BUNDLE_MARKER = "* plotly.js v"  # the bundle's licence header, once per copy

DISTRIBUTIONS = {
    "depth": IntDistribution(10, 34),
    "lr": FloatDistribution(1e-4, 1.0, log=True),
    "optimizer": CategoricalDistribution(["sgd", "adamw"]),
}


def _attrs(number: int, epochs: int, depth: int, **extra: object) -> dict[str, object]:
    return {
        "epochs_run": epochs,
        "train_seconds": 10.0 * epochs,
        "param_count": 11_173_962,
        "ray_trial_id": f"trial_{number:05d}",
        "config": {"model": "resnet", "depth": depth, "width": 64},
        **extra,
    }


def _add(study: optuna.Study, state: TrialState, params: dict, curve: dict, attrs: dict, value=None) -> None:
    distributions = {name: DISTRIBUTIONS[name] for name in params}
    study.add_trial(
        create_trial(
            state=state,
            value=value,
            params=params,
            distributions=distributions,
            user_attrs=attrs,
            intermediate_values=curve,
        )
    )


@pytest.fixture
def storage_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


@pytest.fixture
def study(storage_url: str) -> optuna.Study:
    """Five trials: two complete, one pruned high, one failed, one without attrs."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="cifar-demo", storage=storage_url, direction="maximize")
    sgd = {"depth": 18, "lr": 0.0123456, "optimizer": "sgd"}
    adamw = {"depth": 34, "optimizer": "adamw"}  # lr absent: a conditional parameter
    # 0: complete, 0.80
    _add(study, TrialState.COMPLETE, sgd, {1: 0.5, 2: 0.7, 3: 0.8}, _attrs(0, 3, 18), value=0.80)
    # 1: complete, 0.90: the best
    _add(study, TrialState.COMPLETE, adamw, {1: 0.6, 2: 0.8, 3: 0.9}, _attrs(1, 3, 34), value=0.90)
    # 2: pruned after 2 epochs at 0.85: ranks second
    _add(study, TrialState.PRUNED, sgd, {1: 0.55, 2: 0.85}, _attrs(2, 2, 18))
    # 3: failed
    _add(study, TrialState.FAIL, sgd, {1: 0.1}, _attrs(3, 1, 18, fail_reason="loss diverged at step 40"))
    # 4: complete but without any user attrs (epochs from its curve)
    _add(study, TrialState.COMPLETE, sgd, {1: 0.4, 2: 0.5}, {}, value=0.50)
    return study


def test_trials_frame_ranks_and_values(study: optuna.Study) -> None:
    frame = trials_frame(study)

    assert list(frame["number"]) == [1, 2, 0, 4, 3]
    assert list(frame["rank"].iloc[:4]) == [1, 2, 3, 4]
    assert pd.isna(frame["rank"].iloc[4])
    by_number = frame.set_index("number")
    assert by_number.loc[2, "val_acc"] == pytest.approx(0.85)  # pruned: its last intermediate value
    assert by_number.loc[2, "state"] == "PRUNED"
    assert math.isnan(by_number.loc[3, "val_acc"])
    assert by_number.loc[3, "fail_reason"] == "loss diverged at step 40"
    assert list(by_number.loc[[0, 2, 4], "epochs"]) == [3, 2, 2]  # trial 4 counts its curve
    assert by_number.loc[0, "model"] == "resnet-18" and by_number.loc[0, "family"] == "resnet"
    assert pd.isna(by_number.loc[4, "model"]) and pd.isna(by_number.loc[4, "param_count"])
    # Params keep their own names; an int parameter stays an integer column.
    assert {"depth", "lr", "optimizer"} <= set(frame.columns)
    assert not any(column.startswith("param_") for column in frame.columns if column != "param_count")
    assert by_number.loc[1, "depth"] == 34 and pd.isna(by_number.loc[1, "lr"])


def test_trials_frame_renames_a_clashing_param(storage_url: str) -> None:
    study = optuna.create_study(study_name="clash", storage=storage_url, direction="maximize")
    study.add_trial(
        create_trial(value=0.5, params={"epochs": 7}, distributions={"epochs": IntDistribution(1, 9)})
    )
    frame = trials_frame(study)
    assert frame.loc[0, "param_epochs"] == 7
    assert frame.loc[0, "epochs"] == 0


def test_format_leaderboard_top_rows(study: optuna.Study) -> None:
    text = format_leaderboard(trials_frame(study), top=3)
    header, *rows = text.splitlines()

    assert header.split()[:4] == ["rank", "trial", "state", "val"]
    assert len(rows) == 3
    assert rows[0].split()[:4] == ["1", "1", "COMPLETE", "90.00%"]
    assert "optimizer=adamw" in rows[0]
    assert "lr=0.0123" in rows[1] and "0.0123456" not in rows[1]  # three significant digits
    assert "11.17M" in rows[1]
    assert len({len(line) for line in [header, *rows] if "=" not in line}) <= 1


def test_write_report_embeds_plotlyjs_once(study: optuna.Study, tmp_path: Path) -> None:
    out = write_report(study, tmp_path / "deep" / "er" / "report.html")

    assert out == tmp_path / "deep" / "er" / "report.html" and out.is_file()
    page = out.read_text(encoding="utf-8")
    assert page.count(BUNDLE_MARKER) == 1
    assert "<script src=" not in page  # nothing fetched: the page works offline
    assert "cifar-demo" in page
    for number in range(5):
        assert f"<td>{number}</td>" in page
    assert "loss diverged at step 40" in page
    assert "90.00%" in page and "pruned (1)" not in page  # trial 2 is top-10, drawn in colour


def test_write_report_without_finished_trials(storage_url: str, tmp_path: Path) -> None:
    study = optuna.create_study(study_name="fresh", storage=storage_url, direction="maximize")
    out = write_report(study, tmp_path / "empty.html")
    assert "No finished trials yet" in out.read_text(encoding="utf-8")

    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "CUDA out of memory"}))
    page = write_report(study, tmp_path / "failed.html").read_text(encoding="utf-8")
    assert "No finished trials yet" in page and "CUDA out of memory" in page
    assert format_leaderboard(trials_frame(study)).splitlines()[1].split()[:3] == ["-", "0", "FAIL"]


def test_main_prints_and_writes(study: optuna.Study, storage_url: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.html"
    code = main(["--study", "cifar-demo", "--storage", storage_url, "--out", str(out), "--top", "2"])

    assert code == 0 and out.is_file()
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4 and printed[-1] == f"wrote {out}"


def test_main_missing_sqlite_file_is_not_created(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.db"
    assert main(["--study", "x", "--storage", f"sqlite:///{missing}"]) == 2
    assert capsys.readouterr().err.startswith("error: storage file not found")
    assert not missing.exists()


def test_cli_unknown_study_exits_2(study: optuna.Study, storage_url: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "dashboards/leaderboard.py", "--study", "nope", "--storage", storage_url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "'nope'" in result.stderr and "cifar-demo" in result.stderr  # lists the studies there
    assert "Traceback" not in result.stderr


def test_a_baseline_the_scheduler_stopped_is_compared_at_its_last_epoch(tmp_path: Path) -> None:
    study = build_study(f"sqlite:///{tmp_path / 's.db'}", recipe="keras_reference", baseline_epochs=1)
    page = write_report(study, tmp_path / "report.html").read_text(encoding="utf-8")
    summary = page[page.index('id="summary"') : page.index('id="cost"')]
    assert "Winner: trial #4 (resnet-18)</b>" in summary
    # At epoch 1 the winner (weaker augmentation) had 1 point more than the baseline's 40.75%.
    assert ("<b>+1.00 points</b> over the baseline at the epoch the scheduler stopped it: trial #0 "
            "(the keras_reference recipe) had 40.75% after 1 epoch, the winner 41.75%") in summary


@pytest.mark.parametrize(("attrs", "named"), [
    ({"recipe": "torch_reference"}, "the torch_reference recipe"),
    ({"start": "resnet_cifar"}, "resnet_cifar's start, the known-good recipe for this budget"),
    ({}, "a configuration given in advance"),  # --enqueue
])
def test_the_baseline_is_named_for_where_it_came_from(tmp_path: Path, attrs: dict, named: str) -> None:
    import html

    study = build_study(f"sqlite:///{tmp_path / 's.db'}", **attrs)
    assert study.trials[0].user_attrs.get("start") == attrs.get("start")
    summary = write_report(study, tmp_path / "report.html").read_text(encoding="utf-8")
    assert f"over the baseline, trial #0 ({html.escape(named)}, " in summary


def _figures(page: str) -> int:
    return page.count('class="plotly-graph-div"')


def test_report_answers_the_readers_questions(demo_study: optuna.Study, tmp_path: Path) -> None:
    page = write_report(demo_study, tmp_path / "report.html").read_text(encoding="utf-8")
    summary = page[page.index('id="summary"') : page.index('id="cost"')]

    # Which configuration won, by how much, at what cost, what mattered.
    assert "Winner: trial #4 (resnet-18)</b>" in summary
    assert "+1.00 points</b> over the baseline, trial #0" in summary
    assert "over the runner-up, trial #0" in summary  # the baseline is also the runner-up here
    assert "240 s of training (the same as the baseline) and 0.70M parameters (the same" in summary
    assert re.search(r"What mattered most: <b>lr</b> \d+%", summary)
    assert "aug_strength=0.05" in summary  # the winner's value of a parameter that mattered
    assert '<table class="data config" id="best-config">' in summary
    # Every section, one plotly.js, one figure each (no final run: no final section).
    for anchor in ("cost", "importance", "trials", "curves", "parallel", "families", "settings"):
        assert f'id="{anchor}"' in page
    assert 'id="final"' not in page
    assert page.count(BUNDLE_MARKER) == 1 and _figures(page) == 5
    assert "PED-ANOVA" in page and "Pareto front" in page
    # The table: one row per trial, the winner highlighted, the baseline named.
    table = page[page.index('id="leaderboard"') :]
    table = table[: table.index("</table>")]
    assert table.count("<tr") == 1 + len(demo_study.trials)
    assert '<tr class="winner"><td>1</td><td>4</td>' in table
    assert "resnet-18 (baseline)" in table and "RUNNING" in table


def test_report_with_a_final_run(demo_study: optuna.Study, tmp_path: Path) -> None:
    metrics = final_metrics(trial=4)
    page = write_report(demo_study, tmp_path / "r.html", final_metrics=metrics).read_text(encoding="utf-8")

    assert 'id="final"' in page and page.count(BUNDLE_MARKER) == 1
    assert _figures(page) == 8  # + per-class accuracy, confusion matrix, training curves
    assert "test accuracy 82.00% ± 2.83% (mean ± std over 2 seeds: 0, 1)" in page
    assert '<table class="data" id="final-seeds">' in page and "0123abcd" in page
    assert "this final run re-trained" not in page

    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(final_metrics(trial=0)))
    page = write_report(demo_study, tmp_path / "p.html", final_metrics=path).read_text(encoding="utf-8")
    assert "The study's best trial is now #4; this final run re-trained #0." in page


def test_report_refuses_another_studys_final_run(demo_study: optuna.Study, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'other'"):
        write_report(demo_study, tmp_path / "r.html", final_metrics=final_metrics(study="other"))
    broken = final_metrics()
    del broken["runs"]
    with pytest.raises(ValueError, match=r"missing key.*runs"):
        write_report(demo_study, tmp_path / "r.html", final_metrics=broken)


def test_main_picks_up_the_final_run(demo_study: optuna.Study, demo_url: str, tmp_path: Path, capsys) -> None:
    results = tmp_path / "results"
    (results / "final" / "cifar-demo").mkdir(parents=True)
    (results / "final" / "cifar-demo" / "metrics.json").write_text(json.dumps(final_metrics(trial=4)))

    assert main(["--study", "cifar-demo", "--storage", demo_url, "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "final run: " in out and out.strip().endswith(
        f"wrote {results / 'cifar-demo' / 'leaderboard.html'}"
    )
    assert 'id="final"' in (results / "cifar-demo" / "leaderboard.html").read_text(encoding="utf-8")


def test_main_without_a_final_run_and_with_a_bad_one(
    demo_study: optuna.Study, demo_url: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "r.html"
    assert (
        main(["--study", "cifar-demo", "--storage", demo_url, "--results", str(tmp_path), "--out", str(out)])
        == 0
    )
    assert "final run" not in capsys.readouterr().out
    assert 'id="final"' not in out.read_text(encoding="utf-8")

    missing = tmp_path / "nope.json"
    assert main(["--study", "cifar-demo", "--storage", demo_url, "--final", str(missing)]) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot read final-run metrics {missing}")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["--study", "cifar-demo", "--storage", demo_url, "--final", str(bad)]) == 2
    assert capsys.readouterr().err.startswith("error: bad final-run metrics:")


def test_dashboards_import_neither_torch_nor_ray() -> None:
    # The study record (studies.record) and the metric names it uses are the
    # only things dashboards/ shares with the rest: no trainer, no Ray, no torch.
    code = (
        "import sys, dashboards.leaderboard, dashboards.compare, dashboards.screenshot, "
        "dashboards.strategy_frames; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray', 'trainers', 'playwright')"
        " and m not in ('trainers', 'trainers.metrics')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"  # playwright only once a screenshot is taken


def test_hostile_strings_from_the_storage_and_metrics_are_escaped(tmp_path):
    from dashboards.report import write_report
    from tests.dashboards.conftest import build_study, final_metrics

    hostile = '<script>alert("x")</script>'
    study = build_study(f"sqlite:///{tmp_path / 'h.db'}", "hostile", n=6, recipe=hostile)
    metrics = {**final_metrics("hostile"), "trial": hostile, "seeds": [hostile, 1]}
    page = write_report(study, tmp_path / "report.html", final_metrics=metrics).read_text()
    assert hostile not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


@pytest.mark.parametrize("scheduler, words", [("asha", "pruned by ASHA"), ("hyperband", "pruned by HyperBand"),
                                              ("median", "pruned by the median stopping rule")])
def test_pruned_trials_are_credited_to_the_study_s_scheduler(tmp_path, scheduler, words):
    from dashboards.report import write_report
    from tests.dashboards.conftest import build_study

    study = build_study(f"sqlite:///{tmp_path / 's.db'}", "sched", n=6, scheduler=scheduler)
    page = write_report(study, tmp_path / "report.html").read_text()
    assert words in page
    assert scheduler == "asha" or "ASHA" not in page

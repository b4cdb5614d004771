"""The cross-study view: two studies in one storage, and studies from two storages."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from dashboards.compare import StudyRun, compare_frame, main, write_comparison
from tests.dashboards.conftest import build_study, final_metrics


@pytest.fixture
def two_studies(tmp_path: Path) -> list[optuna.Study]:
    url = f"sqlite:///{tmp_path / 'two.db'}"
    return [build_study(url, "space-a"), build_study(url, "space-b", n=9, seed=3, family="convnext")]


def test_compare_frame_one_row_per_study(two_studies: list[optuna.Study]) -> None:
    runs = [StudyRun.of(two_studies[0], final=final_metrics("space-a", 4)), StudyRun.of(two_studies[1])]
    frame = compare_frame(runs)

    assert list(frame["study"]) == ["space-a", "space-b"]  # best first
    a = frame.iloc[0]
    assert (a["trials"], a["complete"], a["pruned"], a["failed"], a["best_trial"]) == (20, 5, 13, 1, 4)
    assert a["test_acc_mean"] == pytest.approx(0.82) and a["space"] == "resnet_cifar"
    assert a["search_seconds"] > a["train_seconds"] > 0
    assert frame.iloc[1]["test_acc_mean"] != frame.iloc[1]["test_acc_mean"]  # NaN: no final run


def test_write_comparison_page(two_studies: list[optuna.Study], tmp_path: Path) -> None:
    page = write_comparison([StudyRun.of(study) for study in two_studies], tmp_path / "c.html")
    text = page.read_text(encoding="utf-8")

    assert text.count("* plotly.js v") == 1 and "<script src=" not in text
    assert text.count('class="plotly-graph-div"') == 3  # anytime, cost, importances
    for anchor in ("summary", "winners", "anytime", "cost", "importance"):
        assert f'id="{anchor}"' in text
    table = text[text.index('id="comparison"') :]
    assert table[: table.index("</table>")].count("<tr") == 3
    assert "<b>Best: space-a</b>" in text


def test_cli_compares_studies_from_two_storages(tmp_path: Path, capsys) -> None:
    first, second = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    build_study(first, "run-1")
    build_study(first, "other")
    build_study(second, "run-1", n=6, seed=1)
    results = tmp_path / "results"
    (results / "final" / "other").mkdir(parents=True)
    (results / "final" / "other" / "metrics.json").write_text(json.dumps(final_metrics("other", 4)))

    args = ["--storage", first, "--storage", second, "--results", str(results)]
    assert main([*args, "--study", "run-1"]) == 0
    out = capsys.readouterr().out
    assert f"run-1 ({first})" in out and f"run-1 ({second})" in out and "other" not in out
    assert (results / "compare.html").is_file()

    assert main([*args, "--out", str(tmp_path / "all.html")]) == 0
    page = (tmp_path / "all.html").read_text(encoding="utf-8")
    assert "82.00% ± 2.83%" in page  # the final run of "other", found under RESULTS/final

    assert main([*args, "--study", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: study 'nope' not found") and "run-1" in err

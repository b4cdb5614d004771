"""The report and optuna-dashboard opened in a real headless Chromium (Debian's, driven by playwright).

Skipped only when no Chromium is installed (.ci/run installs it). Screenshots
land in the test's tmp folder; set TUNEBENCH_SCREENSHOTS=DIR to keep copies.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from dashboards.compare import StudyRun, write_comparison
from dashboards.report import write_report
from dashboards.screenshot import chromium, find_chromium, serve_dashboard, wait_for_plots
from tests.dashboards.conftest import build_study, final_metrics

pytestmark = pytest.mark.skipif(
    find_chromium() is None, reason="no chromium installed (apt-get install chromium, or set $CHROMIUM)"
)

# What each drawn Plotly figure must hold: traces, a size, and marks in its SVG (or parcoords axes).
_PLOT_STATS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(p => ({
    traces: (p._fullData || []).length,
    width: p.getBoundingClientRect().width,
    height: p.getBoundingClientRect().height,
    marks: p.querySelectorAll([
        '.scatterlayer .point', '.scatterlayer .js-line', '.barlayer .point',
        '.heatmaplayer image', '.parcoords .y-axis',
    ].join(', ')).length,
}))"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as context:
        yield context


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, optuna.Study]:
    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'optuna.db'}"
    return url, build_study(url)


def _keep(shot: Path) -> None:
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    if os.environ.get("TUNEBENCH_SCREENSHOTS"):
        folder = Path(os.environ["TUNEBENCH_SCREENSHOTS"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, folder / shot.name)


def _open_offline(browser: Any, path: Path) -> tuple[Any, list[str]]:
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(path.resolve().as_uri())
    return page, requests


def test_report_renders_every_figure(browser: Any, stored: tuple[str, optuna.Study], tmp_path: Path) -> None:
    _, study = stored
    report = write_report(study, tmp_path / "report.html", final_metrics=final_metrics(trial=4))
    page, requests = _open_offline(browser, report)
    try:
        wait_for_plots(page, 8)  # cost, importance, curves, parallel, families, per class, confusion, history
        stats = page.evaluate(_PLOT_STATS)
        assert all(s["traces"] > 0 and s["marks"] > 0 for s in stats), stats
        assert all(s["width"] > 300 and s["height"] > 200 for s in stats), stats
        assert page.locator("#leaderboard tbody tr").count() == len(study.trials)
        assert page.locator("#leaderboard tr.winner td").nth(1).inner_text() == "4"
        assert "Winner: trial #4" in page.locator("#summary").inner_text()
        assert "WebGL" not in page.inner_text("body")  # parcoords drew (no "WebGL not supported")
        assert all(url.startswith(("file:", "data:", "blob:")) for url in requests), requests  # offline
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        _keep(shot)
    finally:
        page.close()


def test_comparison_renders(browser: Any, stored: tuple[str, optuna.Study], tmp_path: Path) -> None:
    _, study = stored
    other = build_study(f"sqlite:///{tmp_path / 'b.db'}", "space-b", n=8, seed=5, family="convnext")
    page, _ = _open_offline(
        browser, write_comparison([StudyRun.of(study), StudyRun.of(other)], tmp_path / "c.html")
    )
    try:
        wait_for_plots(page, 3)
        stats = page.evaluate(_PLOT_STATS)
        assert all(s["traces"] > 0 and s["marks"] > 0 for s in stats), stats
        assert page.locator("#comparison tbody tr").count() == 2
    finally:
        page.close()


def test_optuna_dashboard_shows_our_trials(
    browser: Any, stored: tuple[str, optuna.Study], tmp_path: Path
) -> None:
    url, study = stored
    study_id = study._study_id  # the id in the dashboard's URLs; the storage holds one study
    states = {t.state.name.title() for t in study.trials}  # Complete, Pruned, Fail, Running
    with serve_dashboard(url) as base:
        assert base.startswith("http://127.0.0.1:")
        page = browser.new_page()
        try:
            page.goto(f"{base}/dashboard")
            page.get_by_text("cifar-demo").first.wait_for()
            assert "Direction: MAXIMIZE" in page.inner_text("body")

            # The study page: the objective is named, the history plot drew every finished trial.
            page.goto(f"{base}/dashboard/studies/{study_id}")
            page.get_by_text(f"cifar-demo (id={study_id})").first.wait_for()
            finished = sum(t.state.is_finished() for t in study.trials)
            page.wait_for_function(
                """n => [...document.querySelectorAll('.js-plotly-plot')]
                    .some(p => p.querySelectorAll('.scatterlayer .point').length >= n)""",
                arg=finished - 1,  # the failed trial has no value to plot
            )
            body = page.inner_text("body")
            assert "val_acc" in body and "Objective 0" not in body
            page.screenshot(path=str(tmp_path / "dashboard.png"))
            _keep(tmp_path / "dashboard.png")

            # The trial list: every trial and state; the winner's curve (one value per epoch) and attributes.
            page.goto(f"{base}/dashboard/studies/{study_id}/trials?numbers=4")
            page.get_by_text("ray_trial_id").first.wait_for()
            body = page.inner_text("body")
            assert f"{len(study.trials)} Trials" in body
            assert all(f"Trial {t.number}" in body for t in study.trials)
            assert states == {"Complete", "Pruned", "Fail", "Running"} and all(s in body for s in states)
            curve = body[body.index("Intermediate Values") : body.index("Parameter")]
            assert [line.split()[0] for line in curve.splitlines()[1:] if line.strip()] == [
                str(e) for e in range(1, 7)
            ]
            for attr in ("epochs_run", "train_seconds", "param_count", "ray_trial_id ray0004", "node_ip"):
                assert attr in body, attr
            page.screenshot(path=str(tmp_path / "dashboard-trial.png"))
            _keep(tmp_path / "dashboard-trial.png")

            # A failed trial shows why.
            page.get_by_text(f"Trial {len(study.trials) - 2}", exact=True).click()
            page.get_by_text("fail_reason").first.wait_for()
            assert "the study was interrupted" in page.inner_text("body")
        finally:
            page.close()

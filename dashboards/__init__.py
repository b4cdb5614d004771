"""Read finished studies (Optuna storage, result files) and draw them.

Nothing here trains or samples: modules import pandas, Plotly and Optuna's
storage and importance APIs only (screenshot.py adds playwright, a test/docs
tool, imported inside its functions).

    frame.py        a study's trials as a pandas frame; the terminal leaderboard
    importance.py   which hyperparameters mattered (Optuna's PED-ANOVA)
    figures.py      Plotly figures of one study
    final_run.py    the final run's metrics.json as report blocks
    page.py         self-contained HTML pages (plotly.js embedded once)
    report.py       one study's HTML report
    leaderboard.py  command line: python dashboards/leaderboard.py --study NAME
    compare.py      command line: several studies on one page
    screenshot.py   command line: the README's screenshots, in headless Chromium
    sources.py      opening storages with errors a user can act on

The package does not re-export its modules so that ``python -m`` runs them
without importing them twice.
"""

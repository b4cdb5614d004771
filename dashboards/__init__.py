"""Read finished studies (Optuna storage, result files) and draw them.

Nothing here trains or samples: modules import pandas, Plotly and Optuna's
storage API only. Each module is also a command-line entry point, e.g.
``python -m dashboards.leaderboard --study NAME``. The package does not
re-export its modules so that ``python -m`` runs them without importing
them twice.
"""

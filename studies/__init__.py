"""Entry points: studies (run.py), final runs (final.py), prediction and export, benchmarks.

The Python API a notebook uses is the command line's own code:

    from studies import run_study, final_run
    study = run_study(space="my_space.py", preset="smoke", trials=4, data="cifar10.tar.gz")
    metrics = final_run(study=study.study_name, seeds=1, data="cifar10.tar.gz")
"""

from __future__ import annotations

from typing import Any

__all__ = ["final_run", "run_study"]


def run_study(**options: Any) -> Any:
    """Runs a study and returns its ``optuna.Study``; see :func:`studies.run.run_study`."""
    from studies.run import run_study as run

    return run(**options)


def final_run(**options: Any) -> dict[str, Any]:
    """Re-trains a study's best config on train+validation, reports the test split, returns
    the metrics; see :func:`studies.final.final_run`."""
    from studies.final import final_run as run

    return run(**options)

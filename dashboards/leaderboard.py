"""Leaderboard of one Optuna study: a pandas frame, a terminal table, an HTML report.

Reads the storage (and the final run's metrics.json, when there is one) only.
Run from the repository root::

    python dashboards/leaderboard.py --study NAME [--storage URL] [--results DIR]
                                     [--final PATH] [--out PATH] [--top N]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna

from dashboards.final_run import budget_line, final_path, load_final_metrics
from dashboards.frame import FIXED_COLUMNS, METRIC, format_leaderboard, trials_frame
from dashboards.report import write_report
from dashboards.sources import DEFAULT_STORAGE, UserError, open_study
from studies.record import study_folder

__all__ = [
    "DEFAULT_STORAGE",
    "FIXED_COLUMNS",
    "METRIC",
    "format_leaderboard",
    "main",
    "trials_frame",
    "write_report",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Prints a study's leaderboard and writes its HTML report.

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` when None.

    Returns:
        The exit status: 0, or 2 after a one-line ``error: ...`` on stderr.
    """
    args = _parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if not args.out:
            try:
                out = study_folder(args.results, args.study) / "leaderboard.html"
            except ValueError as error:
                raise UserError(f"{error}; pass --out FILE") from None
        else:
            out = Path(args.out)
        study = open_study(args.study, args.storage)
        final = _final(args)
        print(format_leaderboard(trials_frame(study), args.top))
        try:
            out = write_report(study, out, final_metrics=final)
        except OSError as error:
            raise UserError(f"cannot write {out}: {error.strerror or error}") from None
        except ValueError as error:
            raise UserError(str(error)) from None
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if final is not None:
        print(f"final run: {args.final or final_path(args.study, args.results)}")  # a valid name here
        if budget_line(final):
            print(budget_line(final))
    print(f"wrote {out}")
    return 0


def _final(args: argparse.Namespace) -> dict | None:
    # An explicit --final must exist; the default location is used only when it does.
    try:
        path = Path(args.final) if args.final else final_path(args.study, args.results)
    except ValueError:
        return None  # a name that cannot name a folder has no final run under --results
    if not args.final and not path.is_file():
        return None
    try:
        return load_final_metrics(path)
    except OSError as error:
        raise UserError(f"cannot read final-run metrics {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise UserError(f"bad final-run metrics: {error}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument(
        "--storage", default=DEFAULT_STORAGE, help="Optuna storage URL (default: %(default)s)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="results folder of the run (default: %(default)s)",
    )
    parser.add_argument(
        "--final", help="final-run metrics.json (default: RESULTS/final/STUDY/metrics.json when it exists)"
    )
    parser.add_argument("--out", help="HTML file to write (default: RESULTS/STUDY/leaderboard.html)")
    parser.add_argument("--top", type=_positive_int, default=10, help="rows to print (default: %(default)s)")
    return parser


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


if __name__ == "__main__":
    sys.exit(main())

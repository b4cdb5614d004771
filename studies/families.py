"""Rank architecture families at an equal budget: search each, final-run each one's best, one page.

    python studies/families.py --preset quick --data PATH \\
        [--families lenet5,vgg,resnet,airbench] [--trials 8] [--time-budget 10] [--seeds 3] [--minutes 4]

For each family, a study of the cifar_zoo space restricted to it (its own
depths, widths and drop-path, plus the shared augmentation and optimiser
knobs), ``family-FAMILY-PRESET``, run by studies/run.py with ``--models
FAMILY --no-baselines``: the same preset, trials, time budget and sampler seed
for every family. Then studies/final.py re-trains each family's best trial on
train + validation with ``--seeds`` seeds at ``--minutes`` per seed (the same
for every family) and tests it. Each runs in its own process, logged under
RESULTS/families/logs/. Re-running the command skips finished studies and
seeds. Writes RESULTS/families/PRESET.html and PRESET.csv (dashboards/families.py):
test accuracy as the IQM over seeds with a bootstrap 95% interval, cost (train
time, parameters, FLOPs, search compute) and the Pareto front across families.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studies import cli, record
from studies.child import run_child
from studies.presets import PRESETS
from trainers.errors import UserError

__all__ = ["main", "study_name"]

_ROOT = Path(__file__).resolve().parents[1]
SPACE = "cifar_zoo"  # the space that chooses the family, restricted to one by --models


def study_name(family: str, preset: str) -> str:
    """The study a family's search runs as, e.g. ``family-resnet-quick``."""
    return record.check_study_name(f"family-{family}-{preset}")


def _parser() -> cli.Parser:
    parser = cli.Parser(description=__doc__.split("\n")[0])
    cli.add_common(parser)
    cli.reword(parser, study=None, space=None)  # one study per family, of the cifar_zoo space
    parser.add_argument("--families", help="comma-separated model families (default: every built-in one)")
    parser.add_argument("--trials", type=cli.positive_int,
                        help="finished trials per family's study (default: the preset's)")
    parser.add_argument("--time-budget", type=cli.positive_float, metavar="MINUTES",
                        help="also stop each family's search after this many minutes (the same for all)")
    parser.add_argument("--seed", type=cli.seed, default=0, help="sampler seed of every study (default 0)")
    parser.add_argument("--seeds", type=cli.positive_int, default=3,
                        help="final-run seeds per family (default 3)")
    parser.add_argument("--minutes", type=cli.positive_float,
                        help="final-run training minutes per seed, the same for every family "
                        "(default: the preset's; smoke and full keep the search's epochs)")
    parser.add_argument("--cpus-per-trial", type=cli.non_negative_float,
                        help="CPUs per trial (default: 1, or 2 with a GPU)")
    parser.add_argument("--threads", type=cli.positive_int, help="final runs' torch threads (default: all cores)")
    return parser


@cli.main_wrapper
def main(argv: Sequence[str] | None = None) -> int:
    """Runs the missing searches and final runs, then writes and prints the leaderboard.

    Returns:
        The exit status: 0; 2 after a one-line ``error: ...`` for bad input;
        1 when a child crashed (its log is named); 130 on Ctrl-C.
    """
    args = cli.parse(_parser(), argv)
    if args.study:
        raise UserError("--study: the leaderboard names its studies family-FAMILY-PRESET")
    cli.quiet_optuna()
    from dashboards.families import family_frame, text_table, write_families_page
    from studies import storage as st
    from studies.run import parse_models
    from trainers.models import builtin_models, list_models
    from trainers.plugins import load_plugins

    load_plugins(args.plugin)
    families = list(parse_models(args.families, list_models(), "--families")) if args.families else builtin_models()
    if args.data and not Path(args.data).exists():
        raise UserError(f"data path {args.data!r} does not exist; pass --data with CIFAR-10 or your dataset")
    preset_name, why = cli.pick_preset(args.preset)
    preset = PRESETS[preset_name]
    trials = args.trials or preset.trials
    minutes = args.minutes or preset.final_minutes
    results = cli.writable_folder(args.results, "--results")
    storage_url = cli.storage_url(args)
    storage = st.open_storage(storage_url, stale_after=None)
    budget = (f"Equal budget per family: a search of {trials} finished trials of the {preset_name} preset "
              f"({preset.fixed['epochs'] if not args.epochs else args.epochs} epochs on "
              f"{(args.data_fraction or preset.fixed['data_fraction']):.0%} of train"
              + (f", at most {args.time_budget:g} min" if args.time_budget else "")
              + f", sampler seed {args.seed}), then the best trial re-trained on train + validation with "
              f"{args.seeds} seeds at " + (f"{minutes:g} min per seed" if minutes else "the search's epochs")
              + ", tested on the test split.")
    print(f"preset: {preset_name} ({why})\n{len(families)} families: {', '.join(families)}\n{budget}", flush=True)

    env = {cli.STORAGE_ENV: storage_url}  # by environment: a password stays out of commands and logs
    common = [*_pass(args, "--data", "--cache-dir", "--image-size"), "--results", str(results),
              "--preset", preset_name, *[f for p in args.plugin for f in ("--plugin", p)]]
    try:
        rows = [_family(args, family, f"[{i}/{len(families)}] {family}", storage, preset_name, trials, minutes,
                        common, env) for i, family in enumerate(families, 1)]
    except RuntimeError as err:  # a crash, not the user's mistake: its log is named
        print(f"error: {err}", file=sys.stderr)
        return 1

    frame = family_frame(rows)
    folder = results / "families"
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / f"{preset_name}.csv"
    frame.to_csv(csv, index=False)
    page = write_families_page(folder / f"{preset_name}.html", frame,
                               title=f"Architecture families at an equal budget ({preset_name} preset)",
                               budget=budget)
    print(f"\n{budget}\ntest accuracy: interquartile mean over seeds [percentile bootstrap 95% interval]")
    print(text_table(frame))
    print(f"\nHTML: {page.resolve()}\nCSV: {csv.resolve()}")
    return 0


_RUNS = "families_runs"  # the study attribute: wall seconds of each search run by this command


def _family(args: argparse.Namespace, family: str, tag: str, storage: Any, preset: str, trials: int,
            minutes: float | None, common: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Searches one family and final-runs its best trial, each unless done; returns its leaderboard row."""
    from dashboards.families import family_row

    name, logs = study_name(family, preset), args.results / "families" / "logs"
    study = _load(storage, name)
    done = record.finished_count(study.get_trials(deepcopy=False)) if study else 0
    if study is not None and (done >= trials or (args.time_budget and study.user_attrs.get(_RUNS))):
        print(f"{tag}: search done ({done} finished trials), skipped", flush=True)
    else:
        command = [sys.executable, str(_ROOT / "studies" / "run.py"), "--space", SPACE, "--models", family,
                   "--no-baselines", "--study", name, "--trials", str(trials), "--seed", str(args.seed),
                   *common, *_pass(args, "--epochs", "--data-fraction", "--time-budget", "--cpus-per-trial")]
        print(f"{tag}: searching, {trials - done} trial(s) (log: {logs / (name + '.log')})", flush=True)
        seconds = run_child(command, logs / f"{name}.log", f"family {family}'s search", env)
        study = _load(storage, name)
        study.set_user_attr(_RUNS, [*study.user_attrs.get(_RUNS, []), round(seconds, 1)])
        print(f"{tag}: search done in {seconds / 60:.1f} min", flush=True)
    metrics = record.study_folder(args.results / "final", name) / "metrics.json"
    if record.best_trial(study.get_trials(deepcopy=False), "maximize") is None:
        print(f"{tag}: no COMPLETE trial, so no final run", flush=True)
    elif not _final_done(metrics, args.seeds, minutes):
        command = [sys.executable, str(_ROOT / "studies" / "final.py"), "--study", name,
                   "--seeds", str(args.seeds), *common, *_pass(args, "--threads"),
                   *(["--minutes", f"{minutes:g}"] if minutes else [])]
        print(f"{tag}: final run, {args.seeds} seed(s) (log: {logs / (name + '-final.log')})", flush=True)
        seconds = run_child(command, logs / f"{name}-final.log", f"family {family}'s final run", env)
        print(f"{tag}: final run done in {seconds / 60:.1f} min", flush=True)
    return family_row(family, study, metrics)


def _pass(args: argparse.Namespace, *flags: str) -> list[str]:
    out = []
    for flag in flags:
        value = getattr(args, flag.removeprefix("--").replace("-", "_"), None)
        if value is not None:
            out += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return out


def _load(storage: Any, name: str) -> Any:
    import optuna

    if name not in optuna.get_all_study_names(storage):
        return None
    return optuna.load_study(study_name=name, storage=storage)


def _final_done(metrics: Path, seeds: int, minutes: float | None) -> bool:
    """A final run of this many seeds and this budget already wrote its metrics."""
    import json

    if not metrics.is_file():
        return False
    try:
        done = json.loads(metrics.read_text())
    except (OSError, ValueError):
        return False
    budget = done.get("final_budget") or {}
    return len(done.get("runs") or []) >= seeds and budget.get("minutes") == minutes


if __name__ == "__main__":
    sys.exit(main())

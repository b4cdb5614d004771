"""Run a hyperparameter study: Optuna samples, Ray Tune schedules, ASHA prunes.

    python studies/run.py --space resnet_cifar [--preset quick] [--data PATH]

Re-running the same command continues the study up to ``--trials`` finished
trials; every finished trial stays in the Optuna storage.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studies import cli
from studies.presets import PRESETS
from studies.strategies import SAMPLERS, SCHEDULER_NAMES, make_sampler
from trainers.errors import UserError


def _space_with_fixed(trial: Any, space: Any, limits: Any, fixed: dict[str, Any]) -> dict[str, Any]:
    """The trial's whole config: the preset's fixed keys plus the space's samples.

    A baseline trial (enqueued with a ``recipe`` user attribute) samples nothing:
    it runs the named recipe scaled to the preset, so Optuna's record of it holds
    no made-up parameters. Module-level (not a lambda) so Ray can pickle it.
    """
    from trainers.recipes import get_recipe

    recipe = trial.user_attrs.get("recipe")
    if recipe:
        return get_recipe(recipe, epochs=fixed["epochs"], data_fraction=fixed["data_fraction"],
                          max_width=max(limits.widths)).to_dict()
    return {**fixed, **space(trial, limits)}


def _parser() -> cli.Parser:
    parser = cli.Parser(description=__doc__.split("\n")[0])
    cli.add_common(parser)
    parser.add_argument("--trials", type=cli.positive_int, help="finished trials wanted (default: preset's)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    parser.add_argument("--cpus-per-trial", type=cli.non_negative_float,
                        help="CPUs per trial; also its torch threads (default: 1, or 2 with a GPU)")
    parser.add_argument("--gpus-per-trial", type=cli.non_negative_float,
                        help="GPUs per trial, fractions pack trials on one GPU (default: 1 if visible)")
    parser.add_argument("--address", help="join an existing Ray cluster (e.g. auto or HOST:6379)")
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), default="tpe",
                        help="Optuna sampler that proposes trials (default: tpe)")
    parser.add_argument("--objectives", default="val_acc",
                        help="comma-separated metrics to optimise, e.g. val_acc,train_seconds for a "
                        "multi-objective study reporting its Pareto front (default: val_acc)")
    parser.add_argument("--scheduler", choices=SCHEDULER_NAMES, default="asha",
                        help="Ray scheduler that stops weak trials (default: asha; fifo stops none)")
    parser.add_argument("--no-baselines", action="store_true",
                        help="do not start the study with the reference recipes (torch_reference, "
                             "keras_reference): every trial is the sampler's")
    return parser


@cli.main_wrapper
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import warnings

    import optuna
    import torch

    # set_metric_names and some samplers are "experimental" in Optuna 5: say it once, here.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    from search_spaces import get_space
    from studies import storage as st
    from trainers.data import load_dataset, make_splits
    from trainers.recipes import list_recipes

    space = get_space(args.space)
    objectives = st.parse_objectives(args.objectives)
    preset_name, why = cli.pick_preset(args.preset)
    preset = PRESETS[preset_name]
    print(f"preset: {preset_name} ({why})")
    fixed = {**preset.fixed}
    if args.epochs:
        fixed["epochs"] = args.epochs
    if args.data_fraction:
        fixed["data_fraction"] = args.data_fraction
    limits = dataclasses.replace(preset.limits, max_epochs=fixed["epochs"])
    trials_wanted = args.trials or preset.trials
    gpu = torch.cuda.is_available()
    gpus = args.gpus_per_trial if args.gpus_per_trial is not None else (1.0 if gpu else 0.0)
    cpus = args.cpus_per_trial if args.cpus_per_trial is not None else (2.0 if gpu else 1.0)
    if gpus > 0 and not gpu and not args.address:
        raise UserError(f"--gpus-per-trial {gpus:g} but no GPU is visible; drop it or use --address")
    if cpus <= 0:
        raise UserError("--cpus-per-trial must be above 0")

    t0 = time.perf_counter()
    dataset = load_dataset(args.data, cache_dir=args.cache_dir)
    splits = make_splits(dataset, val_fraction=0.1, data_fraction=fixed["data_fraction"], seed=0)
    print(f"data: {dataset.source}: {len(splits.train_x)} train / {len(splits.val_x)} validation "
          f"images, {splits.num_classes} classes, {dataset.image_size}px "
          f"(loaded in {time.perf_counter() - t0:.1f}s; the test split is kept for the final run)")

    results = args.results
    storage_url = args.storage or cli.default_storage(results)
    study_name = args.study or "-".join([args.space, preset_name, *objectives[1:]])
    storage = st.open_storage(storage_url)
    data_id = str(Path(args.data).resolve()) if args.data else "cifar10-download"
    settings = {"space": args.space, "preset": preset_name, "fixed": fixed,
                "data": data_id, "split_seed": 0, "val_fraction": 0.1}
    if len(objectives) > 1:  # single-objective studies keep their settings as they were
        settings["objectives"] = objectives
    if args.no_baselines:  # likewise: only recorded when it differs from the default
        settings["baselines"] = False
    study = st.open_study(storage, study_name, settings, objectives=objectives)
    stale = st.fail_stale_trials(study)
    if stale:
        print(f"marked {len(stale)} trial(s) left RUNNING by a stopped run as FAIL: {stale}")
    done = st.finished_count(study)
    remaining = trials_wanted - done
    print(f"study {study_name!r} in {storage_url}: {done} finished, running {max(0, remaining)} more")

    if remaining > 0:
        if not study.trials and not args.no_baselines:  # the baselines to beat come first
            for name in list_recipes():
                study.enqueue_trial({}, user_attrs={"recipe": name})
        from studies.tune_adapter import run_trials

        # A resumed run must not replay the first run's draws: offset the seed.
        sampler = make_sampler(args.sampler, args.seed + len(study.trials), trials_wanted)
        run_trials(
            space=functools.partial(_space_with_fixed, space=space, limits=limits, fixed=fixed),
            study_name=study_name, storage=storage, sampler=sampler, num_trials=remaining,
            splits=splits, max_epochs=fixed["epochs"], grace_period=preset.grace_period,
            reduction_factor=preset.reduction_factor, cpus_per_trial=cpus, gpus_per_trial=gpus,
            results_dir=results / "ray", run_name=f"{study_name}-{time.strftime('%Y%m%d-%H%M%S')}",
            address=args.address, scheduler=args.scheduler, objectives=objectives,
        )
    _summarise(optuna.load_study(study_name=study_name, storage=storage), storage_url, results,
               args, time.perf_counter() - t0)
    return 0


def _summarise(study: Any, storage_url: str, results: Path, args: Any, seconds: float) -> None:
    import optuna

    from dashboards.final_run import final_path
    from dashboards.leaderboard import format_leaderboard, trials_frame, write_report

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the report's in-memory studies
    if len(study.directions) > 1:
        _summarise_pareto(study, storage_url, results, seconds)
        return
    frame = trials_frame(study)
    states = frame["state"].value_counts().to_dict() if len(frame) else {}
    print(f"\nstudy {study.study_name!r}: {len(frame)} trials {states}, {seconds / 60:.1f} min")
    print(format_leaderboard(frame, top=10))
    final = final_path(study.study_name, results)
    report = write_report(study, results / study.study_name / "leaderboard.html",
                          final_metrics=final if final.is_file() else None)
    print(f"\nHTML leaderboard: {report.resolve()}")
    print(f"Optuna dashboard: optuna-dashboard {_absolute(storage_url)} --host 127.0.0.1 --port 8080")
    final = f"python studies/final.py --study {study.study_name}"
    if args.storage:
        final += f" --storage {args.storage}"
    if args.data:
        final += f" --data {args.data}"
    print(f"Final run (best config, 3 seeds, test split): {final}")


def _summarise_pareto(study: Any, storage_url: str, results: Path, seconds: float) -> None:
    from dashboards.pareto import format_pareto, write_pareto_report

    print(f"\nstudy {study.study_name!r}: {len(study.trials)} trials, {seconds / 60:.1f} min")
    print(format_pareto(study))
    report = write_pareto_report(study, results / study.study_name / "pareto.html")
    print(f"\nHTML Pareto front: {report.resolve()}")
    print(f"Optuna dashboard: optuna-dashboard {_absolute(storage_url)} --host 127.0.0.1 --port 8080")


def _absolute(url: str) -> str:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).resolve())
    return url


if __name__ == "__main__":
    sys.exit(main())

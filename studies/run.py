"""Run a hyperparameter study: Optuna samples, Ray Tune schedules, ASHA prunes.

    python studies/run.py --space resnet_cifar [--preset quick] [--data PATH]

Re-running the same command continues the study up to ``--trials`` finished
trials; every finished trial stays in the Optuna storage.
"""

from __future__ import annotations

import argparse
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

from studies import cli, record
from studies.presets import PRESETS
from studies.storage import DEFAULT_STALE_AFTER
from studies.strategies import SAMPLERS, SCHEDULER_NAMES, make_sampler
from trainers import metrics as M
from trainers.errors import UserError


def _space_with_fixed(trial: Any, space: Any, limits: Any, fixed: dict[str, Any]) -> dict[str, Any]:
    """The trial's whole config: the preset's fixed keys plus the space's samples.

    A baseline trial (enqueued with a ``recipe`` user attribute) samples nothing:
    it runs the named recipe scaled to the preset, so Optuna's record of it holds
    no made-up parameters. Module-level (not a lambda) so Ray can pickle it.
    """
    from trainers.config import TrialConfig
    from trainers.recipes import get_recipe

    recipe = trial.user_attrs.get(record.RECIPE)
    if recipe:
        return get_recipe(recipe, epochs=fixed["epochs"], data_fraction=fixed["data_fraction"],
                          max_width=max(limits.widths)).to_dict()
    config = space(trial, limits)
    if not isinstance(config, dict):
        raise TypeError(f"a search space must return a dict, got {type(config).__name__}")
    # Whole and checked here: a bad config fails its trial with the reason, before a worker starts.
    return TrialConfig.from_dict({**fixed, **config}).to_dict()


def _parser() -> cli.Parser:
    parser = cli.Parser(description=__doc__.split("\n")[0])
    cli.add_common(parser)
    parser.add_argument("--trials", type=cli.positive_int, help="finished trials wanted (default: preset's)")
    parser.add_argument("--seed", type=cli.seed, default=0, help="sampler seed in [0, 2**32) (default 0)")
    parser.add_argument("--cpus-per-trial", type=cli.non_negative_float,
                        help="CPUs per trial; also its torch threads (default: 1, or 2 with a GPU)")
    parser.add_argument("--gpus-per-trial", type=cli.non_negative_float,
                        help="GPUs per trial, fractions pack trials on one GPU (default: 1 if visible)")
    parser.add_argument("--address", help="join an existing Ray cluster (e.g. auto or HOST:6379)")
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), default="tpe",
                        help="Optuna sampler that proposes trials (default: tpe)")
    parser.add_argument("--objectives", default=M.VAL_ACC,
                        help="comma-separated metrics to optimise, e.g. val_loss, or val_acc,train_seconds "
                        "for a multi-objective study reporting its Pareto front (default: val_acc); "
                        "other objectives than the default make another study (its name says them)")
    parser.add_argument("--scheduler", choices=SCHEDULER_NAMES, default="asha",
                        help="Ray scheduler that stops weak trials (default: asha; fifo stops none)")
    parser.add_argument("--grace-period", type=cli.positive_int, metavar="EPOCHS",
                        help="epochs every trial runs before ASHA (or Hyperband) may stop it "
                        "(default: the preset's: smoke and quick 1, full 3)")
    parser.add_argument("--no-baselines", action="store_true",
                        help="do not run the reference recipes (torch_reference, "
                             "keras_reference): every trial is the sampler's")
    parser.add_argument("--baselines-first", action="store_true",
                        help="start the reference recipes before any sampled trial (by default they start "
                        "after the first trial of each parallel slot, so ASHA's rungs hold results when "
                        "they arrive and stop them like any other trial; first, ASHA runs them in full)")
    parser.add_argument("--no-start", action="store_true",
                        help="do not try the space's known-good start for this budget first (resnet_cifar "
                        "on at most 10 epochs; ASHA runs it in full); the first trial is then the "
                        "sampler's (benchmarks/RESULTS.md section 17)")
    parser.add_argument("--start", action="store_true",
                        help="the default, said outright: also prints a note when the space has no start "
                        "for this budget")
    parser.add_argument("--stale-after", type=cli.positive_int, default=DEFAULT_STALE_AFTER,
                        help="seconds without a heartbeat after which another driver of the study "
                             f"fails a trial whose driver died (default: {DEFAULT_STALE_AFTER}; a dead "
                             "driver on this machine is noticed at once)")
    parser.add_argument("--models", metavar="NAME,...",
                        help="comma-separated model families a space that chooses the family may pick "
                        "from (cifar_zoo; default: every registered one); the default study name ends "
                        "with them, e.g. cifar_zoo-quick-vgg+resnet")
    parser.add_argument("--enqueue", type=Path, metavar="FILE.json",
                        help="run these known-good configs first: a JSON list of objects mapping the "
                        "space's parameters to values, e.g. [{\"depth\": 10, \"lr\": 0.003}]")
    parser.add_argument("--time-budget", type=cli.positive_float, metavar="MINUTES",
                        help="stop starting and running trials after this many minutes (Ray's "
                        "time_budget_s); trials cut short are PRUNED, the study can be continued "
                        "(default: the preset's when its own trials, epochs and data fraction are used: "
                        + ", ".join(f"{p.time_budget:g} on {p.name}" for p in PRESETS.values() if p.time_budget)
                        + "; none otherwise)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile each trial's model (CUDA only; ignored on the CPU). Pays off "
                        "only for long trials: each compiles afresh (tens of seconds), reported as "
                        "compile_seconds, apart from train_seconds and images/s")
    parser.add_argument("--checkpoint-optimizer", action=argparse.BooleanOptionalAction, default=True,
                        help="keep the optimizer's state in trial checkpoints (default), so a trial "
                        "whose worker failed resumes exactly; --no-checkpoint-optimizer saves up to "
                        "half the disk (AdamW) and restarts the optimizer on resume")
    cli.add_options_file(parser)
    return parser


def checked_options(values: dict[str, Any], where: str) -> dict[str, Any]:
    """run.py's options from a mapping (a TOML file's), by dest, checked as the flags would be.

    Raises:
        UserError: an unknown option (with the closest one) or a value its flag refuses.
    """
    return cli.options_from(_parser(), values, where)


def study_name_for(space: str, preset: str, objectives: Sequence[str]) -> str:
    """The default study name: ``SPACE-PRESET``, plus the objectives when they are not the default.

    Accuracy first (the default) names only the extra objectives, as before
    (``resnet_cifar-quick-train_seconds``); any other first objective names all
    (``resnet_cifar-quick-val_loss``), so it never continues an accuracy study.
    """
    extra = list(objectives[1:]) if objectives[0] == M.VAL_ACC else list(objectives)
    return "-".join([space, preset, *extra])


def build_settings(*, space: str, preset: str, fixed: dict[str, Any], limits: Any, data: str | None,
                   data_source: str | None, objectives: Sequence[str], sampler: str, scheduler: str,
                   baselines: bool, seed: int, start: bool = False) -> record.StudySettings:
    """The settings a study of these options is created with (run.py's and benchmark.py's)."""
    from studies.provenance import code_version

    return record.StudySettings(
        space=space, preset=preset, fixed=fixed, data=data, data_source=data_source,
        limits=limits.to_dict(), split_seed=0, val_fraction=0.1, objectives=tuple(objectives),
        directions=tuple(record.DIRECTIONS[o] for o in objectives), sampler=sampler,
        scheduler=scheduler, baselines=baselines, start=start, seed=seed, code=code_version())


def run_study(**options: Any) -> Any:
    """Runs a study from Python (a notebook, say) and returns its ``optuna.Study``.

    Takes run.py's options as keyword arguments, named as the flags with ``_``
    for ``-`` (``run_study(space="my_space.py", preset="smoke", trials=4,
    data="cifar10.tar.gz")``), plus ``options="FILE.toml"``; they are checked
    as the flags are. The command line runs through this same code.

    Raises:
        UserError: a bad option, space, data or storage (one line says which).
        KeyboardInterrupt: the run was interrupted; finished trials are kept.
    """
    return _run(cli.from_call(_parser(), options, "run_study"))


@cli.main_wrapper
def main(argv: Sequence[str] | None = None) -> int:
    _run(cli.parse(_parser(), argv))
    return 0


def _run(args: Any) -> Any:
    import optuna
    import torch

    cli.quiet_optuna()
    from search_spaces import SpaceLimits, aug_cap, get_space, get_starts, space_id, space_label
    from studies import storage as st
    from trainers.data import load_dataset, make_splits
    from trainers.models import list_models
    from trainers.plugins import load_plugins
    from trainers.recipes import list_recipes

    load_plugins(args.plugin)  # before the space and the configs: they may name a plugin's model
    space = get_space(args.space)
    objectives = st.parse_objectives(args.objectives)
    enqueued = read_enqueue(args.enqueue) if args.enqueue else []
    preset_name, why = cli.pick_preset(args.preset)
    preset = PRESETS[preset_name]
    models = parse_models(args.models, list_models()) if args.models else None
    study_name = cli.study_name(args.study) if args.study else study_name_for(space_label(args.space),
                                                                              preset_name, objectives)
    if models and not args.study:
        study_name = cli.study_name(f"{study_name}-{'+'.join(models)}")
    print(f"preset: {preset_name} ({why})")
    fixed = {**preset.fixed}
    if args.epochs:
        fixed["epochs"] = args.epochs
    if args.data_fraction:
        fixed["data_fraction"] = args.data_fraction
    if args.image_size:
        fixed["image_size"] = args.image_size
    limits = dataclasses.replace(preset.limits, max_epochs=fixed["epochs"], models=tuple(models or list_models()),
                                 max_aug_strength=aug_cap(fixed["epochs"]))
    trials_wanted = args.trials or preset.trials
    budget_minutes = time_budget(args, preset)
    gpu = torch.cuda.is_available()
    gpus = args.gpus_per_trial if args.gpus_per_trial is not None else (1.0 if gpu else 0.0)
    cpus = args.cpus_per_trial if args.cpus_per_trial is not None else (2.0 if gpu else 1.0)
    if gpus > 0 and not gpu and not args.address:
        raise UserError(f"--gpus-per-trial {gpus:g} but no GPU is visible; drop it or use --address")
    if cpus <= 0:
        raise UserError("--cpus-per-trial must be above 0")
    if not args.address:  # a trial that needs more than the machine has would wait forever
        have_cpus, have_gpus = cli.machine_cpus(), torch.cuda.device_count() if gpu else 0
        if cpus > have_cpus or gpus > have_gpus:
            raise UserError(f"a trial asks for {cpus:g} CPUs and {gpus:g} GPUs, but this machine has "
                            f"{have_cpus} CPUs and {have_gpus} GPUs; lower --cpus-per-trial/--gpus-per-trial")

    if args.compile and gpus == 0:
        print("note: --compile is ignored: the trials run on the CPU (torch.compile is used on CUDA only)")

    if args.start and args.no_start:
        raise UserError("--start and --no-start contradict each other; pass one")
    starts = [] if args.no_start else get_starts(args.space, limits)
    if args.start and not starts:
        print(f"note: --start is ignored: {args.space} has no known-good start for {fixed['epochs']} epochs "
              f"with these limits; the study runs without one")
    # The space is sampled once in memory, and every --enqueue entry checked, before anything is stored.
    check_space(space, args.space, fixed, limits, enqueued, args.enqueue, restricted=bool(models))
    if starts:
        check_space(space, args.space, fixed, limits, starts, restricted=bool(models),
                    source=f"{args.space}'s start (--no-start skips it)")
    results = cli.writable_folder(args.results, "--results")
    storage_url = cli.storage_url(args)
    storage = st.open_storage(storage_url, stale_after=args.stale_after)  # before the data: fail fast

    t0 = time.perf_counter()
    dataset = load_dataset(args.data, image_size=fixed.get("image_size", 32), cache_dir=args.cache_dir)
    splits = make_splits(dataset, val_fraction=0.1, data_fraction=fixed["data_fraction"], seed=0)
    print(f"data: {dataset.source}: {len(splits.train_x)} train / {len(splits.val_x)} validation "
          f"images, {splits.num_classes} classes, {dataset.image_size}px "
          f"(loaded in {time.perf_counter() - t0:.1f}s; the test split is kept for the final run)")

    settings = build_settings(
        space=space_id(args.space), preset=preset_name, fixed=fixed, limits=limits, data=dataset.fingerprint(),
        data_source=args.data or "cifar10-download", objectives=objectives, sampler=args.sampler,
        scheduler=args.scheduler, baselines=not args.no_baselines, seed=args.seed, start=bool(starts))
    study, stored = st.open_study(storage, study_name, settings)
    if models and stored.limits and list(stored.limits.get("models") or []) != list(models):
        raise UserError(f"study {study_name!r} was run with models {', '.join(stored.limits.get('models') or [])}, "
                        f"not --models {','.join(models)}; repeat its models or pass another --study")
    limits = SpaceLimits.from_dict(dict(stored.limits)) if stored.limits else limits
    _write_options(args, results, study_name, storage_url, preset=preset_name, trials=trials_wanted,
                   cpus_per_trial=cpus, gpus_per_trial=gpus)
    stale = st.close_stale(study)
    if stale:
        print(f"marked {len(stale)} trial(s) left RUNNING by a stopped driver as FAIL: {stale}")
    done = record.finished_count(study.get_trials(deepcopy=False))
    remaining = trials_wanted - done
    within = ""
    if budget_minutes and remaining > 0:
        within = f" within {budget_minutes:g} min" + (
            "" if args.time_budget else f" (the {preset_name} preset's time budget; --time-budget changes it)")
    print(f"study {study_name!r} in {record.redact_url(storage_url)}: {done} finished, "
          f"running up to {max(0, remaining)} more{within}")

    if remaining > 0:
        for params in enqueued:  # the user's known-good configs first, once per study
            study.enqueue_trial(params, skip_if_exists=True)
        if stored.start:  # then the space's, if the study was made with it
            for params in starts:
                study.enqueue_trial(params, user_attrs={record.START: space_label(args.space)},
                                    skip_if_exists=True)
        from studies.tune_adapter import enqueue_baselines, run_trials

        baselines = list_recipes() if stored.baselines else []
        if args.baselines_first:
            enqueue_baselines(study, baselines)
            baselines = []

        # A resumed run (or a second driver) must not replay the first run's draws: offset the seed
        # by the trials already run. Enqueued ones still WAITING drew nothing, so they do not count:
        # a study with --start, --enqueue or --baselines-first samples what the plain study samples.
        drawn = sum(t.state != optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False))
        sampler = make_sampler(args.sampler, (args.seed + drawn) % 2**32, trials_wanted)
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
        run_trials(
            space=functools.partial(_space_with_fixed, space=space, limits=limits, fixed=fixed),
            study=study, storage=storage, wanted=trials_wanted, num_trials=remaining,
            splits=splits, max_epochs=fixed["epochs"], grace_period=args.grace_period or preset.grace_period,
            reduction_factor=preset.reduction_factor, cpus_per_trial=cpus, gpus_per_trial=gpus,
            results_dir=results / "ray", run_name=f"{study_name}-{time.strftime('%Y%m%d-%H%M%S')}",
            address=args.address, scheduler=args.scheduler, objectives=objectives,
            plugins=args.plugin, time_budget_s=budget_minutes * 60 if budget_minutes else None,
            tensorboard=results / "tensorboard" / study_name,
            compile=args.compile, checkpoint_optimizer=args.checkpoint_optimizer, baselines=baselines,
        )
        stale = st.close_stale(study)  # others' trials whose drivers died while this one ran
        if stale:
            print(f"marked {len(stale)} trial(s) of stopped drivers as FAIL: {stale}")
    study = optuna.load_study(study_name=study_name, storage=storage)
    _summarise(study, storage_url, results, args, time.perf_counter() - t0)
    return study


def time_budget(args: argparse.Namespace, preset: Any) -> float | None:
    """The study's time budget in minutes: ``--time-budget``, else the preset's.

    The preset's applies to the preset's own budget only: a study given its own
    ``--trials``, ``--epochs`` or ``--data-fraction`` runs them all (as
    benchmark.py's equal-budget cells must) unless ``--time-budget`` caps it.
    """
    if args.time_budget:
        return float(args.time_budget)
    if args.trials or args.epochs or args.data_fraction:
        return None
    return preset.time_budget


def read_enqueue(path: Path) -> list[dict[str, Any]]:
    """``--enqueue FILE.json``: a list of objects mapping the space's parameter names to values.

    Raises:
        UserError: unreadable, not JSON, or not a list of objects of numbers, strings and booleans.
    """
    import json

    try:
        entries = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"--enqueue {str(path)!r}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"--enqueue {str(path)!r} cannot be read: {err}") from None
    except json.JSONDecodeError as err:
        raise UserError(f"--enqueue {str(path)!r} is not JSON: {err}") from None
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UserError(f"--enqueue {str(path)!r} must hold a list of objects like "
                        '[{"depth": 10, "width": 32, "lr": 0.003}]')
    for i, entry in enumerate(entries):
        bad = [k for k, v in entry.items() if isinstance(v, (dict, list)) or v is None]
        if bad:
            raise UserError(f"--enqueue {str(path)!r} entry {i}: {bad[0]!r} must be a number, string or boolean")
    return entries


def check_space(space: Any, spec: str, fixed: dict[str, Any], limits: Any,
                enqueued: Sequence[dict[str, Any]] = (), enqueue_file: Any = None,
                restricted: bool = False, source: str | None = None) -> None:
    """Samples the space once in an in-memory study, and each ``--enqueue`` entry, and checks
    the configs they make: a mistake fails here, before any trial is stored.

    Args:
        restricted: ``--models`` was given, so the config's model must be one of
            ``limits.models`` (a space that does not choose the family ignores them).
        source: what the entries' errors name instead of ``--enqueue FILE`` (the space's start).

    Raises:
        UserError: the space raised, returned no dict, or made an invalid config (an
            unknown key is named with the closest valid one); an entry names a parameter
            the space does not suggest or a value outside its range; a space that
            ignores ``--models``.
    """
    import difflib
    import warnings

    import optuna

    from trainers.config import TrialConfig

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))

    def sample(where: str) -> tuple[Any, Any]:
        trial = study.ask()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # out-of-range enqueued values: said below
                return trial, space(trial, limits)
        except optuna.TrialPruned:
            return trial, None
        except UserError as err:
            raise UserError(f"{where}: {err}") from None

    for i, params in enumerate([None, *enqueued]):
        where = f"--space {spec}" if params is None else \
            f"{source or f'--enqueue {str(enqueue_file)!r}'} entry {i - 1}"
        if params is not None:
            study.enqueue_trial(params)
        try:
            trial, config = sample(where)
        except UserError:
            raise
        except Exception as err:  # the user's code: its error in one line
            if params is not None:  # a value the space refused (a choice it lacks, say)? name it
                probe, _ = sample(where)
                _check_params(params, probe, where, difflib)
            raise UserError(f"{where}: sampling the space raised {type(err).__name__}: {err}") from None
        if config is None:
            continue
        if not isinstance(config, dict):
            raise UserError(f"{where}: a space must return a dict of config keys, got {type(config).__name__}")
        if params is not None:
            _check_params(params, trial, where, difflib)
        try:
            made = TrialConfig.from_dict({**fixed, **config})
        except UserError as err:
            raise UserError(f"{where}: {err}") from None
        if restricted and made.model not in limits.models:
            raise UserError(f"{where} chose model {made.model!r}, not one of --models "
                            f"{','.join(limits.models)}: --models restricts spaces that choose the family "
                            "(cifar_zoo); drop it for this space")


def parse_models(text: str, known: Sequence[str], flag: str = "--models") -> tuple[str, ...]:
    """``--models a,b``: registered model families, in the order given, without repeats.

    Raises:
        UserError: an empty list or an unknown name (the known ones are listed).
    """
    import difflib

    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise UserError(f"{flag} {text!r}: give comma-separated families, e.g. resnet,vgg")
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            raise UserError(f"{flag}: unknown model {name!r}"
                            f"{f' (did you mean {close[0]!r}?)' if close else ''}; "
                            f"known models: {', '.join(known)}")
    return names


def _check_params(params: dict[str, Any], trial: Any, where: str, difflib: Any) -> None:
    for name, value in params.items():
        if name not in trial.params:
            # A name the space prefixes (cifar_zoo's ``resnet_depth``), else the closest spelling.
            close = [p for p in trial.params if p.endswith(f"_{name}")] or difflib.get_close_matches(
                name, list(trial.params), n=1)
            raise UserError(f"{where}: {name!r} is not a parameter this space suggests"
                            f"{f' (did you mean {close[0]!r}?)' if close else ''}; "
                            f"its parameters here: {', '.join(trial.params)}")
        if _outside(trial.distributions[name], value):
            raise UserError(f"{where}: {name}={value!r} is outside the space's "
                            f"{_describe(trial.distributions[name])}")


def _outside(distribution: Any, value: Any) -> bool:
    import optuna

    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return value not in distribution.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return not distribution.low <= value <= distribution.high


def _describe(distribution: Any) -> str:
    import optuna

    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return f"choices {list(distribution.choices)}"
    return f"range [{distribution.low:g}, {distribution.high:g}]"


def _write_options(args: Any, results: Path, study_name: str, storage_url: str, **resolved: Any) -> None:
    """``RESULTS/STUDY/options.toml``: every option as this run resolved it; passing it back
    with ``--options`` continues the same study. A storage URL with a password is left out."""
    from search_spaces import space_id
    from studies.files import atomic_write_text

    values = {**vars(args), **resolved, "study": study_name}
    values["space"] = space_id(args.space)
    values["plugin"] = [str(Path(p).expanduser().resolve()) if p.endswith(".py") else p for p in args.plugin]
    for key in ("results", "data", "cache_dir", "enqueue"):
        if values.get(key) is not None and not (key == "data" and "://" in str(values[key])):
            values[key] = str(Path(values[key]).expanduser().resolve())
    header = f"options of study {study_name!r}, as resolved on {time.strftime('%Y-%m-%d %H:%M')}\n" \
             "continue it with: python studies/run.py --options THIS_FILE"
    if record.redact_url(storage_url) != storage_url:
        values["storage"] = None
        header += f"\nthe storage URL holds a password: give it in ${cli.STORAGE_ENV}"
    else:
        values["storage"] = _absolute(storage_url)
    folder = record.study_folder(results, study_name)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / cli.OPTIONS_FILE, cli.options_toml(values, header))


def _summarise(study: Any, storage_url: str, results: Path, args: Any, seconds: float) -> None:
    import optuna

    from dashboards.final_run import final_path
    from dashboards.leaderboard import format_leaderboard, trials_frame, write_report

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the report's in-memory studies
    shown = record.redact_url(_absolute(storage_url))
    if len(study.directions) > 1:
        from dashboards.pareto import format_pareto, write_pareto_report

        print(f"\nstudy {study.study_name!r}: {len(study.trials)} trials, {seconds / 60:.1f} min")
        print(format_pareto(study))
        report = write_pareto_report(study, record.study_folder(results, study.study_name) / "pareto.html")
        print(f"\nHTML Pareto front: {report.resolve()}")
    else:
        frame = trials_frame(study)
        states = frame["state"].value_counts().to_dict() if len(frame) else {}
        print(f"\nstudy {study.study_name!r}: {len(frame)} trials {states}, {seconds / 60:.1f} min")
        print(format_leaderboard(frame, top=10))
        final = final_path(study.study_name, results)
        report = write_report(study, record.study_folder(results, study.study_name) / "leaderboard.html",
                              final_metrics=final if final.is_file() else None)
        print(f"\nHTML leaderboard: {report.resolve()}")
    print(f"Optuna dashboard: optuna-dashboard {shown} --host 127.0.0.1 --port 8080")
    command = f"python studies/final.py --study {study.study_name}"
    if args.results != cli.DEFAULT_RESULTS:
        command += f" --results {args.results}"
    if record.redact_url(storage_url) != storage_url:  # a password: it stays in the environment
        command = f"{cli.STORAGE_ENV}=<the storage URL> {command}"
    elif args.storage:
        command += f" --storage {args.storage}"
    if args.data:
        command += f" --data {args.data}"
    for plugin in args.plugin:
        command += f" --plugin {plugin}"
    what = "the best config" if len(study.directions) == 1 else "a Pareto-front trial: add --trial N"
    print(f"Final run ({what}, 3 seeds, test split): {command}")


def _absolute(url: str) -> str:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).resolve())
    return url


if __name__ == "__main__":
    sys.exit(main())

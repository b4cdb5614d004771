"""Benchmark search strategies: a grid of sampler x scheduler x seed at an equal budget.

    python studies/benchmark.py --space resnet_cifar --preset quick \\
        --samplers tpe,random --schedulers asha,fifo --seeds 0,1,2 --data PATH

Each cell runs one study, ``bench-SPACE-PRESET-SAMPLER-SCHEDULER-sSEED``, with
studies/run.py in its own process (Ray starts and stops cleanly each time), all
in one storage (default sqlite:///RESULTS/benchmark.db). Every cell gets the same
preset and number of finished trials. Re-running the command skips the cells
already done and continues unfinished ones. Then it writes, from the storage,
RESULTS/benchmark/SPACE-PRESET.html (best-so-far curves: the interquartile mean
over seeds with a bootstrap 95% interval; the summary, the probability that one
strategy beats another, average ranks over trial-epochs and the overhead
table), SPACE-PRESET.csv (one row per study) and SPACE-PRESET-curves.csv (one
row per finished trial of each study).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dashboards.strategy_frames import (
    BENCH_ATTR,
    Cell,
    StudyRecord,
    curves_frame,
    mean_curves,
    pairwise_frame,
    reference_target,
    seed_pairs_frame,
    strategy_frame,
    study_frame,
    study_name,
)
from studies import cli, record
from studies.child import run_child
from studies.presets import PRESETS
from studies.record import StudySettings
from studies.strategies import SAMPLERS, SCHEDULER_NAMES
from trainers import metrics as M
from trainers.errors import UserError

__all__ = ["main", "slots"]

_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = "random-fifo"  # plain random search, every trial run to the end


# ---------------------------------------------------------------- the command line


def _names(known: Sequence[str], what: str, check: bool = True) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        if not names:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}s, got {text!r}")
        for name in names:
            if check and name not in known:
                raise argparse.ArgumentTypeError(f"unknown {what} {name!r}; known: {', '.join(known)}")
        if len(set(names)) < len(names):
            raise argparse.ArgumentTypeError(f"a {what} is repeated in {text!r}")
        return names

    return parse


def _strategies(text: str) -> list[tuple[str, str]]:
    pairs = []
    for name in _names([], "strategy", check=False)(text):
        sampler, _, scheduler = name.partition("-")
        if sampler not in SAMPLERS or scheduler not in SCHEDULER_NAMES:
            raise argparse.ArgumentTypeError(
                f"unknown strategy {name!r}; expected SAMPLER-SCHEDULER with a sampler in "
                f"{', '.join(sorted(SAMPLERS))} and a scheduler in {', '.join(SCHEDULER_NAMES)}")
        pairs.append((sampler, scheduler))
    return pairs


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}")
    if len(set(seeds)) < len(seeds):
        raise argparse.ArgumentTypeError(f"a seed is repeated in {text!r}")
    for seed in seeds:
        cli.seed(str(seed))  # each in [0, 2**32)
    return seeds


# run.py options the benchmark sets for every cell itself: a variant may not change them.
_CELL_OPTIONS = ("study", "storage", "results", "seed", "sampler", "scheduler", "trials", "data", "cache_dir",
                 "preset", "options", "address", "cpus_per_trial", "gpus_per_trial", "objectives", "image_size",
                 "plugin")
_VARIANT_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,31}")


@dataclasses.dataclass(frozen=True)
class Variant:
    """``--variant NAME=FILE.toml``: run.py options (a lever) every cell of this variant adds."""

    name: str
    file: Path | None
    values: dict[str, Any]  # run.py's options by dest, checked as its flags would be

    def describe(self) -> str:
        given = ", ".join(f"{k.replace('_', '-')}={f'{v:g}' if isinstance(v, float) else v}"
                          for k, v in self.values.items())
        return f"{self.name} ({given or 'no options'})"


def _variant(text: str) -> Variant:
    name, sep, file = text.partition("=")
    if not _VARIANT_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(f"variant name {name!r}: use lowercase letters, digits and _ "
                                         "(at most 32), e.g. grace2=grace2.toml")
    if not sep or not file:
        return Variant(name, None, {})
    from studies import run

    path = Path(file)
    where = f"--variant {name}={file}"
    values = run.checked_options(cli.read_options_file(path, where), where)
    refused = [k for k in values if k in _CELL_OPTIONS]
    if refused:
        raise argparse.ArgumentTypeError(
            f"{file}: {refused[0].replace('_', '-')} is set by the benchmark for every cell; a variant may "
            "change the other run.py options (space, grace-period, epochs, no-baselines, ...)")
    if values.get("start") and values.get("no_start"):
        raise argparse.ArgumentTypeError(f"{file}: start and no_start contradict each other; set one")
    return Variant(name, path, values)


def _parser() -> cli.Parser:
    parser = cli.Parser(description=__doc__.split("\n")[0])
    cli.add_common(parser)
    cli.reword(parser, study=None,  # studies are named by their cell
               storage="Optuna RDB URL for the grid's studies (default: sqlite:///RESULTS/benchmark.db)")
    parser.add_argument("--samplers", type=_names(sorted(SAMPLERS), "sampler"), default=["tpe", "random"],
                        help="comma-separated Optuna samplers (default: tpe,random)")
    parser.add_argument("--schedulers", type=_names(SCHEDULER_NAMES, "scheduler"), default=["asha", "fifo"],
                        help="comma-separated Ray schedulers (default: asha,fifo)")
    parser.add_argument("--strategies", type=_strategies,
                        help="comma-separated SAMPLER-SCHEDULER pairs to run instead of the full grid "
                             "of --samplers x --schedulers, e.g. tpe-asha,random-fifo")
    parser.add_argument("--variant", type=_variant, action="append", default=[], metavar="NAME[=FILE.toml]",
                        help="compare variants of run.py's options (repeatable): every strategy runs once "
                        "per variant, with the options in FILE.toml (e.g. grace_period = 2, or space = "
                        "'weak_aug.py'); NAME alone is the options as given; strategies become "
                        "SAMPLER-SCHEDULER+NAME")
    parser.add_argument("--seeds", type=_seeds, default=[0, 1, 2],
                        help="comma-separated seeds (default: 0,1,2)")
    parser.add_argument("--trials", type=cli.positive_int,
                        help="finished trials per study, the same for every cell (default: preset's)")
    parser.add_argument("--reference",
                        help="strategy SAMPLER-SCHEDULER the others have to reach "
                             f"(default: {DEFAULT_REFERENCE} if in the grid, else the grid's first)")
    cli.add_options_file(parser)
    parser.add_argument("--baselines", action="store_true",
                        help="run the reference recipes in every cell's study, as run.py does "
                             "(default: off, so every trial compared is the strategy's own)")
    parser.add_argument("--start", action="store_true",
                        help="let every cell's study try the space's known-good start first, as run.py "
                             "does (default: off, so every trial compared is the strategy's own)")
    parser.add_argument("--cpus-per-trial", type=cli.non_negative_float,
                        help="CPUs per trial (default: 1, or 2 with a GPU)")
    parser.add_argument("--gpus-per-trial", type=cli.non_negative_float,
                        help="GPUs per trial (default: 1 if visible)")
    return parser


@cli.main_wrapper
def main(argv: Sequence[str] | None = None) -> int:
    """Runs the grid's missing studies, then writes and prints the comparison.

    Args:
        argv: Command-line arguments; ``sys.argv[1:]`` when None.

    Returns:
        The exit status: 0; 2 after a one-line ``error: ...`` on stderr for bad
        input; 1 when a study's run.py crashed (its log is named); 130 on Ctrl-C.
    """
    args = cli.parse(_parser(), argv)
    if args.study:
        raise UserError("--study: the benchmark names its studies bench-SPACE-PRESET-SAMPLER-SCHEDULER-sSEED")
    import optuna

    cli.quiet_optuna()
    from search_spaces import aug_cap, get_space, get_starts, space_id, space_label
    from studies import storage as st
    from trainers.plugins import load_plugins

    load_plugins(args.plugin)
    get_space(args.space)  # an unknown space fails here, before any cell runs
    if args.data and not Path(args.data).exists():
        raise UserError(f"data path {args.data!r} does not exist")
    preset_name, why = cli.pick_preset(args.preset)
    preset = PRESETS[preset_name]
    pairs = args.strategies or [(sampler, scheduler) for sampler in args.samplers
                                for scheduler in args.schedulers]
    variants = {v.name: v for v in args.variant}
    if len(variants) < len(args.variant):
        raise UserError("--variant: a variant name is repeated")
    for v in variants.values():
        if "space" in v.values:  # its unknown space fails here too
            get_space(v.values["space"])
    # Seed by seed, so that a grid stopped half-way still compares every strategy.
    cells = [Cell(sampler, scheduler, seed, variant) for seed in args.seeds for sampler, scheduler in pairs
             for variant in (variants or [""])]
    strategies = list(dict.fromkeys(c.strategy for c in cells))
    reference = args.reference or (DEFAULT_REFERENCE if DEFAULT_REFERENCE in strategies else strategies[0])
    if reference not in strategies:
        raise UserError(f"--reference {reference!r} is not in the grid; strategies: {', '.join(strategies)}")
    trials = args.trials or preset.trials
    fixed = _fixed(preset, vars(args))
    extras = [what for what, on in (("the space's start", args.start), ("the reference recipes", args.baselines))
              if on]
    budget = (f"Equal budget: every cell runs {trials} finished trials of the {preset_name} preset "
              f"({fixed['epochs']} epochs, {fixed['data_fraction']:.0%} of train, "
              f"batch {fixed['batch_size']}), "
              f"{', '.join(extras) + ' and ' if extras else 'all '}"
              "the strategy's own; schedulers that stop trials early spend fewer trial-epochs."
              + (" A variant's time budget ends its cells when it runs out, whatever their trial count."
                 if any(v.values.get("time_budget") for v in variants.values()) else "")
              + (f" Variants: {'; '.join(v.describe() for v in variants.values())}." if variants else ""))
    print(f"preset: {preset_name} ({why})")
    print(f"grid: {len(strategies)} strategies ({', '.join(strategies)}) x "
          f"{len(args.seeds)} seeds = {len(cells)} studies; reference: {reference}")
    print(budget)

    results: Path = args.results
    storage_url = args.storage or os.environ.get(cli.STORAGE_ENV) or f"sqlite:///{results / 'benchmark.db'}"
    storage = st.open_storage(storage_url)
    # The settings run.py creates each cell's study with: a study made with
    # others is refused here, before any cell runs, and one with enough
    # finished trials is done.
    from studies.run import build_settings
    from trainers.data import load_dataset

    dataset = load_dataset(args.data, image_size=fixed.get("image_size", 32), cache_dir=args.cache_dir)
    names = [study_name(space_label(args.space), preset_name, cell) for cell in cells]
    finished = []
    for cell, name in zip(cells, names, strict=True):
        opts = _cell_options(args, variants.get(cell.variant))
        cell_fixed = _fixed(preset, opts)
        limits = dataclasses.replace(preset.limits, max_epochs=cell_fixed["epochs"],
                                     max_aug_strength=aug_cap(cell_fixed["epochs"]))
        finished.append(_finished(storage, name, build_settings(
            space=space_id(opts["space"]), preset=preset_name, fixed=cell_fixed, limits=limits,
            data=dataset.fingerprint(), data_source=args.data, objectives=[M.VAL_ACC], sampler=cell.sampler,
            scheduler=cell.scheduler, baselines=opts["baselines"], seed=cell.seed,
            start=opts["start"] and bool(get_starts(opts["space"], limits)))))
    del dataset
    resources: dict[str, Any] | None = None
    for i, (cell, name, done) in enumerate(zip(cells, names, finished, strict=True), 1):
        if done is not None and done >= trials:
            more = f" (more than the {trials} asked: all are counted)" if done > trials else ""
            print(f"[{i}/{len(cells)}] {name}: {done} finished trials{more}, skipped", flush=True)
            continue
        minutes = variants[cell.variant].values.get("time_budget") if cell.variant in variants else None
        if done is not None and minutes and _benchmark_runs(storage, name):
            # Its time budget ended the run, not the trial count: running it again would add trials.
            print(f"[{i}/{len(cells)}] {name}: {done} finished trials within its {minutes:g}-minute "
                  "time budget, skipped", flush=True)
            continue
        resources = resources or _resources(args.cpus_per_trial, args.gpus_per_trial)
        failed = _run_cell(args, cell, variants.get(cell.variant), name, preset_name, trials, storage_url,
                           storage, resources, f"[{i}/{len(cells)}]", done or 0)
        if failed:  # a crash, not the user's mistake: say where its traceback is
            print(f"error: {failed}", file=sys.stderr)
            return 1

    assumed = slots(cli.machine_cpus(), 1.0)  # for a study run outside the benchmark
    records = [StudyRecord.of(optuna.load_study(study_name=name, storage=storage), cell, assumed)
               for cell, name in zip(cells, names, strict=True)]
    _write_outputs(records, results / "benchmark", f"{space_label(args.space)}-{preset_name}", reference, budget,
                   f"{', '.join(strategies)} x seeds {', '.join(map(str, args.seeds))}")
    return 0


# ---------------------------------------------------------------- running the cells


def _cell_options(args: argparse.Namespace, variant: Variant | None) -> dict[str, Any]:
    """The options a cell's study differs by: the benchmark's, with its variant's on top."""
    values = variant.values if variant else {}
    opts = {key: values.get(key, getattr(args, key)) for key in ("space", "epochs", "data_fraction")}
    opts["image_size"] = args.image_size
    opts["baselines"] = not values["no_baselines"] if "no_baselines" in values else args.baselines
    if values.get("start") or values.get("no_start") is False:
        opts["start"] = True
    elif values.get("no_start") or values.get("start") is False:
        opts["start"] = False
    else:
        opts["start"] = args.start
    return opts


def _fixed(preset: Any, opts: dict[str, Any]) -> dict[str, Any]:
    """The preset's fixed config values, with ``--epochs``, ``--data-fraction`` and ``--image-size``."""
    fixed = {**preset.fixed}
    for key in ("epochs", "data_fraction", "image_size"):
        if opts.get(key):
            fixed[key] = opts[key]
    return fixed


def _finished(storage: Any, name: str, expected: StudySettings) -> int | None:
    """The study's finished trials, or None if there is no such study yet.

    Raises:
        UserError: the study was run with another budget, data or strategy, so
            its trials would not be comparable with the other cells'.
    """
    import optuna

    if name not in optuna.get_all_study_names(storage):
        return None
    study = optuna.load_study(study_name=name, storage=storage)
    stored = record.settings_of(study)
    changed = ["settings"] if stored is None else stored.differences(expected)
    if changed:
        raise UserError(f"study {name!r} was run with other settings ({', '.join(changed)} differ); "
                        "repeat the original options or pass another --storage")
    return record.finished_count(study.get_trials(deepcopy=False))


def _benchmark_runs(storage: Any, name: str) -> int:
    """Runs of the study this benchmark finished and recorded (a stopped one records none)."""
    import optuna

    bench = optuna.load_study(study_name=name, storage=storage).user_attrs.get(BENCH_ATTR) or {}
    return len(bench.get("runs", []))


def slots(cpus: float, cpus_per_trial: float, gpus: float = 0.0, gpus_per_trial: float = 0.0) -> int:
    """Trials that fit at once: floor(CPUs / CPUs per trial), and the same for GPUs if used."""
    fits = math.floor(cpus / cpus_per_trial + 1e-9)
    if gpus_per_trial > 0:
        fits = min(fits, math.floor(gpus / gpus_per_trial + 1e-9))
    return fits


def _resources(cpus_per_trial: float | None, gpus_per_trial: float | None) -> dict[str, Any]:
    """Resources run.py will use (the same defaults), and the slots they give on this machine."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cpt = cpus_per_trial if cpus_per_trial is not None else (2.0 if gpus else 1.0)
    gpt = gpus_per_trial if gpus_per_trial is not None else (1.0 if gpus else 0.0)
    cpus = cli.machine_cpus()
    if cpt <= 0:
        raise UserError("--cpus-per-trial must be above 0")
    fits = slots(cpus, cpt, gpus, gpt)
    if fits < 1:
        raise UserError(f"a trial needs {cpt:g} CPUs and {gpt:g} GPUs; "
                        f"this machine has {cpus} CPUs, {gpus} GPUs")
    return {"cpus": cpus, "gpus": gpus, "cpus_per_trial": cpt, "gpus_per_trial": gpt, "slots": fits}


def _run_cell(args: argparse.Namespace, cell: Cell, variant: Variant | None, name: str, preset: str, trials: int,
              storage_url: str, storage: Any, resources: dict[str, Any], tag: str, before: int) -> str | None:
    """Runs (or continues) one cell's study with run.py in a child process, timing it.

    Returns None, or what went wrong when run.py crashed.
    """
    import optuna

    from studies.provenance import provenance

    # The storage URL goes by environment: a password must not show in the
    # process list or in the log's command line.
    opts = _cell_options(args, variant)
    # The variant's options first, as a file: the flags below override what the benchmark sets itself.
    options = ["--options", str(variant.file)] if variant and variant.file else []
    command = [sys.executable, str(_ROOT / "studies" / "run.py"), *options, "--space", opts["space"],
               "--preset", preset,
               "--trials", str(trials), "--seed", str(cell.seed), "--sampler", cell.sampler,
               "--scheduler", cell.scheduler, "--study", name, "--results", str(args.results), "--cpus-per-trial", f"{resources['cpus_per_trial']:g}",
               "--gpus-per-trial", f"{resources['gpus_per_trial']:g}"]
    for flag, value in (("--data", args.data), ("--cache-dir", args.cache_dir), ("--epochs", opts["epochs"]),
                        ("--data-fraction", opts["data_fraction"]), ("--image-size", args.image_size)):
        if value is not None:
            command += [flag, str(value)]
    for plugin in args.plugin:
        command += ["--plugin", plugin]
    if not opts["baselines"]:
        command.append("--no-baselines")
    # Explicit either way: run.py tries the start by default, the benchmark only when asked.
    command.append("--start" if opts["start"] else "--no-start")
    log = args.results / "benchmark" / "logs" / f"{name}.log"
    print(f"{tag} {name}: running {trials - before} trial(s) (log: {log})", flush=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        seconds = run_child(command, log, f"study {name}", env={cli.STORAGE_ENV: storage_url})
    except RuntimeError as err:
        return str(err).replace("exited", "run.py exited")
    study = optuna.load_study(study_name=name, storage=storage)
    bench = study.user_attrs.get(BENCH_ATTR) or {}
    run = {"driver_seconds": round(seconds, 3), "started": started.isoformat(timespec="seconds"),
           "trials_before": before, "trials_after": record.finished_count(study.get_trials(deepcopy=False)),
           "provenance": provenance()}
    study.set_user_attr(BENCH_ATTR, {**resources, "runs": [*bench.get("runs", []), run]})
    print(f"{tag} {name}: done in {seconds:.1f} s", flush=True)
    return None


# ---------------------------------------------------------------- the outputs


def _write_outputs(records: list[StudyRecord], folder: Path, stem: str, reference: str, budget: str,
                   grid: str) -> None:
    from dashboards.stats import average_ranks
    from dashboards.strategy_report import (overhead_text, pairwise_text, seed_pairs_text, summary_text,
                                            write_report)

    curves = curves_frame(records)
    studies = study_frame(records, reference)
    strategies = strategy_frame(studies)
    target = reference_target(studies, reference)
    pairs = pairwise_frame(studies)
    by_seed = seed_pairs_frame(curves, reference)
    folder.mkdir(parents=True, exist_ok=True)
    csv, curves_csv = folder / f"{stem}.csv", folder / f"{stem}-curves.csv"
    studies.to_csv(csv, index=False)
    curves.to_csv(curves_csv, index=False)
    space, _, preset = stem.rpartition("-")
    page = write_report(folder / f"{stem}.html", title=f"Benchmark: {space}, {preset} preset", grid=grid,
                        budget=budget, reference=reference, target=target, strategies=strategies,
                        studies=studies, by_epochs=mean_curves(curves, "trial_epochs"),
                        by_wall=mean_curves(curves, "wall_seconds"), pairs=pairs,
                        ranks=average_ranks(curves, "trial_epochs"), seed_pairs=by_seed)
    pct = "-" if math.isnan(target) else f"{target:.1%}"
    print(f"\n{budget}\nbest validation accuracy and trial-epochs: interquartile mean over seeds "
          f"[percentile bootstrap 95% interval]; 'to reach' = until the best COMPLETE accuracy reached "
          f"{reference}'s final best ({pct}, the mean of its seeds' bests)")
    print(summary_text(strategies))
    if not pairs.empty:
        print("\nprobability that a seed of the row's strategy finds a better best COMPLETE accuracy than a "
              "seed of the column's [95% interval]:")
        print(pairwise_text(pairs))
    if not by_seed.empty:
        print(f"\nseed by seed against {reference}'s study of the same seed (to reach its final best; "
              "both bests at equal trial-epochs):")
        print(seed_pairs_text(by_seed, reference))
    print("\noverhead per study (utilization = compute / (wall x slots); goal >= 90%, <= 1 s per trial):")
    print(overhead_text(studies))
    print(f"\nHTML: {page.resolve()}\nCSV: {csv.resolve()}\n     {curves_csv.resolve()}")


if __name__ == "__main__":
    sys.exit(main())

"""Re-train the best configuration of a study and report it on the test split.

    python studies/final.py --study resnet_cifar-quick [--seeds 3]
    python studies/final.py --config torch_reference --preset quick

Trains on train + validation (the whole training split) at the study's full
epoch budget, once per seed, then evaluates each model on the test split, the
only place the test split is used. Writes a checkpoint per seed, the config
and a metrics JSON with provenance under RESULTS/final/STUDY/. ``--config``
runs a named recipe instead (scaled to the preset's budget), under
RESULTS/final/CONFIG-PRESET/.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studies import cli
from studies.presets import PRESETS
from trainers.errors import UserError


def _parser() -> cli.Parser:
    parser = cli.Parser(description=__doc__.split("\n")[0])
    cli.add_common(parser)
    parser.add_argument("--config", help="run a named recipe instead of a study's best trial "
                        "(torch_reference, keras_reference)")
    parser.add_argument("--trial", type=int, help="trial number to re-run (default: the best COMPLETE one)")
    parser.add_argument("--seeds", type=cli.positive_int, help="number of seeds (default: 3)")
    parser.add_argument("--threads", type=cli.positive_int, help="torch threads (default: all cores)")
    return parser


def _load_study(name: str, args: Any) -> Any:
    import optuna

    from studies.record import redact_url

    storage_url = cli.storage_url(args)
    shown = redact_url(storage_url)
    if storage_url.startswith("sqlite:///") and not Path(storage_url.removeprefix("sqlite:///")).exists():
        raise UserError(f"no study storage at {shown}; run studies/run.py first or pass --storage")
    from studies.storage import open_storage

    storage = open_storage(storage_url, stale_after=None)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise UserError(f"study {name!r} not found in {shown}; "
                        f"studies there: {', '.join(names) or 'none'}") from None


def _pick_trial(study: Any, number: int | None) -> Any:
    """The trial to re-run: ``--trial N`` if COMPLETE, else the best COMPLETE one by the study's direction.

    Raises:
        UserError: no such trial, a trial that did not complete, a study with
            several objectives and no ``--trial`` (its Pareto front is listed),
            or no COMPLETE trial at all.
    """
    from optuna.trial import TrialState

    from studies import record

    trials = study.get_trials(deepcopy=False)
    if number is not None:
        matches = [t for t in trials if t.number == number]
        if not matches:
            raise UserError(f"study {study.study_name!r} has no trial {number}; "
                            f"its trials are 0-{len(trials) - 1}")
        trial = matches[0]
        if trial.state != TrialState.COMPLETE:
            raise UserError(f"trial {number} of {study.study_name!r} is {trial.state.name}, not COMPLETE: "
                            "its config never ran its full budget; pass --trial with a COMPLETE trial, "
                            "or leave it out for the best one")
        return trial
    if len(study.directions) > 1:
        front = sorted(t.number for t in study.best_trials)
        raise UserError(f"study {study.study_name!r} has several objectives, so no single best trial; "
                        f"pass --trial N with one of its Pareto front: {', '.join(map(str, front)) or 'none yet'}")
    name, direction = record.objective(study)
    best = record.best_trial(trials, direction)
    if best is None:
        raise UserError(f"study {study.study_name!r} has no COMPLETE trial yet; "
                        "run studies/run.py first or pass --trial N")
    return best


def _objective_text(study: Any, trial: Any) -> str:
    names = study.metric_names or ["val_acc"]
    return ", ".join(f"{n} {v:.4f}" for n, v in zip(names, trial.values, strict=False))


def final_run(**options: Any) -> dict[str, Any]:
    """Re-trains a study's best config (or a named recipe) from Python and returns the metrics.

    Takes final.py's options as keyword arguments, named as the flags with ``_``
    for ``-`` (``final_run(study="resnet_cifar-quick", seeds=1, data=...)``),
    checked as the flags are; the command line runs through this same code. The
    returned dict is what ``metrics.json`` holds (``test_acc_mean``, ``runs``, ...).

    Raises:
        UserError: a bad option, study, trial or data (one line says which).
    """
    return _final(cli.from_call(_parser(), options, "final_run"))


@cli.main_wrapper
def main(argv: Sequence[str] | None = None) -> int:
    _final(_parser().parse_args(argv))
    return 0


def _final(args: Any) -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    from trainers.bundle import make_bundle
    from trainers.config import TrialConfig
    from trainers.data import load_dataset, make_splits
    from trainers.loop import evaluate, train
    from studies.files import atomic_path, atomic_write_text
    from studies.record import study_folder as record_folder
    from studies.provenance import provenance

    from search_spaces import space_label
    from trainers.plugins import load_plugins

    load_plugins(args.plugin)  # before any config: it may name a plugin's model
    preset_name, why = cli.pick_preset(args.preset)
    if args.config:
        from trainers.recipes import get_recipe

        preset = PRESETS[preset_name]
        base = get_recipe(args.config, epochs=preset.epochs, data_fraction=preset.data_fraction,
                          max_width=max(preset.limits.widths))
        study_name, trial_number, val_acc = f"{args.config}-{preset_name}", None, None
        study, expected_data = None, None
        print(f"preset: {preset_name} ({why})")
        print(f"final run of config {args.config!r} scaled to the {preset_name} preset")
    else:
        from studies import record

        study_name = cli.study_name(args.study) if args.study else f"{space_label(args.space)}-{preset_name}"
        study = _load_study(study_name, args)
        trial = _pick_trial(study, args.trial)
        if not isinstance(trial.user_attrs.get(record.CONFIG), dict):
            raise UserError(f"trial {trial.number} has no saved config; pick another with --trial")
        from trainers.models import list_models

        model = trial.user_attrs[record.CONFIG].get("model")
        if model not in list_models():
            raise UserError(f"trial {trial.number}'s model {model!r} is not registered here; pass the "
                            "--plugin the study ran with (its options.toml lists it)")
        base = TrialConfig.from_dict(trial.user_attrs[record.CONFIG])
        settings = record.settings_of(study)
        expected_data = settings.data if settings is not None else None
        trial_number = trial.number
        val_acc = (trial.user_attrs.get(record.VALUES) or {}).get("val_acc")
        if val_acc is None and (study.metric_names or ["val_acc"])[0] == "val_acc":
            val_acc = trial.values[0]
        print(f"final run of {study_name} trial {trial.number} ({_objective_text(study, trial)})")
    changes: dict[str, Any] = {"val_fraction": 0.0}
    if args.epochs:
        changes["epochs"] = args.epochs
    if args.data_fraction:
        changes["data_fraction"] = args.data_fraction
    if args.image_size:
        changes["image_size"] = args.image_size
    config = base.replace(**changes)
    seeds = list(range(args.seeds or 3))
    print(f"{config.model}-{config.depth} width {config.width}: {config.epochs} epochs on "
          f"train+validation ({config.data_fraction:.0%} of it), seeds {seeds}")

    dataset = load_dataset(args.data, image_size=config.image_size, cache_dir=args.cache_dir)
    if expected_data is not None and dataset.fingerprint() != expected_data:
        where = settings.data_source if settings is not None else None
        raise UserError(f"--data {args.data or '(download)'} is not the data study {study_name!r} was run on"
                        f"{f' ({where})' if where else ''}; pass the study's --data")
    splits = make_splits(dataset, val_fraction=0.0, data_fraction=config.data_fraction,
                         seed=config.split_seed)
    out = record_folder(args.results / "final", study_name)
    out.mkdir(parents=True, exist_ok=True)
    runs, t0 = [], time.perf_counter()
    for seed in seeds:
        seed_config = config.replace(seed=seed)

        # A progress bar that moves once per epoch (tqdm comes with Optuna).
        bar = tqdm(total=seed_config.epochs, desc=f"seed {seed}", unit="epoch", file=sys.stdout)

        def progress(metrics: dict[str, Any], state: dict[str, Any], bar: Any = bar) -> None:
            bar.set_postfix(loss=f"{metrics['train_loss']:.3f}", acc=f"{metrics['train_acc']:.3f}",
                            img_s=f"{metrics['images_per_sec']:.0f}")
            bar.update(1)

        result = train(seed_config, splits, report=progress, threads=args.threads)
        bar.close()
        if result.diverged:
            raise UserError(f"seed {seed} diverged: {result.diverged}")
        test = evaluate(result.model, dataset.test_x, dataset.test_y, splits, seed_config)
        ckpt = out / f"model_seed{seed}.pt"
        with atomic_path(ckpt) as tmp:  # the weights and all it takes to use them (trainers.bundle)
            torch.save(make_bundle(result.model, seed_config, dataset.classes, splits.mean, splits.std,
                                   seed=seed, test_acc=test["acc"], plugins=getattr(args, "plugin", []),
                                   provenance={**provenance(), "study": study_name, "trial": trial_number,
                                               "data": dataset.source}), tmp)
        per_class = _per_class(test["pred"], dataset.test_y, dataset.classes)
        runs.append({"seed": seed, "test_acc": test["acc"], "test_loss": test["loss"],
                     "train_seconds": result.train_seconds, "checkpoint": str(ckpt),
                     "per_class_acc": per_class, "history": result.history,
                     "confusion": _confusion(test["pred"], dataset.test_y, len(dataset.classes))})
        print(f"  seed {seed}: test accuracy {test['acc']:.4f}")
    accs = [r["test_acc"] for r in runs]
    mean, std = statistics.fmean(accs), (statistics.stdev(accs) if len(accs) > 1 else 0.0)
    metrics = {"study": study_name, "trial": trial_number, "val_acc": val_acc, "recipe": args.config,
               "test_acc_mean": mean, "test_acc_std": std, "seeds": seeds,
               "classes": list(dataset.classes), "runs": runs, "config": config.to_dict(),
               "data": dataset.source, "wall_seconds": time.perf_counter() - t0,
               "provenance": provenance()}
    atomic_write_text(out / "config.json", json.dumps(config.to_dict(), indent=2))
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    search = f" (search's validation accuracy {val_acc * 100:.2f}%)" if val_acc is not None else ""
    print(f"test accuracy {mean * 100:.2f} ± {std * 100:.2f}% over {len(seeds)} seeds{search}")
    print(f"wrote {out / 'metrics.json'}, {out / 'config.json'} and {len(runs)} checkpoints")
    if study is not None:  # the study's report gains its final-run section
        from dashboards.leaderboard import write_report

        report = write_report(study, record_folder(args.results, study_name) / "leaderboard.html",
                              final_metrics=out / "metrics.json")
        print(f"HTML leaderboard with the final run: {report.resolve()}")
    return metrics


def _per_class(pred: Any, target: Any, classes: Sequence[str]) -> dict[str, float]:
    return {name: ((pred == k) & (target == k)).sum().item() / max(1, (target == k).sum().item())
            for k, name in enumerate(classes)}


def _confusion(pred: Any, target: Any, n: int) -> list[list[int]]:
    import torch

    matrix = torch.zeros(n, n, dtype=torch.int64)
    matrix.index_put_((target, pred), torch.ones_like(target), accumulate=True)
    return matrix.tolist()


if __name__ == "__main__":
    sys.exit(main())

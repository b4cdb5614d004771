"""Re-train the best configuration of a study and report it on the test split.

    python studies/final.py --study resnet_cifar-quick [--seeds 3]
    python studies/final.py --config torch_reference --preset quick

Trains on train + validation (the whole training split) for ``--minutes`` per
seed (the preset's default, the study's own preset unless ``--preset`` says
otherwise; turned into epochs by a short timed probe) or
``--epochs``, once per seed, then evaluates each model on the test split, the
only place the test split is used. Writes a model bundle and a result per seed
as each ends (the same command skips finished seeds), the config, the plan and
a metrics JSON with provenance under RESULTS/final/STUDY/. ``--top K``
re-trains the study's K best distinct configurations first. ``--config`` runs
a named recipe instead (scaled to the preset's budget), under
RESULTS/final/CONFIG-PRESET/.
"""

from __future__ import annotations

import dataclasses
import json
import math
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
    cli.add_common(parser, preset_help="budget; default: the one the --study ran, else full when a GPU "
                   "is visible, else quick")
    parser.add_argument("--config", help="run a named recipe instead of a study's best trial "
                        "(torch_reference, keras_reference)")
    parser.add_argument("--trial", type=int, help="trial number to re-run (default: the best COMPLETE one)")
    parser.add_argument("--seeds", type=cli.positive_int, help="number of seeds (default: 3)")
    parser.add_argument("--minutes", type=cli.positive_float,
                        help="training time per seed, turned into epochs by a short timed probe "
                        "(default: the preset's: quick 12; smoke and full keep the search's epochs); "
                        "--epochs overrides it")
    parser.add_argument("--top", type=cli.positive_int, metavar="K",
                        help="re-train the study's K best distinct configurations with one seed each, "
                        "then the best of them with the other seeds")
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


@dataclasses.dataclass
class _Candidate:
    """A configuration to re-train: a study's trial, or a named recipe."""

    base: Any  # TrialConfig as the search ran it
    trial: int | None
    val_acc: float | None
    search_rate: float | None = None  # training images/s the study measured (its trial's CPUs)


def _final(args: Any) -> dict[str, Any]:
    from search_spaces import space_label
    from studies import record
    from trainers.data import load_dataset, make_splits
    from trainers.plugins import load_plugins

    cli.quiet_optuna()  # the report's importances make an in-memory study: no log line for it
    load_plugins(args.plugin)  # before any config: it may name a plugin's model
    preset_name, why = cli.pick_preset(args.preset)
    preset = PRESETS[preset_name]
    study, expected, settings = None, None, None
    if args.config:
        from trainers.recipes import get_recipe

        if args.top:
            raise UserError("--top re-trains a study's best trials; drop --config or --top")
        base = get_recipe(args.config, epochs=preset.epochs, data_fraction=preset.data_fraction,
                          max_width=max(preset.limits.widths))
        study_name, candidates = f"{args.config}-{preset_name}", [_Candidate(base, None, None)]
        print(f"preset: {preset_name} ({why})")
        print(f"final run of config {args.config!r} scaled to the {preset_name} preset")
    else:
        study_name = cli.study_name(args.study) if args.study else f"{space_label(args.space)}-{preset_name}"
        study = _load_study(study_name, args)
        if args.top:
            if args.trial is not None:
                raise UserError("--top re-trains the study's K best trials; drop --trial or --top")
            candidates = [_candidate(study, t) for t in _top_trials(study, args.top)]
            print(f"final run of {study_name}'s {len(candidates)} best distinct configurations: trials "
                  f"{', '.join(str(c.trial) for c in candidates)}")
        else:
            trial = _pick_trial(study, args.trial)
            candidates = [_candidate(study, trial)]
            print(f"final run of {study_name} trial {trial.number} ({_objective_text(study, trial)})")
        settings = record.settings_of(study)
        expected = settings.data if settings is not None else None
        if args.preset is None and settings is not None and settings.preset in PRESETS:
            # A smoke study's final run is a smoke run, not the machine's default 12 minutes a seed.
            preset_name, why = settings.preset, f"the preset study {study_name!r} ran"
            preset = PRESETS[preset_name]
        print(f"preset: {preset_name} ({why})")

    image_size = args.image_size or candidates[0].base.image_size
    dataset = load_dataset(args.data, image_size=image_size, cache_dir=args.cache_dir)
    if expected is not None and dataset.fingerprint() != expected:
        where = settings.data_source if settings is not None else None
        raise UserError(f"--data {args.data or '(download)'} is not the data study {study_name!r} was run on"
                        f"{f' ({where})' if where else ''}; pass the study's --data")
    # The search ran at low fidelity on purpose; the final run spends the real budget: all of
    # train + validation unless --data-fraction says otherwise.
    data_fraction = args.data_fraction or 1.0
    splits = make_splits(dataset, val_fraction=0.0, data_fraction=data_fraction,
                         seed=candidates[0].base.split_seed)
    budget = _budget(args, preset)
    out = record.study_folder(args.results / "final", study_name)
    seeds = list(range(args.seeds or 3))
    run = _Runner(args, dataset, splits, study_name, budget, data_fraction, image_size)
    t0 = time.perf_counter()
    if len(candidates) == 1:
        winner, top = candidates[0], None
    else:  # one seed each, the same budget, then the best of them with the other seeds
        top = []
        for c in candidates:
            result = run.seeds(out / "top" / f"trial_{c.trial}", c, [seeds[0]], label=f"trial {c.trial}")
            top.append({"trial": c.trial, "val_acc": c.val_acc, "test_acc": result["test_acc_mean"],
                        "epochs": result["config"]["epochs"]})
        best = max(range(len(top)), key=lambda i: (top[i]["test_acc"], -i))
        winner = candidates[best]
        run.adopt(out / "top" / f"trial_{winner.trial}", out, winner, seeds[0])
        print(_top_table(top, winner.trial))
    metrics = run.seeds(out, winner, seeds, label=None)
    metrics.update({"study": study_name, "trial": winner.trial, "val_acc": winner.val_acc,
                    "recipe": args.config, "wall_seconds": time.perf_counter() - t0})
    if top is not None:
        metrics["top"] = top
        metrics["top_rank_correlation"] = _spearman([t["val_acc"] for t in top], [t["test_acc"] for t in top])
        later = [r["test_acc"] for r in metrics["runs"] if r["seed"] != seeds[0]]
        if later:  # the first seed chose the winner on the test split: the others are unbiased
            metrics["test_acc_mean_unselected"] = statistics.fmean(later)
    run.write_metrics(out, metrics)
    mean, std = metrics["test_acc_mean"], metrics["test_acc_std"]
    search = (f" (search's validation accuracy {winner.val_acc * 100:.2f}%)"
              if winner.val_acc is not None else "")
    print(f"test accuracy {mean * 100:.2f} ± {std * 100:.2f}% over {len(seeds)} seeds{search}")
    if "test_acc_mean_unselected" in metrics:
        print(f"  seeds after the first (not used to pick the winner): "
              f"{metrics['test_acc_mean_unselected'] * 100:.2f}%")
    print(f"wrote {out / 'metrics.json'}, {out / 'config.json'} and {len(metrics['runs'])} model bundles")
    if study is not None:  # the study's report gains its final-run section
        from dashboards.leaderboard import write_report

        report = write_report(study, record.study_folder(args.results, study_name) / "leaderboard.html",
                              final_metrics=out / "metrics.json")
        print(f"HTML leaderboard with the final run: {report.resolve()}")
    return metrics


def _candidate(study: Any, trial: Any) -> _Candidate:
    from studies import record
    from trainers.config import TrialConfig
    from trainers.models import list_models

    if not isinstance(trial.user_attrs.get(record.CONFIG), dict):
        raise UserError(f"trial {trial.number} has no saved config; pick another with --trial")
    model = trial.user_attrs[record.CONFIG].get("model")
    if model not in list_models():
        raise UserError(f"trial {trial.number}'s model {model!r} is not registered here; pass the "
                        "--plugin the study ran with (its options.toml lists it)")
    val_acc = (trial.user_attrs.get(record.VALUES) or {}).get("val_acc")
    if val_acc is None and (study.metric_names or ["val_acc"])[0] == "val_acc":
        val_acc = trial.values[0]
    return _Candidate(TrialConfig.from_dict(trial.user_attrs[record.CONFIG]), trial.number, val_acc,
                      trial.user_attrs.get(record.IMAGES_PER_SEC))


def _top_trials(study: Any, k: int) -> list[Any]:
    """The ``k`` best COMPLETE trials by the study's direction, one per distinct configuration."""
    from optuna.trial import TrialState

    from studies import record

    if len(study.directions) > 1:
        raise UserError(f"study {study.study_name!r} has several objectives, so no ranking for --top; "
                        "pass --trial N with one of its Pareto front")
    _, direction = record.objective(study)
    sign = -1.0 if direction == "maximize" else 1.0
    ranked = sorted((t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE and t.values),
                    key=lambda t: (sign * t.values[0], t.number))
    chosen, seen = [], set()
    for t in ranked:
        config = dict(t.user_attrs.get(record.CONFIG) or {})
        config.pop("seed", None)
        key = json.dumps(config, sort_keys=True)
        if config and key not in seen:
            seen.add(key)
            chosen.append(t)
        if len(chosen) == k:
            break
    if not chosen:
        raise UserError(f"study {study.study_name!r} has no COMPLETE trial yet; run studies/run.py first")
    return chosen


def _top_table(top: list[dict[str, Any]], winner: int | None) -> str:
    lines = ["", "trial  search val acc  final test acc  epochs", *[
        f"{t['trial']:>5}  {_pct(t['val_acc']):>14}  {_pct(t['test_acc']):>14}  {t['epochs']:>6}"
        f"{'  <- best: re-trained with the other seeds' if t['trial'] == winner else ''}" for t in top]]
    rho = _spearman([t["val_acc"] for t in top], [t["test_acc"] for t in top])
    if rho is not None:
        lines.append(f"rank correlation of search and final accuracy (Spearman): {rho:+.2f}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _spearman(xs: Sequence[float | None], ys: Sequence[float | None]) -> float | None:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None and y is not None]
    if len(pairs) < 3:
        return None

    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0.0] * len(values)
        i = 0
        while i < len(order):  # ties share their mean rank
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    rx, ry = ranks([x for x, _ in pairs]), ranks([y for _, y in pairs])
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    norm = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / norm if norm else None


# ---------------------------------------------------------------- the budget

PROBE_BATCHES = 12  # batches timed to turn --minutes into epochs (~3 s for a small CPU model)


def _budget(args: Any, preset: Any) -> dict[str, float]:
    """What the final run was asked to spend: ``{"epochs": N}`` or ``{"minutes": M}`` per seed."""
    if args.epochs:
        return {"epochs": args.epochs}
    minutes = args.minutes if args.minutes is not None else preset.final_minutes
    return {"minutes": minutes} if minutes else {}


def final_epochs(base_epochs: int, budget: dict[str, float], images_per_epoch: int,
                 images_per_second: float | None) -> int:
    """Epochs of a final run: ``--epochs``, else as many as ``minutes`` allow at the measured
    throughput (at least 1), else the search's own epochs."""
    if "epochs" in budget:
        return int(budget["epochs"])
    if "minutes" in budget and images_per_second:
        return max(1, math.floor(budget["minutes"] * 60 * images_per_second / max(1, images_per_epoch)))
    return base_epochs


def scaled_warmup(base: Any, epochs: int) -> float:
    """Warm-up keeps its share of training: ``warmup_epochs / epochs`` of the search's config,
    applied to the final run's epochs (2 of 6 epochs becomes 5 of 15), so the cosine decay
    spans the rest of the final budget."""
    return min(float(epochs), base.warmup_epochs / base.epochs * epochs)


class _Runner:
    """Trains seeds of one configuration into a folder, keeping the finished ones.

    Each seed's bundle and result are written (atomically) when it ends; the
    same request (configuration, budget, data) finds them there and skips those
    seeds. Another request moves the folder's earlier files aside first.
    """

    def __init__(self, args: Any, dataset: Any, splits: Any, study_name: str, budget: dict[str, float],
                 data_fraction: float, image_size: int) -> None:
        self.args, self.dataset, self.splits = args, dataset, splits
        self.study_name, self.budget = study_name, budget
        self.data_fraction, self.image_size = data_fraction, image_size

    def _request(self, base: Any) -> str:
        import hashlib

        config = {k: v for k, v in base.to_dict().items() if k not in ("seed",)}
        text = json.dumps({"config": config, "budget": self.budget, "data": self.dataset.fingerprint(),
                           "data_fraction": self.data_fraction, "image_size": self.image_size,
                           "threads": self.args.threads if "minutes" in self.budget else None},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _plan(self, folder: Path, candidate: _Candidate) -> tuple[Any, str]:
        """The config to train, from the stored plan of the same request, else a new plan."""
        from studies.files import atomic_write_text

        key = self._request(candidate.base)
        plan_file = folder / "plan.json"
        stored = _read_json(plan_file)
        if stored.get("key") == key:
            from trainers.config import TrialConfig

            return TrialConfig.from_dict(stored["config"]), key
        _move_aside(folder, stored.get("key"))
        base = candidate.base
        batch = min(base.batch_size, len(self.splits.train_x))
        images_per_epoch = len(self.splits.train_x) // batch * batch
        rate = self._probe(base) if "minutes" in self.budget else None
        epochs = final_epochs(base.epochs, self.budget, images_per_epoch, rate)
        config = base.replace(val_fraction=0.0, data_fraction=self.data_fraction, image_size=self.image_size,
                              epochs=epochs, warmup_epochs=scaled_warmup(base, epochs))
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(plan_file, json.dumps({
            "key": key, "config": config.to_dict(), "budget": self.budget, "images_per_epoch": images_per_epoch,
            "probe_images_per_sec": rate, "search_images_per_sec": candidate.search_rate,
            "search": {"epochs": base.epochs, "data_fraction": base.data_fraction},
        }, indent=2))
        return config, key

    def _probe(self, base: Any) -> float:
        """Training images per second of this config here, now: a few timed batches."""
        import dataclasses as dc

        from trainers.loop import train

        batch = min(base.batch_size, len(self.splits.train_x))
        n = min(len(self.splits.train_x), batch * PROBE_BATCHES)
        probe = dc.replace(self.splits, train_x=self.splits.train_x[:n], train_y=self.splits.train_y[:n])
        result = train(base.replace(epochs=1, warmup_epochs=0, val_fraction=0.0, data_fraction=1.0,
                                    image_size=self.image_size), probe, threads=self.args.threads)
        return float(result.history[-1]["images_per_sec"])

    def adopt(self, source: Path, target: Path, candidate: _Candidate, seed: int) -> None:
        """Starts ``target``'s plan with ``source``'s finished seed (the same request and budget)."""
        import shutil

        config, key = self._plan(source, candidate)
        done = _read_json(source / f"seed{seed}.json")
        if done.get("key") != key:
            return
        earlier = _read_json(target / "plan.json")
        _move_aside(target, earlier.get("key"), keep=key)
        if earlier.get("key") == key and earlier.get("config", {}).get("epochs") != config.epochs:
            # The same request was planned before (a plain final run of this trial) and its probe
            # gave other epochs. Seeds it finished are kept, and the others follow its plan; with
            # none finished, this run's plan and seed replace it. Never a mix of the two plans.
            finished = sorted(int(f.stem.removeprefix("seed")) for f in target.glob("seed*.json")
                              if _read_json(f).get("key") == key)
            if finished:
                print(f"note: {target} already holds seeds {', '.join(map(str, finished))} of a final run of "
                      f"this configuration and budget, planned at {earlier['config']['epochs']} epochs (this "
                      f"--top run's probe: {config.epochs}); they are kept and the other seeds follow that "
                      f"plan; the --top run's seed stays in {source}", flush=True)
                return
            (target / "plan.json").unlink()
        target.mkdir(parents=True, exist_ok=True)
        for name in ("plan.json", f"seed{seed}.json", f"model_seed{seed}.pt"):
            if not (target / name).exists():
                shutil.copy2(source / name, target / name)

    def seeds(self, folder: Path, candidate: _Candidate, seeds: list[int], label: str | None) -> dict[str, Any]:
        import torch
        from tqdm import tqdm

        from studies.files import atomic_path, atomic_write_text
        from studies.provenance import provenance
        from trainers.bundle import make_bundle
        from trainers.loop import evaluate, train

        config, key = self._plan(folder, candidate)
        plan = _read_json(folder / "plan.json")
        done = {s: _read_json(folder / f"seed{s}.json") for s in seeds}
        done = {s: d["run"] for s, d in done.items()
                if d.get("key") == key and (folder / f"model_seed{s}.pt").is_file()}
        todo = [s for s in seeds if s not in done]
        rate = plan.get("probe_images_per_sec")
        per_seed = (config.epochs * plan["images_per_epoch"] / rate / 60) if rate else None
        what = f"{label}: " if label else ""
        searched = plan.get("search_images_per_sec")
        estimate = (f", ~{per_seed:.1f} min per seed (probe: {rate:,.0f} img/s on this machine now"
                    + (f"; the search's trial: {searched:,.0f} img/s with its CPUs" if searched else "")
                    + f"), ~{per_seed * len(todo):.0f} min for {len(todo)} seed(s)" if per_seed else "")
        print(f"plan: {what}{config.model}-{config.depth} width {config.width}, {config.epochs} epochs x "
              f"{plan['images_per_epoch']:,} images ({self.data_fraction:.0%} of train+validation; the search ran "
              f"{plan['search']['epochs']} epochs on {plan['search']['data_fraction']:.0%} of train), warm-up "
              f"{config.warmup_epochs:.2g} epochs{estimate}; "
              + (f"seeds {', '.join(map(str, done))} kept from an earlier run; " if done else "")
              + "Ctrl-C keeps finished seeds: the same command skips them", flush=True)
        for seed in todo:
            seed_config = config.replace(seed=seed)
            # One tick per epoch; tqdm shows the time left (it comes with Optuna).
            bar = tqdm(total=seed_config.epochs, desc=f"{what}seed {seed}", unit="epoch", file=sys.stdout)

            def progress(metrics: dict[str, Any], state: dict[str, Any], bar: Any = bar) -> None:
                bar.set_postfix(loss=f"{metrics['train_loss']:.3f}", acc=f"{metrics['train_acc']:.3f}",
                                img_s=f"{metrics['images_per_sec']:.0f}")
                bar.update(1)

            result = train(seed_config, self.splits, report=progress, threads=self.args.threads)
            bar.close()
            if result.diverged:
                raise UserError(f"seed {seed} diverged: {result.diverged}")
            test = evaluate(result.model, self.dataset.test_x, self.dataset.test_y, self.splits, seed_config)
            ckpt = folder / f"model_seed{seed}.pt"
            with atomic_path(ckpt) as tmp:  # the weights and all it takes to use them (trainers.bundle)
                torch.save(make_bundle(result.model, seed_config, self.dataset.classes, self.splits.mean,
                                       self.splits.std, seed=seed, test_acc=test["acc"],
                                       plugins=getattr(self.args, "plugin", []),
                                       provenance={**provenance(), "study": self.study_name,
                                                   "trial": candidate.trial, "data": self.dataset.source}), tmp)
            classes = self.dataset.classes
            done[seed] = {"seed": seed, "test_acc": test["acc"], "test_loss": test["loss"],
                          "train_seconds": result.train_seconds, "checkpoint": str(ckpt),
                          "per_class_acc": _per_class(test["pred"], self.dataset.test_y, classes),
                          "history": result.history,
                          "confusion": _confusion(test["pred"], self.dataset.test_y, len(classes))}
            atomic_write_text(folder / f"seed{seed}.json", json.dumps({"key": key, "run": done[seed]}))
            print(f"  {what}seed {seed}: test accuracy {test['acc']:.4f} "
                  f"({result.train_seconds / 60:.1f} min)", flush=True)
        runs = [done[s] for s in seeds]
        accs = [r["test_acc"] for r in runs]
        return {"test_acc_mean": statistics.fmean(accs),
                "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "seeds": seeds,
                "classes": list(self.dataset.classes), "runs": runs, "config": config.to_dict(),
                "data": self.dataset.source, "provenance": provenance(),
                "final_budget": {**self.budget, "epochs": config.epochs, "data_fraction": self.data_fraction,
                                 "images_per_epoch": plan["images_per_epoch"]},
                "search_budget": dict(plan["search"]), "model_cost": _model_cost(config, len(self.dataset.classes))}

    def write_metrics(self, folder: Path, metrics: dict[str, Any]) -> None:
        from studies.files import atomic_write_text

        atomic_write_text(folder / "config.json", json.dumps(metrics["config"], indent=2))
        atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=2))


def _model_cost(config: Any, num_classes: int) -> dict[str, int]:
    """The final model's trainable parameters and forward FLOPs per image (trainers.models)."""
    from trainers.models import count_flops, count_parameters, create_model

    model = create_model(config.model, num_classes, depth=config.depth, width=config.width,
                         drop_path=config.drop_path, image_size=config.image_size)
    return {"params": count_parameters(model), "flops": count_flops(model, config.image_size)}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _move_aside(folder: Path, old_key: str | None, keep: str | None = None) -> None:
    """An earlier final run of another configuration or budget: its files move to
    ``FOLDER/earlier-KEY/`` instead of mixing with the new run's."""
    if not folder.is_dir() or old_key == keep:
        return
    names = [p for p in folder.iterdir() if p.is_file() and (
        p.name in ("plan.json", "metrics.json", "config.json") or p.name.startswith(("seed", "model_seed")))]
    if not names:
        return
    aside = folder / f"earlier-{old_key or time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir(exist_ok=True)
    for path in names:
        path.replace(aside / path.name)
    print(f"an earlier final run with another configuration or budget is kept in {aside}")


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

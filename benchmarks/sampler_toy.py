"""Which TPE settings find more in a 16-trial study? Variants of the product's sampler on a toy.

Runs variants of the product's TPE sampler (``studies.strategies.tpe``, sized
for the budget as a study sizes it) and random sampling on the real
``resnet_cifar`` space at the quick preset's limits, against a toy objective:
a smooth function of the config with its optimum where the CIFAR literature
puts it (AdamW 3e-3, SGD 0.1, weak augmentation), plus Gaussian noise of about
one configuration's seed-to-seed spread. Every variant of a seed sees the same
noise, and the TPE variants with the same random start draw the same start.
No training: the toy isolates the sampler, seconds per study, so many seeds
are cheap; the real studies of benchmarks/RESULTS.md say what a study gains.

Variants:
- ``tpe``: the product's (independent TPE, constant liar, ``startup_trials``).
- ``tpe-per-optimiser-names``: the space's ``lr`` and ``weight_decay``, whose
  ranges differ by two decades between AdamW and SGD, suggested under one name
  per optimiser (``sgd_lr``), so that TPE models each on its own.
- ``tpe-multivariate``: ``multivariate=True, group=True`` (joint densities per
  group of parameters that occur together).
- ``tpe-startup-3``: three random trials first instead of ``startup_trials``.
- ``random``: Optuna's RandomSampler.

    python benchmarks/sampler_toy.py --seeds 100 --budgets 10,16
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna

from benchmarks._common import positive_int, positive_ints, publish
from dashboards.stats import bootstrap_ci, iqm, prob_improvement
from search_spaces import aug_cap, get_space
from studies.presets import PRESETS
from studies.strategies import make_sampler, tpe

LR_BEST = {"adamw": 3e-3, "sgd": 0.1}
WD_BEST = {"adamw": 0.03, "sgd": 3e-4}
OPTIMUM = 0.748  # toy_accuracy at its best config
NOISE = 0.004  # about one configuration's seed-to-seed spread at 6 epochs


class PerOptimiserNames:
    """A trial that suggests ``lr`` and ``weight_decay`` as ``<optimizer>_lr`` and so on."""

    def __init__(self, trial: optuna.Trial) -> None:
        self._trial, self._optimizer = trial, ""

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        value = self._trial.suggest_categorical(name, choices)
        if name == "optimizer":
            self._optimizer = value
        return value

    def suggest_float(self, name: str, *args: Any, **kwargs: Any) -> float:
        if name in ("lr", "weight_decay") and self._optimizer:
            name = f"{self._optimizer}_{name}"
        return self._trial.suggest_float(name, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


# name -> (sampler factory(seed, trials), wraps the trial in PerOptimiserNames)
VARIANTS: dict[str, tuple[Callable[[int, int], optuna.samplers.BaseSampler], bool]] = {
    "tpe": (lambda seed, trials: tpe(seed, trials), False),
    "tpe-per-optimiser-names": (lambda seed, trials: tpe(seed, trials), True),
    "tpe-multivariate": (lambda seed, trials: tpe(seed, trials, multivariate=True, group=True), False),
    "tpe-startup-3": (lambda seed, trials: tpe(seed, trials, n_startup_trials=3), False),
    "random": (lambda seed, trials: make_sampler("random", seed, trials), False),
}


def toy_accuracy(config: dict[str, Any]) -> float:
    """The noiseless toy objective: :data:`OPTIMUM` at the optimum, quadratic in log-distance from it."""
    opt = config["optimizer"]
    return (0.74 + 0.005 * (config["depth"] == 18) + 0.003 * (opt == "sgd")
            - 0.05 * math.log10(config["lr"] / LR_BEST[opt]) ** 2
            - 0.02 * math.log10(config["weight_decay"] / WD_BEST[opt]) ** 2
            - 0.3 * (config["aug_strength"] - 0.1) ** 2
            - 0.3 * (config["label_smoothing"] - 0.12) ** 2
            - 0.005 * (config["warmup_epochs"] - 0.7) ** 2)


def _limits() -> Any:
    quick = PRESETS["quick"]
    return dataclasses.replace(quick.limits, max_aug_strength=aug_cap(quick.epochs))


def run_study(variant: str, seed: int, trials: int) -> dict[str, list[float]]:
    """One in-memory study: each trial's observed value and the true value of the best so far."""
    factory, per_optimiser = VARIANTS[variant]
    space, limits = get_space("resnet_cifar"), _limits()
    noise = np.random.default_rng(seed).normal(0.0, NOISE, trials)
    true: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        true.append(toy_accuracy(space(PerOptimiserNames(trial) if per_optimiser else trial, limits)))
        return true[-1] + noise[trial.number]

    study = optuna.create_study(direction="maximize", sampler=factory(seed, trials))
    study.optimize(objective, n_trials=trials)
    observed = [t.value for t in study.trials]
    # What a user keeps is the best observed trial; what it is worth is its true value.
    kept = [true[int(np.argmax(observed[:n + 1]))] for n in range(trials)]
    return {"observed": observed, "kept": kept}


def reached_at(observed: list[float], target: float) -> int | None:
    """The trial count at which the best observed value first reaches ``target``."""
    return next((n + 1 for n, v in enumerate(np.maximum.accumulate(observed)) if v >= target), None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=positive_int, default=100, help="seeds per budget")
    p.add_argument("--budgets", type=positive_ints, default="10,16", help="comma-separated trials per study")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    p.add_argument("--out", type=Path, default=None, help="folder for the JSON + markdown")
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or "tpe" not in variants or "random" not in variants:
        p.error(f"--variants: {', '.join(unknown) or 'tpe and random are required'}; known: {', '.join(VARIANTS)}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    budgets = args.budgets

    rows = []
    lines = [
        f"Toy objective: optimum {OPTIMUM:.1%}, noise sd {NOISE:.1%}; {args.seeds} seeds per budget. "
        "Regret: the optimum minus the true value of the trial with the best observed value. "
        "P(better): that a seed of the variant ends with lower regret than a seed of the product's TPE. "
        "Reaches random's best: the trial at which the best observed value first reaches random "
        "sampling's final best observed value in the same seed (median over seeds; > budget: never); "
        "a third: the first trials // 3 trials.",
        "",
        "| trials | variant | mean regret | IQM regret (95% CI) | P(better than tpe) | reaches random's best at "
        "| seeds reaching it within a third of the trials |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for trials in budgets:
        runs = {v: [run_study(v, seed, trials) for seed in range(args.seeds)] for v in variants}
        regret = {v: np.array([OPTIMUM - r["kept"][-1] for r in runs[v]]) for v in variants}
        for v in variants:
            reached = [reached_at(r["observed"], max(rand["observed"]))
                       for r, rand in zip(runs[v], runs["random"])]
            median = float(np.median([trials + 1 if n is None else n for n in reached]))
            third = sum(n is not None and n <= trials // 3 for n in reached) / len(reached)
            low, high = bootstrap_ci(regret[v])
            better = prob_improvement(-regret[v], -regret["tpe"])
            rows.append({"trials": trials, "variant": v, "mean_regret": float(regret[v].mean()),
                         "iqm_regret": float(iqm(regret[v])), "iqm_ci": [float(low), float(high)],
                         "p_better_than_tpe": float(better), "reached_random_best_median": median,
                         "reached_random_best_in_a_third": third,
                         "regrets": regret[v].tolist()})
            lines.append(f"| {trials} | {v} | {regret[v].mean():.2%} | {iqm(regret[v]):.2%} "
                         f"({low:.2%} to {high:.2%}) | {better:.2f} | "
                         f"{'never' if median > trials else f'{median:g}'} | {third:.0%} |")
    publish(args.out, "sampler_toy", {"seeds": args.seeds, "budgets": budgets, "noise": NOISE,
                                      "optimum": OPTIMUM, "rows": rows}, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

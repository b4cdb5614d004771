"""Samplers by name: Optuna's own, built from a name-to-factory table.

``--sampler tpe`` reads like the table it looks up. Schedulers are Ray's and
live beside the only Ray import, in ``studies/tune_adapter.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna


def startup_trials(trials: int) -> int:
    """How many random trials a model-based sampler starts a ``trials``-trial study with:
    Optuna's 10, but a 16-trial study can't wait for 10."""
    return max(4, min(10, trials // 3))


def tpe(seed: int, trials: int, **overrides: object) -> optuna.samplers.TPESampler:
    """The product's TPE; ``overrides`` change its TPESampler arguments (benchmarks
    compare variants of it, benchmarks/sampler_toy.py)."""
    arguments: dict[str, object] = {
        "seed": seed,
        "n_startup_trials": startup_trials(trials),
        "constant_liar": True,  # parallel trials: don't propose the same point twice
    }
    return optuna.samplers.TPESampler(**{**arguments, **overrides})


SAMPLERS: dict[str, Callable[[int, int], optuna.samplers.BaseSampler]] = {
    "tpe": tpe,
    "random": lambda seed, trials: optuna.samplers.RandomSampler(seed=seed),
    "cmaes": lambda seed, trials: optuna.samplers.CmaEsSampler(
        seed=seed, n_startup_trials=max(2, min(10, trials // 4)), warn_independent_sampling=False),
    "qmc": lambda seed, trials: optuna.samplers.QMCSampler(
        seed=seed, scramble=True, warn_independent_sampling=False),
    "gp": lambda seed, trials: optuna.samplers.GPSampler(
        seed=seed, n_startup_trials=startup_trials(trials)),
}


# Ray's schedulers, by the names studies/tune_adapter.py builds them under (listed
# here too so the command line can check a name without importing Ray).
SCHEDULER_NAMES = ("asha", "fifo", "hyperband", "median")


def make_sampler(name: str, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    """The sampler called ``name``, seeded; ``trials`` sizes its random start."""
    return SAMPLERS[name](seed, trials)

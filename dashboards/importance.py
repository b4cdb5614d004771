"""Which hyperparameters mattered, by Optuna's own PED-ANOVA evaluator.

Optuna's evaluators look at COMPLETE trials only, and under ASHA most trials
are pruned, so a study of 16 trials may hold 3 complete ones. The fair
comparison is at one epoch that many trials reached: each trial's validation
accuracy at that epoch is copied into an in-memory study as a COMPLETE trial,
and Optuna evaluates that study. The importances themselves are Optuna's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.importance import PedAnovaImportanceEvaluator
from optuna.trial import FrozenTrial, TrialState, create_trial

__all__ = ["MIN_TRIALS", "Importance", "param_importances"]

MIN_TRIALS = 8  # the deepest epoch that at least this many trials reached is compared
_FEWEST = 4  # below this, PED-ANOVA's top group would be one or two trials: no estimate
_TOP = 5  # PED-ANOVA's docs ask for at least 5 trials in the top quantile


@dataclass(frozen=True)
class Importance:
    """Normalized importances (summing to 1), most important first, and what they measure."""

    values: dict[str, float]
    epoch: int
    n_trials: int
    target_quantile: float
    final: bool  # True when the epoch is the full budget: the objective itself

    @property
    def target(self) -> str:
        """What the importances explain, in words."""
        when = "final validation accuracy" if self.final else f"validation accuracy at epoch {self.epoch}"
        return (
            f"reaching the top {self.target_quantile:.0%} of {when}, "
            f"over the {self.n_trials} trials that reached epoch {self.epoch}"
        )


def param_importances(trials: Sequence[FrozenTrial], budget: int | None = None) -> Importance | None:
    """Evaluates hyperparameter importances with Optuna's PED-ANOVA.

    Args:
        trials: A study's trials; COMPLETE and PRUNED ones with per-epoch
            validation accuracy are used.
        budget: The study's full epoch budget, to tell the final objective
            from an intermediate epoch; the deepest epoch seen when None.

    Returns:
        The importances at the deepest epoch at least :data:`MIN_TRIALS`
        trials reached (or the epoch most trials reached, when none did), or
        None when fewer than 4 trials can be compared or nothing was sampled.
    """
    curves = {
        trial.number: trial
        for trial in trials
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
        and trial.intermediate_values
        and trial.params
    }
    reached: dict[int, int] = {}
    for trial in curves.values():
        for epoch, value in trial.intermediate_values.items():
            if math.isfinite(value):
                reached[epoch] = reached.get(epoch, 0) + 1
    if not reached:
        return None
    deep = [epoch for epoch, count in reached.items() if count >= MIN_TRIALS]
    epoch = max(deep) if deep else max(reached, key=lambda e: (reached[e], e))
    if reached[epoch] < _FEWEST:
        return None
    snapshot = optuna.create_study(direction="maximize")  # in memory, never stored
    for trial in curves.values():
        value = trial.intermediate_values.get(epoch)
        if value is not None and math.isfinite(value):
            snapshot.add_trial(
                create_trial(value=value, params=trial.params, distributions=trial.distributions)
            )
    n = reached[epoch]
    quantile = min(0.5, max(0.1, _TOP / n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna warns about its own experimental features
        values = optuna.importance.get_param_importances(
            snapshot, evaluator=PedAnovaImportanceEvaluator(target_quantile=quantile)
        )
    if not values:
        return None
    budget = budget if budget is not None else max(reached)
    return Importance(
        values=dict(values), epoch=epoch, n_trials=n, target_quantile=quantile, final=epoch >= budget
    )

"""CIFAR ResNets: depth and width, optimiser and learning rate, regularisation."""

from __future__ import annotations

from typing import Any

from search_spaces import SpaceLimits
from search_spaces._common import suggest_training


def space(trial: Any, limits: SpaceLimits) -> dict[str, Any]:
    """Samples one ResNet configuration (an Optuna define-by-run function).

    Returns the trial's config keys; every value is a constant.
    """
    return {
        "model": "resnet",
        "depth": trial.suggest_categorical("depth", list(limits.depths)),
        "width": trial.suggest_categorical("width", list(limits.widths)),
        "aug_strength": trial.suggest_float("aug_strength", 0.0, limits.max_aug_strength),
        **suggest_training(trial, limits),
    }


# Where a short study starts: the recipe all three recorded 6-epoch random searches
# found (benchmarks/RESULTS.md section 16): SGD, augmentation near 0.1, label
# smoothing 0.12-0.15 and about one epoch of warm-up. Alone it scored 73.7-74.0% on
# the quick preset (73.2% on an AVX2-only CPU, section 18); the best of 16 random
# draws scored 73.5-75.1%.
SHORT_BUDGET_START = {"depth": 18, "width": 16, "aug_strength": 0.1, "optimizer": "sgd", "lr": 0.05,
                      "weight_decay": 8e-4, "label_smoothing": 0.13, "warmup_epochs": 1.0}
SHORT_BUDGET_EPOCHS = 10


def starts(limits: SpaceLimits) -> list[dict[str, Any]]:
    """Known-good parameters a study of this budget tries first (its first trial).

    Only for short trainings (at most 10 epochs) whose limits allow the recipe's
    ResNet-18 of width 16: longer budgets want other settings, not measured here.
    The warm-up is cut to the space's range (a quarter of the epochs) below 4 epochs.
    """
    start = {**SHORT_BUDGET_START,
             "warmup_epochs": min(SHORT_BUDGET_START["warmup_epochs"], limits.max_epochs / 4)}
    fits = (limits.max_epochs <= SHORT_BUDGET_EPOCHS and start["depth"] in limits.depths
            and start["width"] in limits.widths and start["aug_strength"] <= limits.max_aug_strength)
    return [start] if fits else []

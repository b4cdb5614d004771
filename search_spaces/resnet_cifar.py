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

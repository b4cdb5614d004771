"""CIFAR ResNets: depth and width, optimiser and learning rate, regularisation.

Ranges follow the CIFAR literature: AdamW peaks around 1e-3..1e-2 with weight
decay 0.01..0.1 (decoupled); SGD+Nesterov around 0.02..0.4 with 5e-4-ish L2.
"""

from __future__ import annotations

from typing import Any

from search_spaces import SpaceLimits


def space(trial: Any, limits: SpaceLimits) -> dict[str, Any]:
    """Samples one ResNet configuration (an Optuna define-by-run function)."""
    trial.suggest_categorical("depth", list(limits.depths))
    trial.suggest_categorical("width", list(limits.widths))
    optimizer = trial.suggest_categorical("optimizer", ["adamw", "sgd"])
    if optimizer == "adamw":
        trial.suggest_float("lr", 5e-4, 1e-2, log=True)
        trial.suggest_float("weight_decay", 1e-3, 0.2, log=True)
    else:
        trial.suggest_float("lr", 0.02, 0.4, log=True)
        trial.suggest_float("weight_decay", 5e-5, 2e-3, log=True)
    trial.suggest_float("aug_strength", 0.0, 1.0)
    trial.suggest_float("label_smoothing", 0.0, 0.2)
    trial.suggest_float("warmup_epochs", 0.0, min(3.0, limits.max_epochs / 4))
    return {"model": "resnet"}


def defaults(limits: SpaceLimits) -> dict[str, Any]:
    """The classic recipe scaled to the budget, as the first trial to beat."""
    return {
        "depth": min(limits.depths, key=lambda d: abs(d - 18)),
        "width": min(limits.widths, key=lambda w: abs(w - 64)),
        "optimizer": "adamw",
        "lr": 3e-3,
        "weight_decay": 0.05,
        "aug_strength": 0.25,
        "label_smoothing": 0.1,
        "warmup_epochs": round(min(3.0, limits.max_epochs / 4) / 3, 2),
    }

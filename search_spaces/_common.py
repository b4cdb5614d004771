"""Suggestions several spaces share: the optimiser and the regularisation recipe."""

from __future__ import annotations

from typing import Any

from search_spaces import SpaceLimits


def suggest_training(trial: Any, limits: SpaceLimits) -> dict[str, Any]:
    """Optimiser, learning rate, weight decay, label smoothing and warm-up.

    Ranges follow the CIFAR literature: AdamW peaks around 1e-3..1e-2 with
    decoupled weight decay 0.001..0.2; SGD + Nesterov around 0.02..0.4 with an
    L2 penalty near 5e-4.
    """
    optimizer = trial.suggest_categorical("optimizer", ["adamw", "sgd"])
    if optimizer == "adamw":
        lr = trial.suggest_float("lr", 5e-4, 1e-2, log=True)
        weight_decay = trial.suggest_float("weight_decay", 1e-3, 0.2, log=True)
    else:
        lr = trial.suggest_float("lr", 0.02, 0.4, log=True)
        weight_decay = trial.suggest_float("weight_decay", 5e-5, 2e-3, log=True)
    return {
        "optimizer": optimizer,
        "lr": lr,
        "weight_decay": weight_decay,
        "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.2),
        "warmup_epochs": trial.suggest_float("warmup_epochs", 0.0, min(3.0, limits.max_epochs / 4)),
    }

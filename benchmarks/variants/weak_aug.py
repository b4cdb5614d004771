"""resnet_cifar with augmentation strength capped at 0.3: the weak-augmentation arm of
the A/B in benchmarks/RESULTS.md (every top-10 trial of the recorded 6-epoch random
search had strength at most 0.25)."""

from __future__ import annotations

from typing import Any

from search_spaces import SpaceLimits
from search_spaces._common import suggest_training


def space(trial: Any, limits: SpaceLimits) -> dict[str, Any]:
    return {
        "model": "resnet",
        "depth": trial.suggest_categorical("depth", list(limits.depths)),
        "width": trial.suggest_categorical("width", list(limits.widths)),
        "aug_strength": trial.suggest_float("aug_strength", 0.0, 0.3),
        **suggest_training(trial, limits),
    }

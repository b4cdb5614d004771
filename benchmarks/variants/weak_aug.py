"""resnet_cifar with augmentation strength capped at 0.3: the weak-augmentation arm of
the A/B in benchmarks/RESULTS.md section 10 (every top-10 trial of the recorded 6-epoch
random search had strength at most 0.25). Since that A/B the built-in space caps the
strength by the budget (search_spaces.aug_cap), which gives 0.3 at 6 epochs too."""

from __future__ import annotations

import dataclasses
from typing import Any

from search_spaces import SpaceLimits
from search_spaces.resnet_cifar import space as resnet_space


def space(trial: Any, limits: SpaceLimits) -> dict[str, Any]:
    return resnet_space(trial, dataclasses.replace(limits, max_aug_strength=0.3))

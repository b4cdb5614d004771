"""resnet_cifar with width 16 only: the A/B arm of benchmarks/RESULTS.md section 13.

In the recorded quick-preset studies (6 epochs, 30% of the training images) no
width-8 ResNet reached the top: its best COMPLETE accuracy was 62.4% (AdamW) and
69.1% (SGD, depth 18) against 71.2% for width 16, and TPE seeded by two width-8
trials stayed there (seed 2 of section 12: 61.5%).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from search_spaces import SpaceLimits
from search_spaces.resnet_cifar import space as resnet_space


def space(trial: Any, limits: SpaceLimits) -> dict[str, Any]:
    return resnet_space(trial, dataclasses.replace(limits, widths=(16,)))

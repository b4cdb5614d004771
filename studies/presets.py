"""Budgets by name: how much data, how many epochs and trials, which model sizes.

``quick`` is sized for a 2-core CPU: up to 16 trials of small ResNets (depth 10
or 18, width 16) on 40% of CIFAR-10's training images for up to 6 epochs, within
a 13.5-minute time budget (TPE with ASHA, the reference recipes among them,
resnet_cifar's known-good start first and run in full: search_spaces.resnet_cifar.starts);
``full`` is for a GPU. A quick study searches width 16 only: at this budget no
width-8 net reached the top, and a TPE seeded with width-8 trials stayed there;
40% of the data instead of 30% raised the best of three seeds from 68.4-69.3% to
70.2-72.4% (benchmarks/RESULTS.md section 13). The time budget applies to the
preset's own budget only (see ``studies.run.time_budget``).
"""

from __future__ import annotations

import dataclasses

from search_spaces import SpaceLimits


@dataclasses.dataclass(frozen=True)
class Preset:
    """A study's budget. ``fixed`` keys go into every trial's TrialConfig."""

    name: str
    trials: int
    epochs: int
    data_fraction: float
    batch_size: int
    limits: SpaceLimits
    grace_period: int
    reduction_factor: int
    final_minutes: float | None = None  # a final run's training time per seed; None: the search's epochs
    time_budget: float | None = None  # minutes; the study stops there (the preset's own budget only)

    @property
    def fixed(self) -> dict[str, object]:
        return {"epochs": self.epochs, "data_fraction": self.data_fraction,
                "batch_size": self.batch_size}


PRESETS = {
    "smoke": Preset("smoke", trials=4, epochs=2, data_fraction=0.05, batch_size=64,
                    limits=SpaceLimits(depths=(10,), widths=(4, 8), max_epochs=2),
                    grace_period=1, reduction_factor=2),
    "quick": Preset("quick", trials=16, epochs=6, data_fraction=0.4, batch_size=128,
                    limits=SpaceLimits(depths=(10, 18), widths=(16,), max_epochs=6),
                    grace_period=1, reduction_factor=3, final_minutes=12.0, time_budget=13.5),
    "full": Preset("full", trials=64, epochs=30, data_fraction=1.0, batch_size=256,
                   limits=SpaceLimits(depths=(10, 18, 34), widths=(32, 64, 96, 128),
                                      max_epochs=30),
                   grace_period=3, reduction_factor=3),
}

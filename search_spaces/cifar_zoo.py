"""Every architecture family at once, each with its own sub-knobs, to rank them.

The family is one categorical parameter; depth, width and stochastic depth are
conditional parameters named per family (``vgg_depth``, ``convnext_p2_width``),
so Optuna keeps a separate distribution for each. Widths are each family's
suggested widths scaled by the preset's cap (a CPU preset gets narrow nets).
"""

from __future__ import annotations

from typing import Any

from search_spaces import SpaceLimits
from search_spaces._common import suggest_training

# The width at which the preset's resnet width cap is meant; families scale alike.
_REFERENCE_WIDTH = 64

AUG_POLICIES = {
    "randaugment": "crop,flip,jitter,randaugment,erasing",
    "trivialaugment": "crop,flip,trivialaugment,erasing",
    "autoaugment": "crop,flip,autoaugment,erasing",
    "mix": "crop,flip,mixup,cutmix",
    "geometric": "flip,translate,zoom,rotate,contrast",
}


def _widths(hint: tuple[int, ...], limits: SpaceLimits) -> list[int]:
    scale = min(1.0, max(limits.widths) / _REFERENCE_WIDTH)
    return sorted({max(2, round(w * scale)) for w in hint})


def space(trial: Any, limits: SpaceLimits) -> dict[str, Any]:
    """Samples an architecture family, its size, and the training recipe."""
    from trainers.models import list_models, model_info

    # The study's recorded choices, so a model added later does not change the
    # distribution of a study that is continued.
    family = trial.suggest_categorical("model", list(limits.models or list_models()))
    info = model_info(family)
    depths = list(info.depths)
    if family in ("resnet", "preact_resnet"):  # the preset's depth cap speaks of ResNets
        depths = [d for d in depths if d <= max(limits.depths)] or [min(depths)]
    config: dict[str, Any] = {
        "model": family,
        "depth": trial.suggest_categorical(f"{family}_depth", depths),
        "width": trial.suggest_categorical(f"{family}_width", _widths(info.widths_hint, limits)),
    }
    if info.has_drop_path:
        config["drop_path"] = trial.suggest_float(f"{family}_drop_path", 0.0, 0.3)
    policy = trial.suggest_categorical("aug_policy", sorted(AUG_POLICIES))
    config["aug_ops"] = AUG_POLICIES[policy]
    config["aug_strength"] = trial.suggest_float("aug_strength", 0.0, limits.max_aug_strength)
    config.update(suggest_training(trial, limits))
    return config

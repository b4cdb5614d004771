"""The two reference recipes, as named TrialConfigs, and their scaling to a budget.

``torch_reference`` is the torchvision-style CIFAR recipe around ResNet-18;
``keras_reference`` is the Keras example's ResNet-style net and preprocessing
layers (flip, translate 0.1, zoom 0.1, contrast 0.2). Both are enqueued as the
first trials of every study, as baselines the search has to beat.
"""

from __future__ import annotations

from trainers.config import TrialConfig
from trainers.errors import ConfigError

RECIPES: dict[str, TrialConfig] = {
    # RandomCrop(32, 4) + flip + ColorJitter(0.2, 0.2, 0.2) + RandAugment(2, 9) +
    # RandomErasing(0.25): exactly the ops below at aug_strength 0.5.
    "torch_reference": TrialConfig(
        model="resnet", depth=18, width=64, aug_ops="crop,flip,jitter,randaugment,erasing",
        aug_strength=0.5, optimizer="adamw", lr=1e-3, weight_decay=0.05, batch_size=128,
        epochs=100, warmup_epochs=5.0, warmup_start_factor=0.01, min_lr=1e-6,
        label_smoothing=0.1, grad_clip=1.0),
    # 3x3 64-channel stem; 3 blocks at 64, 3 at 128, 3 at 256 (stride 2 and a 1x1
    # projection where the shape changes); global average pooling; dense 10.
    "keras_reference": TrialConfig(
        model="resnet", depth=20, width=64, aug_ops="flip,translate,zoom,contrast",
        aug_strength=0.5, optimizer="adamw", lr=1e-3, weight_decay=0.05, batch_size=128,
        epochs=100, warmup_epochs=5.0, warmup_start_factor=0.0, min_lr=1e-6,
        label_smoothing=0.1),
}


def list_recipes() -> list[str]:
    """Names of the named configs, sorted."""
    return sorted(RECIPES)


def get_recipe(name: str, epochs: int | None = None, data_fraction: float | None = None,
               max_width: int | None = None, batch_size: int | None = None) -> TrialConfig:
    """A recipe, optionally scaled to a smaller budget.

    The warm-up keeps its share of the epochs, and the width is capped where a
    preset caps model size (a CPU cannot afford ResNet-18 at width 64).

    Raises:
        ConfigError: unknown name (the known ones are listed).
    """
    if name not in RECIPES:
        raise ConfigError(f"unknown config {name!r}; named configs: {', '.join(list_recipes())}")
    recipe = RECIPES[name]
    changes: dict[str, object] = {}
    if epochs is not None:
        changes["epochs"] = epochs
        changes["warmup_epochs"] = round(recipe.warmup_epochs * epochs / recipe.epochs, 3)
    if data_fraction is not None:
        changes["data_fraction"] = data_fraction
    if max_width is not None and recipe.width > max_width:
        changes["width"] = max_width
    if batch_size is not None:
        changes["batch_size"] = batch_size
    return recipe.replace(**changes)

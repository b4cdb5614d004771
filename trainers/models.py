"""Model registry and the architectures, adapted to small (CIFAR-size) images.

Families register a factory and a ``ModelInfo`` under a name (timm's
``register_model``); a trial names one in ``TrialConfig.model`` and
``create_model`` builds it. The architectures live in ``trainers/_models_*.py``
and register themselves when this module is imported.

``python -m trainers.models`` prints the parameter/FLOPs table of
``docs/models.md``.
"""

from __future__ import annotations

# Imported for their registrations.
from trainers import (  # noqa: F401
    _models_airbench,
    _models_classic,
    _models_efficient,
    _models_resnet,
)
from trainers._models_registry import (
    MIN_IMAGE_SIZE,
    ModelInfo,
    builtin_models,
    count_flops,
    count_parameters,
    create_model,
    list_models,
    model_info,
    register_model,
)

__all__ = [
    "MIN_IMAGE_SIZE",
    "ModelInfo",
    "builtin_models",
    "count_flops",
    "count_parameters",
    "create_model",
    "list_models",
    "model_info",
    "model_table",
    "register_model",
]

# Non-canonical depths that also get a row in the table.
_EXTRA_TABLE_ROWS = (("resnet", 20), ("resnet", 34), ("vgg", 11))


def model_table(num_classes: int = 10, image_size: int = 32) -> str:
    """A Markdown table of every family at its canonical depth and width (plus a
    few other depths): trainable parameters and forward GFLOPs for one image."""
    rows = [(name, model_info(name).default_depth) for name in builtin_models()]
    rows = sorted(rows + list(_EXTRA_TABLE_ROWS))
    lines = [
        f"| model | depth | width | params | GFLOPs ({image_size}px) | adapted for 32x32 |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, depth in rows:
        info = model_info(name)
        model = create_model(name, num_classes, depth, info.default_width, image_size=image_size)
        gflops = count_flops(model, image_size) / 1e9
        lines.append(
            f"| {name} | {depth} | {info.default_width} | {count_parameters(model):,} "
            f"| {gflops:.3g} | {info.description} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(model_table())

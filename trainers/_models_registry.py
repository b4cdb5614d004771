"""The model registry: families register a factory and its metadata by name.

Re-exported through ``trainers.models``; the architectures live in the
``_models_*`` modules beside this one and register themselves on import.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from trainers.errors import ConfigError

# The smallest input side every family is built and tested for: MNIST-size
# images. Smaller ones may work for some families, but nothing promises it.
MIN_IMAGE_SIZE = 28

Factory = Callable[..., nn.Module]


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a family accepts, for config validation and search spaces.

    Attributes:
        name: the registry key.
        depths: the depths the family defines (meaning is per family).
        default_depth: the canonical depth, used when a config asks for 0.
        default_width: the canonical width, used when a config asks for 0.
        widths_hint: sensible widths for a search space (any width >= 1 builds).
        has_drop_path: whether the family has residual blocks that
            stochastic depth can drop; others refuse ``drop_path > 0``.
        description: one line: what the family is and what was adapted to
            32x32 inputs.
    """

    name: str
    depths: tuple[int, ...]
    default_depth: int
    default_width: int
    widths_hint: tuple[int, ...]
    has_drop_path: bool
    description: str

    def __post_init__(self) -> None:
        if self.default_depth not in self.depths:
            raise ValueError(
                f"{self.name}: default depth {self.default_depth} not in {self.depths}"
            )
        if self.default_width < 1 or any(w < 1 for w in self.widths_hint):
            raise ValueError(f"{self.name}: widths must be >= 1")


_FACTORIES: dict[str, Factory] = {}
_INFOS: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    depths: tuple[int, ...],
    default_depth: int,
    default_width: int,
    widths_hint: tuple[int, ...],
    has_drop_path: bool,
    description: str,
) -> Callable[[Factory], Factory]:
    """Decorator that registers a family's factory and its ``ModelInfo``.

    The factory is called as ``f(num_classes=, depth=, width=)`` with the depth
    and width already resolved and checked, plus ``drop_path=`` when the family
    has it.
    """
    info = ModelInfo(name, tuple(depths), default_depth, default_width, tuple(widths_hint),
                     has_drop_path, description)

    def add(factory: Factory) -> Factory:
        if name in _FACTORIES:
            raise ValueError(f"model {name!r} is registered twice")
        _FACTORIES[name] = factory
        _INFOS[name] = info
        return factory

    return add


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_FACTORIES)


def builtin_models() -> list[str]:
    """The families this package defines, without those a plugin registered, sorted."""
    return sorted(n for n, f in _FACTORIES.items() if f.__module__.startswith("trainers."))


def model_info(name: str) -> ModelInfo:
    """The registered metadata of a family.

    Raises:
        ConfigError: unknown name (the known ones are listed).
    """
    if name not in _INFOS:
        raise ConfigError(f"unknown model {name!r}; known models: {list_models()}")
    return _INFOS[name]


def create_model(
    name: str,
    num_classes: int,
    depth: int = 0,
    width: int = 0,
    drop_path: float = 0.0,
    image_size: int = 32,
) -> nn.Module:
    """Builds a registered model.

    Args:
        name: registry key (``list_models()``).
        num_classes: outputs of the classifier.
        depth: one of ``model_info(name).depths``; 0 means the canonical one.
        width: the family's width knob (see its docstring); 0 means canonical.
        drop_path: stochastic-depth rate, in [0, 1); it rises linearly over
            the residual blocks up to this value at the deepest. Only families
            with ``has_drop_path`` accept a non-zero one.
        image_size: input side in pixels. Every model accepts any size from
            ``MIN_IMAGE_SIZE`` up (adaptive pooling before the classifier), so
            this only guards against inputs too small to be supported.

    Raises:
        ConfigError: unknown name (the known ones are listed), a depth the
            family does not define (the valid ones are listed), a width below
            1, or a drop_path or image_size out of range.
    """
    info = model_info(name)
    depth = depth or info.default_depth
    width = width or info.default_width
    if depth not in info.depths:
        raise ConfigError(f"{name} depth must be one of {list(info.depths)}, got {depth}")
    if width < 1:
        raise ConfigError(f"{name} width must be >= 1 (0 for the default {info.default_width}), "
                          f"got {width}")
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    if not 0 <= drop_path < 1:
        raise ConfigError(f"drop_path must be in [0, 1), got {drop_path}")
    if drop_path and not info.has_drop_path:
        with_it = [n for n in list_models() if _INFOS[n].has_drop_path]
        raise ConfigError(f"{name} has no residual blocks to drop, so drop_path must be 0 "
                          f"(got {drop_path}); models with drop_path: {with_it}")
    if image_size < MIN_IMAGE_SIZE:
        raise ConfigError(f"models support images of at least {MIN_IMAGE_SIZE} px, "
                          f"got image_size {image_size}")
    extra = {"drop_path": float(drop_path)} if info.has_drop_path else {}
    return _FACTORIES[name](num_classes=num_classes, depth=depth, width=width, **extra)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: nn.Module, image_size: int = 32) -> int:
    """Forward FLOPs for one ``3 x image_size x image_size`` image, in eval mode.

    Counted by ``torch.utils.flop_counter.FlopCounterMode``: a multiply-add is
    2 FLOPs; matmuls and convolutions are counted, elementwise ops, norms and
    pooling are not (they are a few percent at most).
    """
    param = next(model.parameters())
    x = torch.zeros(1, 3, image_size, image_size, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def drop_path_rates(drop_path: float, blocks: int) -> list[float]:
    """Per-block stochastic-depth rates rising linearly to ``drop_path`` at the
    last block (Huang et al. 2016's linear decay rule)."""
    return [drop_path * (i + 1) / blocks for i in range(blocks)]

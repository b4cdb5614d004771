"""Model registry and the architectures, adapted to small (CIFAR-size) images.

Models register a factory under a name (timm's ``register_model``); a trial
names one in ``TrialConfig.model`` and ``create_model`` builds it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from trainers.errors import ConfigError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that adds a factory ``f(num_classes, depth, width) -> nn.Module``."""

    def add(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return add


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int, depth: int, width: int) -> nn.Module:
    """Builds a registered model.

    Raises:
        ConfigError: unknown name (the known ones are listed) or a depth the
            architecture does not define.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; known models: {list_models()}")
    return _REGISTRY[name](num_classes=num_classes, depth=depth, width=width)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------- ResNet
# He et al. 2016, as adapted to CIFAR by the common reference implementations:
# a 3x3 stride-1 stem and no max-pool, since 32x32 inputs cannot afford the
# ImageNet stem's 4x downsampling.

RESNET_BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...], width: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        layers: list[nn.Module] = []
        cin = width
        for stage, count in enumerate(blocks):
            cout = width * 2**stage
            for i in range(count):
                layers.append(BasicBlock(cin, cout, stride=2 if stage > 0 and i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@register_model("resnet")
def resnet(num_classes: int, depth: int = 18, width: int = 64) -> nn.Module:
    """CIFAR ResNet of depth 10, 18 or 34; ``resnet`` 18 at width 64 has 11.17M params."""
    if depth not in RESNET_BLOCKS:
        raise ConfigError(f"resnet depth must be one of {sorted(RESNET_BLOCKS)}, got {depth}")
    return ResNet(RESNET_BLOCKS[depth], width, num_classes)

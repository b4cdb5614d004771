"""ResNets (He et al. 2016) and pre-activation ResNets, adapted to CIFAR.

Both use a 3x3 stride-1 stem and no max-pool, since 32x32 inputs cannot afford
the ImageNet stem's 4x downsampling, and end in adaptive average pooling.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from trainers._models_registry import drop_path_rates, register_model

# Blocks per stage. 10, 18 and 34 are the ImageNet layouts (4 stages); 20 is
# He et al.'s CIFAR layout (3 stages of 3 blocks, 6n+2 with n=3), the one the
# Keras CIFAR example uses.
RESNET_BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 20: (3, 3, 3), 34: (3, 4, 6, 3)}
PREACT_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, drop_path: float = 0.0) -> None:
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
        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.drop_path(self.bn2(self.conv2(out)))
        return torch.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """BN-ReLU before each conv (He et al. 2016b); the shortcut stays an identity
    path, so a projection takes the pre-activated input."""

    def __init__(self, cin: int, cout: int, stride: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return self.drop_path(out) + skip


class ResNet(nn.Module):
    def __init__(self, blocks: tuple[int, ...], width: int, num_classes: int,
                 drop_path: float = 0.0, preact: bool = False) -> None:
        super().__init__()
        block_type = PreActBlock if preact else BasicBlock
        if preact:  # the first block normalises the stem's output itself
            self.stem = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
            )
        rates = iter(drop_path_rates(drop_path, sum(blocks)))
        layers: list[nn.Module] = []
        cin = width
        for stage, count in enumerate(blocks):
            cout = width * 2**stage
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(block_type(cin, cout, stride, next(rates)))
                cin = cout
        if preact:  # pre-activation leaves the last block's sum un-normalised
            layers += [nn.BatchNorm2d(cin), nn.ReLU()]
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@register_model(
    "resnet", depths=tuple(RESNET_BLOCKS), default_depth=18, default_width=64,
    widths_hint=(16, 32, 64, 96, 128), has_drop_path=True,
    description="ResNet (He et al. 2016): 3x3 stride-1 stem and no max-pool, "
                "so the first stage runs at the full 32 px",
)
def resnet(num_classes: int, depth: int, width: int, drop_path: float) -> nn.Module:
    """CIFAR ResNet with basic blocks.

    ``depth`` is 10, 18 or 34 (4 stages, the layer count of the ImageNet
    naming; 10 is one block per stage) or 20 (3 stages of 3 blocks, the CIFAR
    layout of He et al.). ``width`` is the first stage's channels, doubled at
    each stage (64 canonical: 11,173,962 params at depth 18).
    """
    return ResNet(RESNET_BLOCKS[depth], width, num_classes, drop_path)


@register_model(
    "preact_resnet", depths=tuple(PREACT_BLOCKS), default_depth=18, default_width=64,
    widths_hint=(16, 32, 64, 96, 128), has_drop_path=True,
    description="pre-activation ResNet (He et al. 2016b): same CIFAR stem as resnet, "
                "BN-ReLU before the pooled head",
)
def preact_resnet(num_classes: int, depth: int, width: int, drop_path: float) -> nn.Module:
    """CIFAR pre-activation ResNet (BN-ReLU-conv order, identity shortcuts).

    ``depth`` is 18 or 34 and ``width`` the first stage's channels (64
    canonical), as for ``resnet``.
    """
    return ResNet(PREACT_BLOCKS[depth], width, num_classes, drop_path, preact=True)

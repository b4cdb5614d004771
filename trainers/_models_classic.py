"""Plain (non-residual) CNNs: LeNet-5, AlexNet, VGG and GoogLeNet, for CIFAR.

Each keeps its paper's layer pattern and drops only what 32x32 inputs cannot
afford (large strided stems, early max-pools); each ends in adaptive pooling
so any input from 28 px up works.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import Conv2dNormActivation

from trainers._models_registry import register_model


def _scaled(channels: int, width: int, canonical: int) -> int:
    return max(1, round(channels * width / canonical))


# ---------------------------------------------------------------- LeNet-5


@register_model(
    "lenet5", depths=(5,), default_depth=5, default_width=6, widths_hint=(6, 12, 24, 48),
    has_drop_path=False,
    description="LeNet-5 (LeCun et al. 1998): 3 input channels, C3 fully connected, "
                "linear output instead of RBF; adaptive 5x5 pool before the fc layers",
)
def lenet5(num_classes: int, depth: int, width: int) -> nn.Module:
    """Classic LeNet-5: conv5x5-tanh-avgpool twice, then fc 120, 84, classes.

    ``depth`` is 5 (the weight layers; the only one defined). ``width`` is the
    first conv's channels (6 canonical); the second conv has 16/6 of it. The
    fully connected sizes are fixed. 3x32x32, 10 classes: 62,006 params.
    """
    c2 = _scaled(16, width, 6)
    return nn.Sequential(
        nn.Conv2d(3, width, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(width, c2, 5), nn.Tanh(), nn.AvgPool2d(2),
        # 5x5 is what a 32 px input leaves; other sizes are pooled to it.
        nn.AdaptiveAvgPool2d(5), nn.Flatten(),
        nn.Linear(c2 * 25, 120), nn.Tanh(),
        nn.Linear(120, 84), nn.Tanh(),
        nn.Linear(84, num_classes),
    )


# ---------------------------------------------------------------- AlexNet


@register_model(
    "alexnet", depths=(8,), default_depth=8, default_width=64, widths_hint=(16, 32, 64, 96),
    has_drop_path=False,
    description="AlexNet-style (Krizhevsky et al. 2012): 3x3 stride-1 stem instead of "
                "11x11/4, no LRN, 2x2 adaptive pool, fc 1024 instead of 4096",
)
def alexnet(num_classes: int, depth: int, width: int) -> nn.Module:
    """AlexNet's 5 conv + 3 fc layout with overlapping 3x3/2 max-pools.

    ``depth`` is 8 (the only one defined). ``width`` is the first conv's
    channels (64 canonical, as torchvision's AlexNet); the convs have
    1, 3, 6, 4, 4 times it and the two hidden fc layers 16 times it.
    """
    c = [width * m for m in (1, 3, 6, 4, 4)]
    hidden = 16 * width
    return nn.Sequential(
        nn.Conv2d(3, c[0], 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(c[0], c[1], 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c[2], c[3], 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(c[3], c[4], 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(c[4] * 4, hidden), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


# ---------------------------------------------------------------- VGG

# Convs per stage; the stages have 1, 2, 4, 8, 8 times the width.
VGG_STAGES = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}


@register_model(
    "vgg", depths=tuple(VGG_STAGES), default_depth=16, default_width=64,
    widths_hint=(16, 32, 64, 96),
    has_drop_path=False,
    description="VGG with BatchNorm (Simonyan & Zisserman 2014): ceil-mode pools so 28 px "
                "survives 5 halvings, one linear layer instead of the 4096-wide fc stack",
)
def vgg(num_classes: int, depth: int, width: int) -> nn.Module:
    """VGG 11, 13, 16 or 19 with BatchNorm after every 3x3 conv.

    ``depth`` counts weight layers as in the paper (11, 13, 16, 19); the CIFAR
    head is a single linear layer, so the conv count is ``depth - 3``.
    ``width`` is the first stage's channels (64 canonical).
    """
    layers: list[nn.Module] = []
    cin = 3
    for count, mult in zip(VGG_STAGES[depth], (1, 2, 4, 8, 8)):
        for _ in range(count):
            layers.append(Conv2dNormActivation(cin, width * mult, 3))
            cin = width * mult
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(cin, num_classes))


# ---------------------------------------------------------------- GoogLeNet

# Inception v1 modules (Szegedy et al. 2014, table 1): 1x1, 3x3 reduce, 3x3,
# 5x5 reduce, 5x5, pool projection; "M" is a 3x3/2 max-pool.
GOOGLENET_PLAN = (
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "M",
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "M",
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),
)


class Inception(nn.Module):
    # Hand-written rather than torchvision's, whose "5x5" branch is a 3x3 (kept
    # there for weight compatibility); this one follows the paper.
    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int) -> None:
        super().__init__()
        self.branch1 = Conv2dNormActivation(cin, c1, 1)
        self.branch3 = nn.Sequential(Conv2dNormActivation(cin, c3r, 1),
                                     Conv2dNormActivation(c3r, c3, 3))
        self.branch5 = nn.Sequential(Conv2dNormActivation(cin, c5r, 1),
                                     Conv2dNormActivation(c5r, c5, 5))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), Conv2dNormActivation(cin, cp, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1, self.branch3, self.branch5, self.branch_pool)
        return torch.cat([b(x) for b in branches], 1)


@register_model(
    "googlenet", depths=(22,), default_depth=22, default_width=192, widths_hint=(48, 96, 192),
    has_drop_path=False,
    description="GoogLeNet (Szegedy et al. 2014): one 3x3 stride-1 conv stem instead of "
                "the 7x7/2 + pools, 2 max-pools, BatchNorm, no auxiliary heads or dropout",
)
def googlenet(num_classes: int, depth: int, width: int) -> nn.Module:
    """GoogLeNet's nine Inception v1 modules (3a-5b) on a CIFAR stem.

    ``depth`` is 22 (the paper's layer count; the only one defined).
    ``width`` is the stem's channels (192 canonical, the paper's input to 3a);
    every branch of every module scales with it.
    """
    layers: list[nn.Module] = [Conv2dNormActivation(3, width, 3)]
    cin = width
    for spec in GOOGLENET_PLAN:
        if spec == "M":
            layers.append(nn.MaxPool2d(3, 2, 1))
            continue
        c1, c3r, c3, c5r, c5, cp = (_scaled(c, width, 192) for c in spec)
        layers.append(Inception(cin, c1, c3r, c3, c5r, c5, cp))
        cin = c1 + c3 + c5 + cp
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(cin, num_classes))

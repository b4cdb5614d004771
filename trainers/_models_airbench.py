"""The airbench94 network (Jordan 2024), the fastest known way to 94% on CIFAR-10.

The architecture only: airbench's speed also comes from its training recipe
(data-derived whitening, Lookahead, TTA), which the shared trainer does not
replicate.
"""

from __future__ import annotations

import torch
from torch import nn

from trainers._models_registry import register_model


class _BatchNorm(nn.BatchNorm2d):
    # airbench's choices: fast-moving running stats (its "momentum 0.6" is
    # PyTorch's 0.4), a tiny eps, and a frozen scale: only the shift learns.
    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-12, momentum=0.4)
        self.weight.requires_grad_(False)


class _Conv(nn.Conv2d):
    # Identity-initialised on the first in_channels filters (airbench's dirac
    # init): each conv starts by passing its input through.
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        w = self.weight.data
        nn.init.dirac_(w[: w.size(1)])


class _ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int, convs: int) -> None:
        super().__init__()
        self.conv1 = _Conv(cin, cout)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = _BatchNorm(cout)
        self.rest = nn.ModuleList(
            nn.Sequential(_Conv(cout, cout), _BatchNorm(cout)) for _ in range(convs - 1)
        )
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        for conv_norm in self.rest:
            x = self.act(conv_norm(x))
        return x


class AirbenchNet(nn.Module):
    def __init__(self, widths: tuple[int, int, int], convs: int, num_classes: int) -> None:
        super().__init__()
        # 2x2 patches, 2*3*2*2 = 24 channels: airbench sets these weights to
        # the data's patch-whitening and freezes them; built without data,
        # this is an ordinary trainable conv.
        self.stem = nn.Sequential(nn.Conv2d(3, 24, 2, bias=True), nn.GELU())
        self.blocks = nn.Sequential(
            _ConvGroup(24, widths[0], convs),
            _ConvGroup(widths[0], widths[1], convs),
            _ConvGroup(widths[1], widths[2], convs),
        )
        self.pool = nn.AdaptiveMaxPool2d(1)  # airbench's MaxPool2d(3) at 32 px
        self.head = nn.Linear(widths[2], num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.blocks(self.stem(x)))
        # airbench's fixed output scale: keeps early logits small.
        return self.head(torch.flatten(x, 1)) / 9


@register_model(
    "airbench", depths=(2, 3), default_depth=2, default_width=64, widths_hint=(32, 64, 96, 128),
    has_drop_path=False,
    description="airbench94 (Jordan 2024): native to 32 px; trainable 2x2 stem instead of "
                "the data-whitening one, adaptive max-pool instead of MaxPool2d(3)",
)
def airbench(num_classes: int, depth: int, width: int) -> nn.Module:
    """airbench94: 2x2 conv stem, then 3 blocks of conv-pool-BN-GELU-conv-BN-GELU.

    ``depth`` is the convs per block: 2 is airbench94, 3 adds one more
    conv-BN-GELU to each block. ``width`` is the first block's channels (64
    canonical); the other two have 4 times it (256). The BatchNorm scales are
    frozen at 1, as in airbench, so ``count_parameters`` leaves them out.
    """
    return AirbenchNet((width, 4 * width, 4 * width), depth, num_classes)

"""EfficientNet and ConvNeXt for CIFAR, built from torchvision's own modules.

torchvision's classes already implement the blocks (MBConv with
squeeze-excitation, the ConvNeXt block with layer scale), their initialisation
and the per-block stochastic-depth schedule; only the stem is swapped here,
because both ImageNet stems downsample a 32 px image too early.
"""

from __future__ import annotations

from functools import partial

from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt, LayerNorm2d
from torchvision.models.efficientnet import EfficientNet, MBConvConfig
from torchvision.ops import Conv2dNormActivation

from trainers._models_registry import register_model

# ---------------------------------------------------------------- EfficientNet

# B0 (Tan & Le 2019, table 1): expand ratio, kernel, stride, in, out, layers.
EFFICIENTNET_B0 = (
    (1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1),
)
# Depth multipliers of B0..B7, in percent.
EFFICIENTNET_DEPTHS = (100, 110, 120, 140, 180, 220, 260, 310)


@register_model(
    "efficientnet", depths=EFFICIENTNET_DEPTHS, default_depth=100, default_width=100,
    widths_hint=(50, 75, 100, 110, 120, 140, 160, 180, 200), has_drop_path=True,
    description="EfficientNet-B0 (Tan & Le 2019), MBConv + squeeze-excitation: stride-1 "
                "stem, so 32 px ends at 2x2 instead of 1x1",
)
def efficientnet(num_classes: int, depth: int, width: int, drop_path: float) -> nn.Module:
    """EfficientNet with compound-scaling knobs, B0 at 100/100.

    ``depth`` is the depth multiplier in percent: 100 is B0 and the others are
    the B1-B7 multipliers (110, 120, 140, 180, 220, 260, 310); layers per
    stage are rounded up. ``width`` is the width multiplier in percent (any
    value >= 1; channels are rounded to multiples of 8, at least 8; 100 is
    B0). The third compound knob, resolution, is the config's
    ``image_size``. Classifier dropout is B0's 0.2.
    """
    setting = [MBConvConfig(*row, width_mult=width / 100, depth_mult=depth / 100)
               for row in EFFICIENTNET_B0]
    model = EfficientNet(setting, dropout=0.2, stochastic_depth_prob=drop_path,
                         num_classes=num_classes)
    model.features[0][0].stride = (1, 1)
    return model


# ---------------------------------------------------------------- ConvNeXt

CONVNEXT_DEPTHS = (2, 4, 6, 8)


def _convnext(num_classes: int, depth: int, width: int, drop_path: float, patch: int) -> nn.Module:
    dims = (width, 2 * width, 4 * width, 8 * width)
    blocks = (2, 2, depth, 2)
    setting = [CNBlockConfig(dims[i], dims[i + 1] if i < 3 else None, blocks[i]) for i in range(4)]
    model = ConvNeXt(setting, stochastic_depth_prob=drop_path, num_classes=num_classes)
    stem = Conv2dNormActivation(3, width, kernel_size=patch, stride=patch, padding=0,
                                norm_layer=partial(LayerNorm2d, eps=1e-6),
                                activation_layer=None, bias=True)
    nn.init.trunc_normal_(stem[0].weight, std=0.02)  # as ConvNeXt initialises its own
    nn.init.zeros_(stem[0].bias)
    model.features[0] = stem
    return model


@register_model(
    "convnext_p1", depths=CONVNEXT_DEPTHS, default_depth=6, default_width=64,
    widths_hint=(32, 48, 64, 96), has_drop_path=True,
    description="ConvNeXt (Liu et al. 2022), Pico-size: 1x1 patch stem instead of 4x4/4, "
                "so stages run at 32/16/8/4 px",
)
def convnext_p1(num_classes: int, depth: int, width: int, drop_path: float) -> nn.Module:
    """Small CIFAR ConvNeXt with a 1x1 stride-1 patch stem.

    ConvNeXt blocks (depthwise 7x7, LayerNorm, 4x inverted bottleneck, layer
    scale) in 4 stages of (2, 2, depth, 2) blocks, with dims 1, 2, 4, 8 times
    ``width``. ``depth`` is the third stage's blocks: 2, 4, 6 (canonical, the
    layout of ConvNeXt-Atto/Pico) or 8. ``width`` is the first stage's dims
    (64 canonical). The stochastic-depth rate rises linearly over the blocks
    to ``drop_path`` at the last.
    """
    return _convnext(num_classes, depth, width, drop_path, patch=1)


@register_model(
    "convnext_p2", depths=CONVNEXT_DEPTHS, default_depth=6, default_width=64,
    widths_hint=(32, 48, 64, 96), has_drop_path=True,
    description="ConvNeXt (Liu et al. 2022), Pico-size: 2x2/2 patch stem instead of 4x4/4, "
                "so stages run at 16/8/4/2 px",
)
def convnext_p2(num_classes: int, depth: int, width: int, drop_path: float) -> nn.Module:
    """As ``convnext_p1`` (same depth and width meaning) with a 2x2 stride-2
    patch stem: every stage at half the resolution, about a quarter of the FLOPs."""
    return _convnext(num_classes, depth, width, drop_path, patch=2)


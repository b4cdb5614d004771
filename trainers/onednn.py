"""Keeps CPU training off a oneDNN kernel that corrupts memory: strided 1x1 convolutions.

The oneDNN in torch 2.14 computes the weight gradient of a 1x1 convolution with
stride > 1 and fewer input channels than its kernel's channel block (8 with
AVX2, 16 with AVX-512) past the end of a workspace when the input is channels
last (uxlfoundation/oneDNN#6035, open). Measured here
(``benchmarks/onednn_1x1.py``, benchmarks/RESULTS.md section 19): with AVX2
kernels, 2 to 6 input channels give wrong weight gradients (up to 97% off),
hang, or crash the process at 8 to 64 px; with AVX-512 kernels, 2 to 8 input
channels crash it at 64 px. A ResNet shortcut at width 4 (AVX2), or at width 8
on 64 px images (AVX-512), is such a convolution.

A 1x1 convolution without padding is the same function of its input's every
``stride``-th pixel with stride 1, whose kernel is sound, so such a layer gets
a forward pre-hook that subsamples and stride 1: the same outputs, gradients
and state dict, on every CPU, for any model (a plugin's too), at the cost of
a copy of a quarter of a small tensor.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

# The widest channel block of oneDNN's x86 1x1 kernels (AVX-512); AVX2's is 8.
_CHANNEL_BLOCK = 16


def sidestep_strided_1x1(model: nn.Module) -> int:
    """Rewrites ``model``'s affected 1x1 convolutions in place, as the module docstring says.

    Args:
        model: any module; only ``nn.Conv2d`` layers with a 1x1 kernel, a stride
            above 1, no padding, one group and fewer than 16 input channels change.

    Returns:
        How many layers were rewritten (0 leaves the model as it was).
    """
    count = 0
    for module in model.modules():
        if not _affected(module):
            continue
        stride = tuple(module.stride)
        module.stride = (1, 1)
        module.register_forward_pre_hook(functools.partial(_subsample, stride))
        count += 1
    return count


def _affected(module: nn.Module) -> bool:
    return (type(module) is nn.Conv2d and tuple(module.kernel_size) == (1, 1)
            and tuple(module.stride) != (1, 1) and module.padding in ((0, 0), "valid")
            and module.groups == 1 and module.in_channels < _CHANNEL_BLOCK)


def _subsample(stride: tuple[int, int], module: nn.Module,
               args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    x = args[0]
    return (x[..., :: stride[0], :: stride[1]], *args[1:])

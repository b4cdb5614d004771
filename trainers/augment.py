"""Batched data augmentation with per-sample randomness, on the training device.

Every op takes a float batch ``[B, C, H, W]`` in [0, 1] and a ``torch.Generator``
on the batch's device, draws its random numbers per sample in one call, and
returns a batch of the same shape, dtype and range. There is no per-image Python:
a loop runs over ops, never over images. Hand-written rather than torchvision's
v2 transforms because those draw one random parameter per call (per batch), and
per-image calls through a DataLoader are what made the classic pipeline slow.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class AugmentPolicy:
    """Concrete augmentation settings; ``from_strength`` maps one knob onto them."""

    flip_p: float = 0.0
    translate_pad: int = 0
    jitter: float = 0.0
    erase_p: float = 0.0
    randaug_p: float = 0.0
    randaug_ops: int = 2
    randaug_magnitude: float = 0.0

    @classmethod
    def from_strength(cls, strength: float, image_size: int = 32) -> AugmentPolicy:
        """Maps ``aug_strength`` in [0, 1] onto every op; 0 is the identity.

        Around 0.5 this is the classic CIFAR recipe (flip, 4 px crop padding,
        mild colour jitter) plus occasional RandAugment and erasing; 1 doubles
        the translation and applies RandAugment at full magnitude to every image.
        """
        s = float(strength)
        return cls(
            flip_p=0.5 * min(1.0, 4 * s),
            translate_pad=round(8 * s * image_size / 32),
            jitter=0.4 * s,
            erase_p=0.5 * s,
            randaug_p=s,
            randaug_ops=2,
            randaug_magnitude=s,
        )

    @property
    def is_identity(self) -> bool:
        return (
            self.flip_p == 0
            and self.translate_pad == 0
            and self.jitter == 0
            and self.erase_p == 0
            and (self.randaug_p == 0 or self.randaug_magnitude == 0)
        )


def augment(x: torch.Tensor, policy: AugmentPolicy, gen: torch.Generator) -> torch.Tensor:
    """Applies a policy to a float batch in [0, 1]; returns a new batch."""
    if policy.is_identity:
        return x
    if policy.translate_pad:
        x = random_translate(x, policy.translate_pad, gen)
    if policy.flip_p:
        x = random_flip(x, policy.flip_p, gen)
    if policy.randaug_p and policy.randaug_magnitude:
        x = rand_augment(x, policy.randaug_ops, policy.randaug_magnitude, gen, policy.randaug_p)
    if policy.jitter:
        x = color_jitter(x, policy.jitter, gen)
    if policy.erase_p:
        x = random_erasing(x, policy.erase_p, gen)
    return x


def _uniform(n: int, gen: torch.Generator, device: torch.device, low=0.0, high=1.0):
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def random_flip(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Mirrors each image left-right with probability ``p``."""
    flip = _uniform(len(x), gen, x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_translate(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` (shifts of up to ``pad`` px)."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def _gray(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
    return (x * weights[:, None, None]).sum(1, keepdim=True)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (other + factor[:, None, None, None] * (x - other)).clamp_(0, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean.expand_as(x), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x).expand_as(x), factor)


def adjust_sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    kernel = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], device=x.device, dtype=x.dtype) / 13
    c = x.shape[1]
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.expand(c, 1, 3, 3), groups=c)
    return _blend(x, blurred, factor)


def color_jitter(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation, each by a factor in [1-s, 1+s] per image."""
    n = len(x)
    for op in (adjust_brightness, adjust_contrast, adjust_saturation):
        x = op(x, _uniform(n, gen, x.device, 1 - strength, 1 + strength))
    return x


def random_erasing(
    x: torch.Tensor,
    p: float,
    gen: torch.Generator,
    scale: tuple[float, float] = (0.02, 0.25),
    ratio: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """Replaces a random rectangle of each chosen image by uniform noise."""
    b, c, h, w = x.shape
    dev = x.device
    area = _uniform(b, gen, dev, *scale) * h * w
    log_r = _uniform(b, gen, dev, math.log(ratio[0]), math.log(ratio[1]))
    eh = (area * log_r.exp()).sqrt().round().clamp(1, h)
    ew = (area / log_r.exp()).sqrt().round().clamp(1, w)
    top = (_uniform(b, gen, dev) * (h - eh + 1)).floor()
    left = (_uniform(b, gen, dev) * (w - ew + 1)).floor()
    rows = torch.arange(h, device=dev)[None, :]
    cols = torch.arange(w, device=dev)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    chosen = _uniform(b, gen, dev) < p
    mask = (in_rows[:, :, None] & in_cols[:, None, :] & chosen[:, None, None])[:, None]
    noise = torch.rand(x.shape, generator=gen, device=dev, dtype=x.dtype)
    return torch.where(mask, noise, x)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _signed(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.where(_uniform(n, gen, device) < 0.5, -1.0, 1.0)


def _rotate(x, m, gen):
    angle = _signed(len(x), gen, x.device) * math.radians(30.0) * m
    cos, sin = angle.cos(), angle.sin()
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    return _affine(x, theta.to(x.dtype))


def _shear(axis: int):
    def op(x, m, gen):
        s = _signed(len(x), gen, x.device) * 0.3 * m
        theta = torch.zeros(len(x), 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, axis, 1 - axis] = s
        return _affine(x, theta)

    return op


def _translate(axis: int):
    def op(x, m, gen):
        # affine_grid works in [-1, 1] coordinates: 0.45 of the side is 0.9 there.
        t = _signed(len(x), gen, x.device) * 0.9 * m
        theta = torch.zeros(len(x), 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, axis, 2] = t
        return _affine(x, theta)

    return op


def _factor_op(adjust):
    def op(x, m, gen):
        return adjust(x, 1 + _signed(len(x), gen, x.device) * 0.9 * m)

    return op


def _solarize(x, m, gen):
    threshold = 1.0 - m
    return torch.where(x >= threshold, 1.0 - x, x) if m > 0 else x


def _posterize(x, m, gen):
    bits = 8 - round(4 * m)
    if bits >= 8:
        return x
    step = 2 ** (8 - bits)
    return torch.div((x * 255).round(), step, rounding_mode="floor") * step / 255


def _autocontrast(x, m, gen):
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    scale = torch.where(high > low, 1.0 / (high - low).clamp_min(1e-6), torch.ones_like(high))
    out = torch.where(high > low, (x - low) * scale, x)
    return x + m * (out - x) if m < 1 else out


def _equalize(x, m, gen):
    """Histogram equalisation per image and channel, all at once via scatter_add."""
    b, c, h, w = x.shape
    levels = (x * 255).round().long().view(b * c, h * w)
    hist = torch.zeros(b * c, 256, device=x.device, dtype=x.dtype)
    hist.scatter_add_(1, levels, torch.ones_like(levels, dtype=x.dtype))
    cdf = hist.cumsum(1)
    cdf_min = torch.where(hist > 0, cdf, torch.full_like(cdf, float("inf"))).amin(1, keepdim=True)
    lut = ((cdf - cdf_min) / (h * w - cdf_min).clamp_min(1)).clamp(0, 1)
    out = lut.gather(1, levels).view(b, c, h, w)
    return x + m * (out - x) if m < 1 else out


# The RandAugment op set (Cubuk et al. 2020), magnitudes as fractions of the max.
RANDAUGMENT_OPS = {
    "identity": lambda x, m, gen: x,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "rotate": _rotate,
    "solarize": _solarize,
    "color": _factor_op(adjust_saturation),
    "posterize": _posterize,
    "contrast": _factor_op(adjust_contrast),
    "brightness": _factor_op(adjust_brightness),
    "sharpness": _factor_op(adjust_sharpness),
    "shear_x": _shear(0),
    "shear_y": _shear(1),
    "translate_x": _translate(0),
    "translate_y": _translate(1),
}


def rand_augment(
    x: torch.Tensor, num_ops: int, magnitude: float, gen: torch.Generator, p: float = 1.0
) -> torch.Tensor:
    """RandAugment: ``num_ops`` rounds, each giving every image one random op.

    Each image takes part with probability ``p``; images that drew the same op
    in a round are transformed together, so the work is one call per op.
    """
    ops = list(RANDAUGMENT_OPS.values())
    x = x.clone()
    active = _uniform(len(x), gen, x.device) < p
    for _ in range(num_ops):
        choice = torch.randint(0, len(ops), (len(x),), generator=gen, device=x.device)
        for k, op in enumerate(ops[1:], start=1):
            idx = ((choice == k) & active).nonzero().squeeze(1)
            if len(idx):
                x[idx] = op(x[idx], magnitude, gen).clamp_(0, 1)
    return x

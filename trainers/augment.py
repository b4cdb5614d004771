"""Batched data augmentation with per-sample randomness, on the training device.

Every op takes a float batch ``[B, C, H, W]`` in [0, 1] and a ``torch.Generator``
on the batch's device, draws its random numbers per sample in one call, and
returns a batch of the same shape, dtype and range. There is no per-image Python:
loops run over ops (or policy entries), never over images. Hand-written rather
than torchvision's transforms because those draw one random parameter per call,
and per-image calls through a DataLoader are what make the classic pipeline slow
(benchmarks/RESULTS.md measures the difference).

One knob, ``aug_strength`` in [0, 1], scales every selected op; 0 is the
identity and 0.5 gives the reference recipes' magnitudes (crop padding 4, flip
0.5, colour jitter 0.2, RandAugment 2 ops at magnitude 9 of 30, erasing 0.25,
translate and zoom 0.1, contrast 0.2, mixup and cutmix alpha 1).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
import torch.nn.functional as F

from trainers.errors import ConfigError

# Ops a TrialConfig may select in ``aug_ops`` (comma-separated).
AUG_OPS = ("crop", "flip", "jitter", "contrast", "rotate", "translate", "zoom", "erasing",
           "randaugment", "trivialaugment", "autoaugment", "mixup", "cutmix")
DEFAULT_OPS = "crop,flip,jitter,randaugment,erasing"


def parse_ops(text: str) -> tuple[str, ...]:
    """Splits and checks an ``aug_ops`` string; ``""`` or ``none`` selects nothing.

    Raises:
        ConfigError: an op that does not exist (the valid ones are listed).
    """
    ops = tuple(op.strip() for op in text.split(",") if op.strip() and op.strip() != "none")
    unknown = [op for op in ops if op not in AUG_OPS]
    if unknown:
        raise ConfigError(f"unknown augmentation op(s) {unknown} in aug_ops; valid ops: {AUG_OPS}")
    return ops


@dataclasses.dataclass(frozen=True)
class AugmentPolicy:
    """Concrete augmentation settings; ``from_strength`` maps one knob onto them."""

    flip_p: float = 0.0
    translate_pad: int = 0
    jitter: float = 0.0
    contrast: float = 0.0
    rotate_deg: float = 0.0
    translate_frac: float = 0.0
    zoom: float = 0.0
    erase_p: float = 0.0
    randaug_p: float = 0.0
    randaug_ops: int = 2
    randaug_magnitude: float = 0.0
    trivial_max: float = 0.0
    autoaug_scale: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    @classmethod
    def from_strength(cls, strength: float, image_size: int = 32,
                      ops: str | tuple[str, ...] = DEFAULT_OPS) -> AugmentPolicy:
        """Maps ``aug_strength`` in [0, 1] onto the selected ops; 0 is the identity."""
        s = float(strength)
        on = set(parse_ops(ops) if isinstance(ops, str) else ops)
        full = min(1.0, 2 * s)  # reaches the op's standard setting at s = 0.5

        def pick(op: str, value: float) -> float:
            return value if op in on else 0.0

        return cls(
            flip_p=pick("flip", 0.5 * min(1.0, 4 * s)),
            translate_pad=int(pick("crop", round(8 * s * image_size / 32))),
            jitter=pick("jitter", 0.4 * s),
            contrast=pick("contrast", 0.4 * s),
            rotate_deg=pick("rotate", 30.0 * s),
            translate_frac=pick("translate", 0.2 * s),
            zoom=pick("zoom", 0.2 * s),
            erase_p=pick("erasing", 0.5 * s),
            randaug_p=pick("randaugment", full),
            randaug_ops=2,
            randaug_magnitude=pick("randaugment", 0.6 * s),
            trivial_max=pick("trivialaugment", full),
            autoaug_scale=pick("autoaugment", full),
            mixup_alpha=pick("mixup", 2 * s),
            cutmix_alpha=pick("cutmix", 2 * s),
        )

    @property
    def is_identity(self) -> bool:
        return not (self.flip_p or self.translate_pad or self.jitter or self.contrast
                    or self.rotate_deg or self.translate_frac or self.zoom or self.erase_p
                    or (self.randaug_p and self.randaug_magnitude) or self.trivial_max
                    or self.autoaug_scale)

    @property
    def mixes(self) -> bool:
        return bool(self.mixup_alpha or self.cutmix_alpha)


def augment(x: torch.Tensor, policy: AugmentPolicy, gen: torch.Generator) -> torch.Tensor:
    """Applies a policy's image ops to a float batch in [0, 1]; returns a new batch.

    Mixup and cutmix change the labels too, so they live in ``mix``.
    """
    if policy.is_identity:
        return x
    if policy.translate_pad:
        x = random_translate(x, policy.translate_pad, gen)
    if policy.flip_p:
        x = random_flip(x, policy.flip_p, gen)
    if policy.rotate_deg or policy.translate_frac or policy.zoom:
        x = random_affine(x, policy.rotate_deg, policy.translate_frac, policy.zoom, gen)
    if policy.autoaug_scale:
        x = auto_augment(x, gen, policy.autoaug_scale)
    if policy.randaug_p and policy.randaug_magnitude:
        x = rand_augment(x, policy.randaug_ops, policy.randaug_magnitude, gen, policy.randaug_p)
    if policy.trivial_max:
        x = trivial_augment(x, gen, policy.trivial_max)
    if policy.jitter:
        x = color_jitter(x, policy.jitter, gen)
    if policy.contrast:
        x = adjust_contrast(x, _uniform(len(x), gen, x.device, 1 - policy.contrast, 1 + policy.contrast))
    if policy.erase_p:
        x = random_erasing(x, policy.erase_p, gen)
    return x


def _uniform(n: int, gen: torch.Generator, device: torch.device, low=0.0, high=1.0):
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def _signed(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.where(_uniform(n, gen, device) < 0.5, -1.0, 1.0)


def _col(v: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """A per-sample value (or a scalar) shaped to broadcast over ``[B, C, H, W]``."""
    return torch.as_tensor(v, device=x.device, dtype=x.dtype).reshape(-1, 1, 1, 1)


# ---------------------------------------------------------------- geometry


def random_flip(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Mirrors each image left-right with probability ``p``."""
    flip = _uniform(len(x), gen, x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_translate(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` (whole-pixel shifts of up to ``pad``)."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _theta(n: int, x: torch.Tensor, angle=None, shear=None, shift=None, scale=None):
    """Per-sample 2x3 affine matrices in affine_grid's [-1, 1] coordinates."""
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=torch.float32)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    if angle is not None:
        cos, sin = angle.cos(), angle.sin()
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    if shear is not None:
        axis, s = shear
        theta[:, axis, 1 - axis] = s
    if shift is not None:
        axis, t = shift
        theta[:, axis, 2] = t
    if scale is not None:
        theta[:, :, :2] = theta[:, :, :2] / scale[:, None, None]
    return theta


def random_affine(x: torch.Tensor, degrees: float, translate: float, zoom: float,
                  gen: torch.Generator) -> torch.Tensor:
    """Rotation in [-degrees, degrees], shift up to ``translate`` of the side, zoom 1 +- zoom."""
    n = len(x)
    angle = _uniform(n, gen, x.device, -1, 1) * math.radians(degrees)
    scale = _uniform(n, gen, x.device, 1 - zoom, 1 + zoom)
    theta = _theta(n, x, angle=angle, scale=scale)
    theta[:, 0, 2] = _uniform(n, gen, x.device, -1, 1) * 2 * translate
    theta[:, 1, 2] = _uniform(n, gen, x.device, -1, 1) * 2 * translate
    return _affine(x, theta)


# ---------------------------------------------------------------- colour


def _gray(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
    return (x * weights[:, None, None]).sum(1, keepdim=True)


def _blend(x: torch.Tensor, other: torch.Tensor, factor) -> torch.Tensor:
    return (other + _col(factor, x) * (x - other)).clamp_(0, 1)


def adjust_brightness(x: torch.Tensor, factor) -> torch.Tensor:
    return _blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x: torch.Tensor, factor) -> torch.Tensor:
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean.expand_as(x), factor)


def adjust_saturation(x: torch.Tensor, factor) -> torch.Tensor:
    return _blend(x, _gray(x).expand_as(x), factor)


def adjust_sharpness(x: torch.Tensor, factor) -> torch.Tensor:
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


def random_erasing(x: torch.Tensor, p: float, gen: torch.Generator,
                   scale: tuple[float, float] = (0.02, 0.25),
                   ratio: tuple[float, float] = (0.3, 3.3)) -> torch.Tensor:
    """Replaces a random rectangle of each chosen image by uniform noise (cutout-like)."""
    b = len(x)
    chosen = _uniform(b, gen, x.device) < p
    mask = _boxes(x, gen, _uniform(b, gen, x.device, *scale), ratio) & chosen[:, None, None, None]
    noise = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    return torch.where(mask, noise, x)


def _boxes(x: torch.Tensor, gen: torch.Generator, area_frac: torch.Tensor,
           ratio: tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:
    """One random rectangle per image covering about ``area_frac``; a [B,1,H,W] mask."""
    b, _, h, w = x.shape
    dev = x.device
    area = area_frac * h * w
    log_r = _uniform(b, gen, dev, math.log(ratio[0]), math.log(ratio[1]))
    eh = (area * log_r.exp()).sqrt().round().clamp(1, h)
    ew = (area / log_r.exp()).sqrt().round().clamp(1, w)
    top = (_uniform(b, gen, dev) * (h - eh + 1)).floor()
    left = (_uniform(b, gen, dev) * (w - ew + 1)).floor()
    rows = torch.arange(h, device=dev)[None, :]
    cols = torch.arange(w, device=dev)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


# ---------------------------------------------------------------- policy ops
# Each takes a batch, a per-sample magnitude in [0, 1] (tensor [n]) and the
# generator. Magnitude 1 is the top of RandAugment's range (its magnitude 30).


def _rotate(x, m, gen):
    angle = _signed(len(x), gen, x.device) * math.radians(30.0) * m
    return _affine(x, _theta(len(x), x, angle=angle))


def _shear(axis: int):
    def op(x, m, gen):
        return _affine(x, _theta(len(x), x, shear=(axis, _signed(len(x), gen, x.device) * 0.3 * m)))

    return op


def _translate(axis: int):
    def op(x, m, gen):
        # 0.45 of the side (150/331, as in RandAugment) is 0.9 in [-1, 1] coordinates.
        return _affine(x, _theta(len(x), x, shift=(axis, _signed(len(x), gen, x.device) * 0.9 * m)))

    return op


def _factor_op(adjust):
    def op(x, m, gen):
        return adjust(x, 1 + _signed(len(x), gen, x.device) * 0.9 * m)

    return op


def _solarize(x, m, gen):
    return torch.where(x >= 1.0 - _col(m, x) + 1e-6, 1.0 - x, x)


def _posterize(x, m, gen):
    bits = 8 - (4 * _col(m, x)).round()
    step = 2.0 ** (8 - bits)
    return torch.div((x * 255).round(), step, rounding_mode="floor") * step / 255


def _autocontrast(x, m, gen):
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    out = torch.where(high > low, (x - low) / (high - low).clamp_min(1e-6), x)
    return x + _col(m, x) * (out - x)


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
    return x + _col(m, x) * (out - x)


def _invert(x, m, gen):
    return x + _col(m, x) * (1 - 2 * x)


# The RandAugment / TrivialAugment op set (Cubuk et al. 2020; Mueller & Hutter 2021).
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
_POLICY_OPS = {**RANDAUGMENT_OPS, "invert": _invert}


def _apply_grouped(x: torch.Tensor, choice: torch.Tensor, ops: list, magnitude: torch.Tensor,
                   gen: torch.Generator) -> torch.Tensor:
    """Applies ``ops[choice[i]]`` to image i; images sharing an op go in one call."""
    for k, op in enumerate(ops):
        if op is None:
            continue
        idx = (choice == k).nonzero().squeeze(1)
        if len(idx):
            x[idx] = op(x[idx], magnitude[idx], gen).clamp_(0, 1)
    return x


def rand_augment(x: torch.Tensor, num_ops: int, magnitude: float, gen: torch.Generator,
                 p: float = 1.0) -> torch.Tensor:
    """RandAugment: ``num_ops`` rounds, each giving every taking-part image one random op.

    Each image takes part with probability ``p``.
    """
    ops = [None] + list(RANDAUGMENT_OPS.values())[1:]  # index 0 is the identity
    x = x.clone()
    active = _uniform(len(x), gen, x.device) < p
    mags = torch.full((len(x),), float(magnitude), device=x.device)
    for _ in range(num_ops):
        choice = torch.randint(0, len(ops), (len(x),), generator=gen, device=x.device)
        x = _apply_grouped(x, torch.where(active, choice, 0), ops, mags, gen)
    return x


def trivial_augment(x: torch.Tensor, gen: torch.Generator, max_magnitude: float = 1.0) -> torch.Tensor:
    """TrivialAugment: one random op per image at a magnitude uniform in [0, max]."""
    ops = [None] + list(RANDAUGMENT_OPS.values())[1:]
    choice = torch.randint(0, len(ops), (len(x),), generator=gen, device=x.device)
    mags = _uniform(len(x), gen, x.device) * max_magnitude
    return _apply_grouped(x.clone(), choice, ops, mags, gen)


@functools.cache
def _cifar_autoaugment_policy() -> list[tuple[tuple[str, float, int | None], ...]]:
    # The learned CIFAR-10 policy as torchvision ships it (25 sub-policies of two
    # (op, probability, magnitude bin 0-9) steps); read from there, not retyped.
    from torchvision.transforms import AutoAugment, AutoAugmentPolicy

    return AutoAugment()._get_policies(AutoAugmentPolicy.CIFAR10)


_AA_NAMES = {"Invert": "invert", "Contrast": "contrast", "Rotate": "rotate",
             "TranslateX": "translate_x", "TranslateY": "translate_y", "Sharpness": "sharpness",
             "ShearX": "shear_x", "ShearY": "shear_y", "AutoContrast": "autocontrast",
             "Equalize": "equalize", "Solarize": "solarize", "Color": "color",
             "Posterize": "posterize", "Brightness": "brightness"}


def auto_augment(x: torch.Tensor, gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    """AutoAugment's CIFAR-10 policy: a random sub-policy per image, two steps each.

    ``scale`` multiplies every step's probability and magnitude (1 is the policy).
    """
    policy = _cifar_autoaugment_policy()
    x = x.clone()
    sub = torch.randint(0, len(policy), (len(x),), generator=gen, device=x.device)
    for step in range(2):
        coin = _uniform(len(x), gen, x.device)
        for k, steps in enumerate(policy):
            name, prob, bin_ = steps[step]
            idx = ((sub == k) & (coin < prob * scale)).nonzero().squeeze(1)
            if len(idx):
                m = torch.full((len(idx),), scale * (1.0 if bin_ is None else bin_ / 9), device=x.device)
                x[idx] = _POLICY_OPS[_AA_NAMES[name]](x[idx], m, gen).clamp_(0, 1)
    return x


# ---------------------------------------------------------------- label mixing


def mix(x: torch.Tensor, y: torch.Tensor, num_classes: int, policy: AugmentPolicy,
        gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup and/or CutMix with a shuffled partner; returns images and soft labels.

    With both on, each image draws one of the two. The mixing weights come from
    Beta(alpha, alpha) drawn on the CPU with torch's global generator (which the
    trainer checkpoints), since Beta sampling takes no generator.
    """
    b = len(x)
    target = F.one_hot(y, num_classes).to(x.dtype)
    partner = torch.randperm(b, generator=gen, device=x.device)
    use_cutmix = torch.zeros(b, dtype=torch.bool, device=x.device)
    if policy.cutmix_alpha and policy.mixup_alpha:
        use_cutmix = _uniform(b, gen, x.device) < 0.5
    elif policy.cutmix_alpha:
        use_cutmix = torch.ones(b, dtype=torch.bool, device=x.device)
    lam = torch.ones(b, device=x.device, dtype=x.dtype)
    if policy.mixup_alpha:
        a = policy.mixup_alpha
        lam = torch.distributions.Beta(a, a).sample((b,)).to(x.device, x.dtype)
    out = _col(lam, x) * x + (1 - _col(lam, x)) * x[partner]
    if policy.cutmix_alpha:
        a = policy.cutmix_alpha
        cut_lam = torch.distributions.Beta(a, a).sample((b,)).to(x.device, x.dtype)
        box = _boxes(x, gen, 1 - cut_lam)
        cut = torch.where(box, x[partner], x)
        kept = 1 - box.to(x.dtype).mean(dim=(1, 2, 3))  # the exact share left after rounding
        out = torch.where(use_cutmix[:, None, None, None], cut, out)
        lam = torch.where(use_cutmix, kept, lam)
    soft = _col(lam, x).view(b, 1) * target + (1 - _col(lam, x).view(b, 1)) * target[partner]
    return out, soft

"""Batched data augmentation with per-sample randomness, on the training device.

Every op takes a batch ``[B, C, H, W]`` (float in [0, 1], or uint8) and a
``torch.Generator`` on the batch's device, draws its random numbers per sample in
one call, and returns a float batch of the same shape in [0, 1]. There is no
per-image Python: loops run over ops, never over images. Hand-written rather than
torchvision's transforms because those draw one random parameter per call, and
per-image calls through a DataLoader are what make the classic pipeline slow
(benchmarks/RESULTS.md measures the difference).

Why it is fast (about 20x the classic pipeline on two CPU cores): the ops are
not run one after another over the whole batch. ``augment`` first plans every
image's random choices, then

1. composes all geometry (random crop, flip, the policies' rotate, shear and
   translate) into one affine map per image and resamples once, nearest
   neighbour, as torchvision's RandAugment does, with one gather on uint8;
2. composes all colour ops that are linear in RGB (brightness, saturation,
   contrast, invert, ColorJitter in a random order per image) into one 3x3 map
   plus offset per image, applied with one batched matmul that also converts
   uint8 to float and normalises; only the ops that are not linear (solarize,
   posterize, autocontrast, equalize, sharpness) run on their own images, after
   the pending map is applied;
3. erases by multiplying with a mask: 0 after normalisation, like torchvision's
   RandomErasing(value=0) after Normalize.

The price of composing: geometry runs before colour (exact for per-pixel colour
ops; ops that use image statistics see the warped image), and values are
clipped to [0, 1] only where a non-linear op needs it and at the end, not after
each op. ``torch.where`` on float batches is avoided: on CPU it is ~20x slower
than a multiply. kornia.augmentation, the batched library, runs the same recipe
3.5x slower on this CPU at the same two threads (benchmark 1 with ``--kornia``),
so it is not used.

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


# The op table of RandAugment / TrivialAugment (Cubuk et al. 2020; Mueller & Hutter
# 2021) in torchvision's order, plus AutoAugment's invert. Magnitude m in [0, 1] is
# the top of RandAugment's range at 1 (its bin 30 of 31): rotate 30 degrees,
# shear 0.3, translate 0.45 of the side, factors 1 +- 0.9, posterize to 4 bits,
# solarize from threshold 0; autocontrast, equalize and invert blend by m, so
# that every op is the identity at zero magnitude.
OP_NAMES = ("identity", "autocontrast", "equalize", "rotate", "solarize", "color", "posterize",
            "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x",
            "translate_y", "invert")
_OP = {name: k for k, name in enumerate(OP_NAMES)}
_RANDAUGMENT_COUNT = 14  # RandAugment and TrivialAugment draw from the first 14
RANDAUGMENT_OPS = OP_NAMES[:_RANDAUGMENT_COUNT]
_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_PIXEL = ("autocontrast", "equalize", "solarize", "posterize", "sharpness")
_PIXEL_IDS = sorted(_OP[name] for name in _PIXEL)
_PIXEL_TABLE = torch.tensor([name in _PIXEL for name in OP_NAMES])  # op index -> non-linear?


class _Round:
    """One policy step: an op per image (index into OP_NAMES), its magnitude and sign."""

    def __init__(self, op: torch.Tensor, mag: torch.Tensor, sign: torch.Tensor) -> None:
        self.op, self.mag, self.sign = op, mag, sign
        # signed magnitude per image and op, 0 for the ops an image did not draw
        self.amount = F.one_hot(op, len(OP_NAMES)).to(mag.dtype) * (sign * mag)[:, None]
        self._drawn = torch.bincount(op, minlength=len(OP_NAMES)).tolist()  # one host sync

    def count(self, k: int) -> int:
        """How many images drew op number ``k``."""
        return self._drawn[k]

    def value(self, name: str, scale: float) -> torch.Tensor:
        """The signed amount of op ``name`` per image; 0 where an image has another op."""
        return self.amount[:, _OP[name]] * scale

    def has(self, name: str) -> bool:
        return self._drawn[_OP[name]] > 0


def augment(x: torch.Tensor, policy: AugmentPolicy, gen: torch.Generator) -> torch.Tensor:
    """Applies a policy's image ops to a batch; returns a new float batch in [0, 1].

    ``x`` is float in [0, 1] or uint8 (converted on the way). Mixup and cutmix
    change the labels too, so they live in ``mix``.
    """
    if policy.is_identity and x.is_floating_point():
        return x
    return augment_normalize(x, policy, gen)


def augment_normalize(x: torch.Tensor, policy: AugmentPolicy, gen: torch.Generator,
                      mean=None, std=None, channels_last: bool = False,
                      out: torch.Tensor | None = None) -> torch.Tensor:
    """``augment``, then ``(x - mean) / std`` per channel, in one pass over the pixels.

    The trainer's entry point: ``x`` is a uint8 batch straight from the dataset.
    ``out``, if given, receives the result (in its own memory format) and is returned.
    """
    b, c, h, w = x.shape
    rounds = _plan_rounds(policy, b, gen, x.device)
    scale = 1 / 255 if x.dtype == torch.uint8 else 1.0  # folded into the colour map
    colour = _Colour(_pixels(_geometry(x, policy, rounds, gen), x), scale)
    if policy.jitter:
        colour.jitter(policy.jitter, gen)
    if policy.contrast:
        one = torch.ones(b, device=x.device)
        colour.linear(one, _uniform(b, gen, x.device, 1 - policy.contrast, 1 + policy.contrast),
                      one, one - 1)
    for r in rounds:
        colour.round(r, h, w)
    x = colour.finish(mean, std).view(b, c, h, w)
    if policy.erase_p:
        _erase(x, policy.erase_p, gen)
    if out is not None:
        return out.copy_(x)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _pixels(x: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """``x`` as float [B, C, H*W] that may be written in place (never the caller's tensor)."""
    flat = x.reshape(*x.shape[:2], -1)
    return flat.clone() if flat.dtype == torch.float32 and x is original else flat.float()


def _uniform(n: int, gen: torch.Generator, device: torch.device, low=0.0, high=1.0):
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def _signed(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=gen, device=device) < 0.5) * 2.0 - 1.0


def _col(v: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """A per-sample value (or a scalar) shaped to broadcast over ``[B, C, H, W]``."""
    return torch.as_tensor(v, device=x.device, dtype=x.dtype).reshape(-1, 1, 1, 1)


# ---------------------------------------------------------------- planning


def _plan_rounds(policy: AugmentPolicy, b: int, gen: torch.Generator,
                 device: torch.device) -> list[_Round]:
    """Every policy step's op, magnitude and sign per image: AutoAugment, RandAugment, TrivialAugment."""
    rounds = []
    if policy.autoaug_scale:
        ops, probs, mags = _autoaugment_tables(device)
        sub = torch.randint(0, len(ops), (b,), generator=gen, device=device)
        for step in range(2):
            on = _uniform(b, gen, device) < probs[sub, step] * policy.autoaug_scale
            rounds.append(_Round(ops[sub, step] * on, mags[sub, step] * policy.autoaug_scale,
                                 _signed(b, gen, device)))
    if policy.randaug_p and policy.randaug_magnitude:
        active = _uniform(b, gen, device) < policy.randaug_p
        mag = torch.full((b,), float(policy.randaug_magnitude), device=device)
        for _ in range(policy.randaug_ops):
            choice = torch.randint(0, _RANDAUGMENT_COUNT, (b,), generator=gen, device=device)
            rounds.append(_Round(choice * active, mag, _signed(b, gen, device)))
    if policy.trivial_max:
        choice = torch.randint(0, _RANDAUGMENT_COUNT, (b,), generator=gen, device=device)
        rounds.append(_Round(choice, _uniform(b, gen, device) * policy.trivial_max,
                             _signed(b, gen, device)))
    return rounds


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


def _autoaugment_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AutoAugment's CIFAR-10 policy as [25, 2] tensors: op index, probability, magnitude."""
    policy = _cifar_autoaugment_policy()
    ops = torch.tensor([[_OP[_AA_NAMES[name]] for name, _, _ in sub] for sub in policy])
    probs = torch.tensor([[prob for _, prob, _ in sub] for sub in policy])
    mags = torch.tensor([[1.0 if bin_ is None else bin_ / 9 for _, _, bin_ in sub] for sub in policy])
    return ops.to(device), probs.to(device), mags.to(device)


# ---------------------------------------------------------------- geometry


def _geometry(x: torch.Tensor, policy: AugmentPolicy, rounds: list[_Round],
              gen: torch.Generator) -> torch.Tensor:
    """Crop, flip and the rounds' geometric ops as one nearest-neighbour resampling.

    Each image gets a 3x3 map from output to source pixel coordinates (centred);
    the ops compose right to left, since the last op applied looks up first.
    Pixels that map outside the image are 0, as torchvision fills.
    """
    b, _, h, w = x.shape
    dev = x.device
    uses = [r for r in rounds if any(r.has(name) for name in _GEOMETRIC)]
    if policy.translate_pad or policy.flip_p or uses:
        m = torch.eye(3, device=dev).repeat(b, 1, 1)
        if policy.translate_pad:  # RandomCrop(size, padding=pad): a shift in [-pad, pad]
            shift = torch.randint(-policy.translate_pad, policy.translate_pad + 1, (2, b),
                                  generator=gen, device=dev)
            m[:, 0, 2], m[:, 1, 2] = shift[0].float(), shift[1].float()
        if policy.flip_p:
            flip = _uniform(b, gen, dev) < policy.flip_p
            m[:, :, 0] *= 1 - 2 * flip[:, None].float()
        for r in uses:
            m = m @ _round_map(r, h, w)
        x = _resample_nearest(x, m)
    if policy.rotate_deg or policy.translate_frac or policy.zoom:  # bilinear is linear: 0-255 stays
        x = random_affine(x.float() if x.dtype == torch.uint8 else x,
                          policy.rotate_deg, policy.translate_frac, policy.zoom, gen)
    return x


def _round_map(r: _Round, h: int, w: int) -> torch.Tensor:
    """Output-to-source maps [B, 3, 3] of one round's geometric ops (identity elsewhere)."""
    angle = r.value("rotate", math.radians(30.0))
    cos, sin = angle.cos(), angle.sin()
    zero, one = torch.zeros_like(cos), torch.ones_like(cos)
    return torch.stack([cos, r.value("shear_x", 0.3) - sin, r.value("translate_x", 0.45 * w),
                        sin + r.value("shear_y", 0.3), cos, r.value("translate_y", 0.45 * h),
                        zero, zero, one], 1).view(-1, 3, 3)  # translate: 150/331 of the side


def _resample_nearest(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``out[b, :, i, j] = x[b, :, round(src)]`` for src = m[b] @ (j, i, 1) centred; 0 outside."""
    b, c, h, w = x.shape
    dev = x.device
    cy, cx = (h - 1) / 2, (w - 1) / 2
    v = (torch.arange(h, device=dev, dtype=torch.float32) - cy).repeat_interleave(w)
    u = (torch.arange(w, device=dev, dtype=torch.float32) - cx).repeat(h)
    # Source pixels, clamped to a one-pixel zero frame around the image: no masks.
    src_u = torch.addcmul(m[:, 0, 2:3] + (cx + 1), m[:, 0, 0:1], u).addcmul_(m[:, 0, 1:2], v)
    src_v = torch.addcmul(m[:, 1, 2:3] + (cy + 1), m[:, 1, 0:1], u).addcmul_(m[:, 1, 1:2], v)
    src_u.round_().clamp_(0, w + 1)
    src_v.round_().clamp_(0, h + 1)
    index = src_v.mul_(w + 2).add_(src_u).long()
    framed = F.pad(x, (1, 1, 1, 1)).view(b, c, (h + 2) * (w + 2))
    return framed.gather(2, index[:, None, :].expand(b, c, h * w)).view(b, c, h, w)


def random_affine(x: torch.Tensor, degrees: float, translate: float, zoom: float,
                  gen: torch.Generator) -> torch.Tensor:
    """Rotation in [-degrees, degrees], shift up to ``translate`` of the side, zoom 1 +- zoom.

    Bilinear, as Keras's RandomRotation / RandomTranslation / RandomZoom are.
    """
    n = len(x)
    angle = _uniform(n, gen, x.device, -1, 1) * math.radians(degrees)
    scale = _uniform(n, gen, x.device, 1 - zoom, 1 + zoom)
    cos, sin = angle.cos() / scale, angle.sin() / scale
    theta = torch.stack([torch.stack([cos, -sin, _uniform(n, gen, x.device, -1, 1) * 2 * translate], 1),
                         torch.stack([sin, cos, _uniform(n, gen, x.device, -1, 1) * 2 * translate], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ---------------------------------------------------------------- colour


class _Colour:
    """Pending linear colour maps per image, ``x <- a @ x + off``, applied lazily.

    ``x`` is [B, C, H*W]; ``aff`` is [B, C, C + 1], ``a`` and then ``off`` as its last
    column. A linear op only updates ``aff`` (tiny); a non-linear op first applies
    what is pending (``flush``, one pass over the pixels), then runs on its own images.
    """

    def __init__(self, x: torch.Tensor, scale: float) -> None:
        b, c, _ = x.shape
        self.x = x
        self.identity = torch.eye(c, c + 1, device=x.device).expand(b, c, c + 1)
        self.aff = self.identity * scale
        self.grey = (torch.tensor([0.299, 0.587, 0.114], device=x.device) if c == 3
                     else torch.full((c,), 1 / c, device=x.device))[None, :, None]
        self._mean: torch.Tensor | None = None  # [B, C + 1, 1]: channel means of self.x, then 1

    def linear(self, saturation: torch.Tensor, contrast: torch.Tensor, brightness: torch.Tensor,
               invert: torch.Tensor) -> None:
        """Saturation, contrast, brightness and invert, in that order, as factors [B].

        saturation f: f x + (1 - f) grey(x); contrast f: f x + (1 - f) mean grey of
        the image; brightness f: f x; invert m: x + m (1 - 2x). Factor 1 (invert: 0)
        leaves an image alone. Saturation keeps grey levels, so the mean grey that
        contrast needs is the one before: the four make one map,
        ``k S x + (1 - 2m) fb (1 - fc) mean grey + m`` with ``k = fb fc (1 - 2m)``.
        """
        col = functools.partial(torch.Tensor.view, size=(-1, 1, 1))
        if self._mean is None:
            self._mean = F.pad(self.x.mean(2, keepdim=True), (0, 0, 0, 1), value=1.0)
        grey_aff = (self.grey * self.aff).sum(1, keepdim=True)  # [B, 1, C + 1]: grey of the map
        mean_grey = torch.bmm(grey_aff, self._mean)  # [B, 1, 1]
        keep = 1 - 2 * invert
        aff = torch.lerp(grey_aff, self.aff, col(saturation)).mul_(col(brightness * contrast * keep))
        aff[:, :, -1:] += col(keep * brightness * (1 - contrast)) * mean_grey + col(invert)
        self.aff = aff

    def jitter(self, strength: float, gen: torch.Generator) -> None:
        """ColorJitter(strength, strength, strength).

        torchvision applies the three in a random order per image; without a clip
        between them the order does not change the result, so it is not drawn.
        """
        b, dev = len(self.x), self.x.device
        f = _uniform(3 * b, gen, dev, 1 - strength, 1 + strength).view(3, b)
        self.linear(f[2], f[1], f[0], torch.zeros(b, device=dev))

    def round(self, r: _Round, h: int, w: int) -> None:
        """One policy step: linear ops fold into the pending maps, the others run on their images.

        An image that drew a non-linear op has its pending map applied first, alone:
        the rest of the batch is not touched (no pass over the whole batch).
        """
        self.linear(1 + r.value("color", 0.9), 1 + r.value("contrast", 0.9),
                    1 + r.value("brightness", 0.9), r.value("invert", 1.0).abs())
        present = [k for k in _PIXEL_IDS if r.count(k)]
        if not present:
            return
        # The images of every non-linear op at once, grouped by op: one gather, one
        # pending-map pass and one write-back for all; each op runs on its own slice.
        c = self.x.shape[1]
        idx = _PIXEL_TABLE.to(r.op.device)[r.op].nonzero().squeeze(1)
        idx = idx[r.op[idx].argsort(stable=True)]
        aff = self.aff.index_select(0, idx)
        images = torch.bmm(aff[:, :, :c].contiguous(), self.x.index_select(0, idx))
        images = images.add_(aff[:, :, c:]).clamp_(0, 1).view(len(idx), c, h, w)
        mags, signs = r.mag[idx], r.sign[idx]
        start = 0
        for k in present:
            part = slice(start, start + r.count(k))
            start = part.stop
            view = images[part]
            out = _PIXEL_OPS[OP_NAMES[k]](view, mags[part], signs[part])
            if out.data_ptr() != view.data_ptr():
                view.copy_(out)
        images = images.view(len(idx), c, h * w)
        self.x.index_copy_(0, idx, images)
        self.aff.index_copy_(0, idx, self.identity[: len(idx)])
        if self._mean is not None:
            self._mean[idx, :c] = images.mean(2, keepdim=True)

    def finish(self, mean, std) -> torch.Tensor:
        """The pending maps and the normalisation in one matmul, then the clip to [0, 1] normalised."""
        c = self.aff.shape[1]
        mean = torch.as_tensor(0.0 if mean is None else mean, device=self.x.device).expand(c)
        std = torch.as_tensor(1.0 if std is None else std, device=self.x.device).expand(c)
        aff = self.aff / std[:, None]
        aff[:, :, c] -= mean / std
        x = torch.bmm(aff[:, :, :c].contiguous(), self.x).add_(aff[:, :, c:])
        low, high = (-mean / std).tolist(), ((1 - mean) / std).tolist()
        for k in range(c):  # per-channel slices: a clamp with tensor bounds is ~4x slower
            x[:, k].clamp_(low[k], high[k])
        return x


# Non-linear ops, each on the images that drew it: [n, C, H, W] in [0, 1], magnitudes
# and signs [n]; they return [0, 1].


def _solarize(x, m, sign):
    # x >= threshold as 1.0 / 0.0 by ceil, in place: twice as fast as a bool mask here
    above = (x - (1.0 - _col(m, x))).sub_(1e-6).ceil_().clamp_(0, 1)
    return x.addcmul_(above, x.mul(-2).add_(1))


def _posterize(x, m, sign):
    step = 2.0 ** (4 * _col(m, x)).round()  # keep 8 - round(4 m) bits; in place, exact
    return x.mul_(255).round_().div_(step).floor_().mul_(step / 255)


def _autocontrast(x, m, sign):
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    stretched = (x - low) / (high - low).clamp_min(1e-6)
    return x.lerp_(stretched, _col(m, x) * (high > low))


def _equalize(x, m, sign):
    """Histogram equalisation per image and channel, all at once via scatter_add.

    torchvision's batched ``equalize`` was measured slower here (0.52 ms on 37 uint8
    images against 0.41 ms for this on floats, one CPU thread), so this stays.
    """
    b, c, h, w = x.shape
    levels = (x * 255).round_().long().view(b * c, h * w)
    hist = torch.zeros(b * c, 256, device=x.device, dtype=x.dtype)
    hist.scatter_add_(1, levels, torch.ones_like(levels, dtype=x.dtype))
    cdf = hist.cumsum(1)
    first = (hist > 0).float().argmax(1, keepdim=True)  # the lowest level present
    cdf_min = cdf.gather(1, first)
    lut = ((cdf - cdf_min) / (h * w - cdf_min).clamp_min(1)).clamp_(0, 1)
    out = lut.gather(1, levels).view(b, c, h, w)
    return x.lerp_(out, _col(m, x))


def _sharpness(x, m, sign):
    """torchvision's adjust_sharpness: blend with a 3x3 smoothing of the interior, in place.

    Shifted adds instead of torchvision's depthwise ``conv2d``: 0.26 against 0.69 ms
    on 37 images (one CPU thread); ``avg_pool2d`` was slower still (1.0 ms).
    """
    factor = _col(1 + sign * 0.9 * m, x)
    rows = x[:, :, :-2] + x[:, :, 1:-1]
    rows += x[:, :, 2:]
    smooth = rows[..., :-2] + rows[..., 1:-1]
    smooth += rows[..., 2:]  # the 3x3 sum; the kernel weighs the centre 5 of 13
    centre = x[:, :, 1:-1, 1:-1]
    smooth.add_(centre, alpha=4).div_(13)
    centre.sub_(smooth).mul_(factor).add_(smooth).clamp_(0, 1)
    return x


_PIXEL_OPS = {"autocontrast": _autocontrast, "equalize": _equalize, "solarize": _solarize,
              "posterize": _posterize, "sharpness": _sharpness}


def _erase(x: torch.Tensor, p: float, gen: torch.Generator) -> None:
    """RandomErasing(p, value=0) in place: a rectangle (area 2-33%, aspect 0.3-3.3) set to 0.

    Only the chosen images are read and written; the rectangle is the outer
    product of a row and a column indicator, so no per-pixel comparisons.
    """
    b, _, h, w = x.shape
    chosen = _uniform(b, gen, x.device) < p
    area = _uniform(b, gen, x.device, 0.02, 0.33)
    rows, cols = _box_lines(b, h, w, gen, x.device, area, (0.3, 3.3))
    idx = chosen.nonzero().squeeze(1)
    keep = 1 - rows[idx, :, None].to(x.dtype) * cols[idx, None, :].to(x.dtype)
    x.index_copy_(0, idx, x.index_select(0, idx).mul_(keep[:, None]))


def _box_lines(b: int, h: int, w: int, gen: torch.Generator, device: torch.device,
               area_frac: torch.Tensor, ratio: tuple[float, float] = (1.0, 1.0)
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One random rectangle per image covering about ``area_frac``: its rows [B, H] and columns [B, W]."""
    area = area_frac * h * w
    log_r = _uniform(b, gen, device, math.log(ratio[0]), math.log(ratio[1]))
    eh = (area * log_r.exp()).sqrt().round().clamp(1, h)
    ew = (area / log_r.exp()).sqrt().round().clamp(1, w)
    top = (_uniform(b, gen, device) * (h - eh + 1)).floor()
    left = (_uniform(b, gen, device) * (w - ew + 1)).floor()
    r = torch.arange(h, device=device)[None, :]
    c = torch.arange(w, device=device)[None, :]
    return ((r >= top[:, None]) & (r < (top + eh)[:, None]),
            (c >= left[:, None]) & (c < (left + ew)[:, None]))


def _boxes(b: int, h: int, w: int, gen: torch.Generator, device: torch.device,
           area_frac: torch.Tensor, ratio: tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:
    """One random rectangle per image covering about ``area_frac``; a [B,1,H,W] mask."""
    rows, cols = _box_lines(b, h, w, gen, device, area_frac, ratio)
    return (rows[:, :, None] & cols[:, None, :])[:, None]


# ---------------------------------------------------------------- single ops
# Each op of the table alone, for tests and for composing by hand: the same
# engine, with a policy that selects just that op.


def random_flip(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Mirrors each image left-right with probability ``p``."""
    return augment(x, AugmentPolicy(flip_p=p), gen)


def random_translate(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """RandomCrop after zero padding by ``pad`` (whole-pixel shifts of up to ``pad``)."""
    return augment(x, AugmentPolicy(translate_pad=pad), gen)


def color_jitter(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation, each by a factor in [1-s, 1+s] per image, random order."""
    return augment(x, AugmentPolicy(jitter=strength), gen)


def random_erasing(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Sets a random rectangle of each chosen image to 0 (the mean, once normalised)."""
    return augment(x, AugmentPolicy(erase_p=p), gen)


def rand_augment(x: torch.Tensor, num_ops: int, magnitude: float, gen: torch.Generator,
                 p: float = 1.0) -> torch.Tensor:
    """RandAugment: ``num_ops`` rounds, each giving every taking-part image one random op.

    Each image takes part with probability ``p``.
    """
    return augment(x, AugmentPolicy(randaug_p=p, randaug_ops=num_ops, randaug_magnitude=magnitude), gen)


def trivial_augment(x: torch.Tensor, gen: torch.Generator, max_magnitude: float = 1.0) -> torch.Tensor:
    """TrivialAugment: one random op per image at a magnitude uniform in [0, max]."""
    return augment(x, AugmentPolicy(trivial_max=max_magnitude), gen)


def auto_augment(x: torch.Tensor, gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    """AutoAugment's CIFAR-10 policy: a random sub-policy per image, two steps each.

    ``scale`` multiplies every step's probability and magnitude (1 is the policy).
    """
    return augment(x, AugmentPolicy(autoaug_scale=scale), gen)


def apply_op(name: str, x: torch.Tensor, magnitude, gen: torch.Generator, sign=None) -> torch.Tensor:
    """Op ``name`` of OP_NAMES on every image at ``magnitude`` (a number or [B]).

    ``sign`` (+-1, a number or [B]) picks the direction of signed ops (rotate left or
    right, brighter or darker); random per image when None.
    """
    b = len(x)
    if name == "identity":
        return x
    scale = 1 / 255 if x.dtype == torch.uint8 else 1.0
    mag = torch.as_tensor(magnitude, device=x.device, dtype=torch.float32).expand(b).clone()
    sign = (_signed(b, gen, x.device) if sign is None
            else torch.as_tensor(sign, device=x.device, dtype=torch.float32).expand(b).clone())
    r = _Round(torch.full((b,), _OP[name], device=x.device), mag, sign)
    colour = _Colour(_pixels(_geometry(x, AugmentPolicy(), [r], gen), x), scale)
    colour.round(r, x.shape[2], x.shape[3])
    return colour.finish(None, None).view(x.shape)


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
        box = _boxes(b, *x.shape[2:], gen, x.device, 1 - cut_lam)
        cut = torch.where(box, x[partner], x)
        kept = 1 - box.to(x.dtype).mean(dim=(1, 2, 3))  # the exact share left after rounding
        out = torch.where(use_cutmix[:, None, None, None], cut, out)
        lam = torch.where(use_cutmix, kept, lam)
    soft = _col(lam, x).view(b, 1) * target + (1 - _col(lam, x).view(b, 1)) * target[partner]
    return out, soft

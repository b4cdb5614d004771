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
   RandomErasing(value=0) after Normalize. The multiply writes the output, so
   with channels_last it is the layout conversion's pass, not one more.

The price of composing: geometry runs before colour (exact for per-pixel colour
ops; ops that use image statistics see the warped image), and values are
clipped to [0, 1] only where a non-linear op needs it and at the end, not after
each op. ``torch.where`` on float batches is avoided: on CPU it is ~20x slower
than a multiply. kornia.augmentation, the batched library, runs the same recipe
3.5x slower on this CPU at the same two threads (benchmark 1 with ``--kornia``),
so it is not used.

No host-device synchronisation, on any device: every shape is known on the host
before a call, constants (tables, colour weights, normalisation) are built once
per device and cached, and every random number, the mixing weights included,
comes from the generator passed in, on its device. The non-linear ops run on
fixed-size groups of images instead of "the images that drew the op" (a count
only the device knows): a policy step draws a random permutation of the batch,
and each outcome that involves a non-linear op (an op, or for AutoAugment a
sub-policy's pair of steps) owns a fixed block of ``ceil(B p)`` positions, of
which the last is used with the probability that makes the expected count
exactly ``B p``; images elsewhere draw one of the other outcomes with their
probabilities, renormalised. Each image's distribution of ops and magnitudes is
exactly the policy's, as before; what changed is that images of one call are
no longer independent: how many of them get a given non-linear op varies by at
most one around ``B p`` instead of binomially. (Where ``B`` is too small for the
blocks to fit, the permutation runs over more positions than images, and the
counts vary a little more.) The work is what it was: only the images that drew
a non-linear op run it, plus at most one unused slot per outcome.

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
_PIXEL_IDS = tuple(sorted(_OP[name] for name in _PIXEL))
_GEOMETRIC_IDS = frozenset(_OP[name] for name in _GEOMETRIC)


class _Round:
    """One policy step: an op per image (index into OP_NAMES), its magnitude and sign.

    ``slots``: which images run the step's non-linear ops, as fixed-size groups
    (``_Slots``); None when no image can draw one. ``geometric``: whether any image
    can draw a geometric op. Both are known on the host, so nothing here syncs.
    """

    def __init__(self, op: torch.Tensor, mag: torch.Tensor, sign: torch.Tensor,
                 slots: _Slots | None, geometric: bool) -> None:
        self.op, self.mag, self.sign = op, mag, sign
        self.slots, self.geometric = slots, geometric
        # signed magnitude per image and op, 0 for the ops an image did not draw
        self.amount = torch.zeros(len(op), len(OP_NAMES), device=op.device, dtype=mag.dtype)
        self.amount.scatter_(1, op[:, None], (sign * mag)[:, None])

    def value(self, name: str, scale: float) -> torch.Tensor:
        """The signed amount of op ``name`` per image; 0 where an image has another op."""
        return self.amount[:, _OP[name]] * scale


@dataclasses.dataclass(frozen=True)
class _Slots:
    """The images of one step's non-linear ops, grouped by op in fixed-size groups.

    ``read[i]`` is the image in slot ``i``; ``write[i]`` is the same image, or the
    batch size (a spare row that is never read back) for a slot that holds no
    image of the op (unused, or past the batch). ``sizes``: (op, slots) in order.
    """

    read: torch.Tensor
    write: torch.Tensor
    sizes: tuple[tuple[int, int], ...]


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
    ``mean`` and ``std`` are numbers per channel (or one for all); they are read on
    the host, so a tensor on a GPU costs a sync: pass numbers. ``out``, if given,
    receives the result (in its own memory format) and is returned.
    """
    b, c, h, w = x.shape
    rounds = _plan_rounds(policy, b, gen, x.device)
    scale = 1 / 255 if x.dtype == torch.uint8 else 1.0  # folded into the colour map
    spare = any(r.slots is not None for r in rounds)
    colour = _Colour(_pixels(_geometry(x, policy, rounds, gen), x, spare), scale, b)
    if policy.jitter:
        colour.jitter(policy.jitter, gen)
    if policy.contrast:
        one = torch.ones(b, device=x.device)
        colour.linear(one, _uniform(b, gen, x.device, 1 - policy.contrast, 1 + policy.contrast),
                      one, one - 1)
    for r in rounds:
        colour.round(r, h, w)
    x = colour.finish(mean, std).view(b, c, h, w)
    if out is None and channels_last:
        out = torch.empty_like(x, memory_format=torch.channels_last)
    if policy.erase_p:  # the multiply writes the output: erasing costs no pass of its own
        keep = _erase_mask(x, policy.erase_p, gen)
        return x.mul_(keep) if out is None else torch.mul(x, keep, out=out)
    return x if out is None else out.copy_(x)


def _pixels(x: torch.Tensor, original: torch.Tensor, spare: bool = False) -> torch.Tensor:
    """``x`` as float [B, C, H*W] that may be written in place (never the caller's tensor).

    ``spare``: one more image at the end, of zeros, for the writes of unused slots.
    """
    flat = x.reshape(*x.shape[:2], -1)
    if spare:
        rows = flat.new_empty((len(flat) + 1, *flat.shape[1:]), dtype=torch.float32)
        rows[: len(flat)].copy_(flat)
        rows[len(flat)].zero_()
        return rows
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
        rounds += _draw(_autoaugment_table(policy.autoaug_scale), b, gen, device)
    if policy.randaug_p and policy.randaug_magnitude:
        table = _randaugment_table(policy.randaug_p, policy.randaug_magnitude)
        for _ in range(policy.randaug_ops):  # independent rounds
            rounds += _draw(table, b, gen, device)
    if policy.trivial_max:
        rounds += _draw(_randaugment_table(1.0, 1.0), b, gen, device, policy.trivial_max)
    return rounds


@functools.lru_cache(maxsize=16)
def _randaugment_table(p: float, magnitude: float) -> _Table:
    """One of the 14 ops, each with probability p / 14 (identity also when not taking part)."""
    probs = [1 - p + p / _RANDAUGMENT_COUNT] + [p / _RANDAUGMENT_COUNT] * (_RANDAUGMENT_COUNT - 1)
    return _Table(tuple(probs), (tuple(range(_RANDAUGMENT_COUNT)),),
                  ((float(magnitude),) * _RANDAUGMENT_COUNT,))


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


@functools.lru_cache(maxsize=16)
def _autoaugment_table(scale: float) -> _Table:
    """AutoAugment's CIFAR-10 policy with probabilities and magnitudes times ``scale``.

    A sub-policy is drawn uniformly, then each of its two steps happens with its
    probability; the outcomes are the distinct (op, magnitude) pairs that gives.
    """
    outcomes: dict[tuple[tuple[int, float], ...], float] = {}
    subs = _cifar_autoaugment_policy()
    for sub in subs:
        steps = [(_OP[_AA_NAMES[name]], min(1.0, prob * scale),
                  (1.0 if bin_ is None else bin_ / 9) * scale) for name, prob, bin_ in sub]
        for on in ((True, True), (True, False), (False, True), (False, False)):
            p = 1 / len(subs)
            for (_, prob, _), happens in zip(steps, on):
                p *= prob if happens else 1 - prob
            key = tuple((op, mag) if happens else (_OP["identity"], 0.0)
                        for (op, _, mag), happens in zip(steps, on))
            outcomes[key] = outcomes.get(key, 0.0) + p
    keys = list(outcomes)
    return _Table(tuple(outcomes[k] for k in keys),
                  tuple(tuple(k[step][0] for k in keys) for step in range(2)),
                  tuple(tuple(k[step][1] for k in keys) for step in range(2)))


@dataclasses.dataclass(frozen=True)
class _Table:
    """What one draw gives each image: outcomes with probabilities, and per step the
    op (index into OP_NAMES) and magnitude of each outcome. RandAugment and
    TrivialAugment: one step, an outcome per op; AutoAugment: two steps, an outcome
    per distinct pair of what a sub-policy's steps do."""

    probs: tuple[float, ...]
    ops: tuple[tuple[int, ...], ...]
    mags: tuple[tuple[float, ...], ...]


class _Layout:
    """A table laid out for a batch of ``b``: the fixed blocks, as tensors on ``device``.

    Each outcome o with a non-linear op owns ``ceil(size p_o)`` consecutive positions
    of a random permutation of ``size >= b`` items (images, then items that are no
    image); slot t of the block is used when ``t + u_o < size p_o`` with u_o uniform,
    so an item lands in a used slot of o with probability exactly p_o. Items in no
    used slot draw an outcome without a non-linear op, in proportion to theirs.
    """

    def __init__(self, table: _Table, b: int, device: torch.device) -> None:
        probs = table.probs
        special = [o for o, p in enumerate(probs)
                   if p > 0 and any(ops[o] in _PIXEL_IDS for ops in table.ops)]
        plain = [o for o, p in enumerate(probs) if p > 0 and o not in special]
        if not plain:
            raise ValueError("an augmentation table needs an outcome without a non-linear op")
        # the first op that is non-linear decides the block order: its groups are contiguous
        special.sort(key=lambda o: [ops[o] if ops[o] in _PIXEL_IDS else len(OP_NAMES)
                                    for ops in table.ops])
        size = b
        while sum(_ceil(size * probs[o]) for o in special) > size:
            size += 1
        block, room, start = [0] * size, [0.0] * size, {}
        at = 0
        for o in special:
            start[o] = at
            for t in range(_ceil(size * probs[o])):
                block[at], room[at] = o, size * probs[o] - t
                at += 1
        self.size, self.outcomes = size, len(probs)
        self.block = torch.tensor(block, device=device)
        self.room = torch.tensor(room, device=device)
        self.arange = torch.arange(size, device=device)
        total = sum(probs[o] for o in plain)
        cdf = [min(1.0, c / total) for c in _cumsum([probs[o] for o in plain])]
        cdf[-1] = 1.0
        self.plain = torch.tensor(plain, device=device)
        self.plain_cdf = torch.tensor(cdf, device=device)
        self.ops = torch.tensor(table.ops, device=device)
        self.mags = torch.tensor(table.mags, device=device)
        self.geometric = [any(probs[o] > 0 and op in _GEOMETRIC_IDS for o, op in enumerate(ops))
                          for ops in table.ops]
        self.groups: list[tuple[torch.Tensor, tuple[tuple[int, int], ...]] | None] = []
        for ops in table.ops:
            positions, sizes = [], []
            for k in _PIXEL_IDS:
                slots = [start[o] + t for o in special if ops[o] == k
                         for t in range(_ceil(size * probs[o]))]
                if slots:
                    positions += slots
                    sizes.append((k, len(slots)))
            self.groups.append((torch.tensor(positions, device=device), tuple(sizes))
                               if sizes else None)


def _ceil(v: float) -> int:
    return math.ceil(v - 1e-9)  # 73.00000000001 is 73 slots, not 74


def _cumsum(values: list[float]) -> list[float]:
    out, total = [], 0.0
    for v in values:
        total += v
        out.append(total)
    return out


@functools.lru_cache(maxsize=64)
def _layout(table: _Table, b: int, device: torch.device) -> _Layout:
    return _Layout(table, b, device)


def _draw(table: _Table, b: int, gen: torch.Generator, device: torch.device,
          random_magnitude: float = 0.0) -> list[_Round]:
    """One draw of ``table`` for ``b`` images: its steps as rounds, with fixed-size groups.

    ``random_magnitude``: scale each image's magnitudes by a uniform draw in [0, it]
    (TrivialAugment); 0 keeps the table's.
    """
    lay = _layout(table, b, device)
    order = torch.randperm(lay.size, generator=gen, device=device)  # position -> item
    used = torch.rand(lay.outcomes, generator=gen, device=device)[lay.block] < lay.room
    position = torch.empty_like(order).scatter_(0, order, lay.arange)[:b]  # image -> position
    pick = torch.searchsorted(lay.plain_cdf, torch.rand(b, generator=gen, device=device),
                              right=True)
    plain = lay.plain[pick.clamp_max_(len(lay.plain) - 1)]
    outcome = torch.where(used[position], lay.block[position], plain)
    if random_magnitude:
        scale = _uniform(b, gen, device) * random_magnitude
    rounds = []
    for step, group in enumerate(lay.groups):
        slots = None
        if group is not None:
            positions, sizes = group
            items = order[positions]
            real = used[positions] & (items < b)
            slots = _Slots(items.clamp_max(b - 1), torch.where(real, items, b), sizes)
        mag = lay.mags[step][outcome]
        rounds.append(_Round(lay.ops[step][outcome], mag * scale if random_magnitude else mag,
                             _signed(b, gen, device), slots, lay.geometric[step]))
    return rounds


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
    uses = [r for r in rounds if r.geometric]
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
    cy, cx = (h - 1) / 2, (w - 1) / 2
    u, v = _centred_grid(h, w, x.device)
    # Source pixels, clamped to a one-pixel zero frame around the image: no masks.
    src_u = torch.addcmul(m[:, 0, 2:3] + (cx + 1), m[:, 0, 0:1], u).addcmul_(m[:, 0, 1:2], v)
    src_v = torch.addcmul(m[:, 1, 2:3] + (cy + 1), m[:, 1, 0:1], u).addcmul_(m[:, 1, 1:2], v)
    src_u.round_().clamp_(0, w + 1)
    src_v.round_().clamp_(0, h + 1)
    index = src_v.mul_(w + 2).add_(src_u).long()
    framed = F.pad(x, (1, 1, 1, 1)).view(b, c, (h + 2) * (w + 2))
    return framed.gather(2, index[:, None, :].expand(b, c, h * w)).view(b, c, h, w)


@functools.lru_cache(maxsize=16)
def _centred_grid(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Column and row coordinates of every pixel, [H*W] each, centred on the image."""
    v = (torch.arange(h, device=device, dtype=torch.float32) - (h - 1) / 2).repeat_interleave(w)
    u = (torch.arange(w, device=device, dtype=torch.float32) - (w - 1) / 2).repeat(h)
    return u, v


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
    what is pending (one pass over its images' pixels), then runs on its images.
    ``rows`` may hold one spare image after the first ``b`` (see ``_Slots``).
    """

    def __init__(self, rows: torch.Tensor, scale: float, b: int | None = None) -> None:
        b = len(rows) if b is None else b
        c = rows.shape[1]
        self.rows, self.x = rows, rows[:b]
        self.eye, grey = _colour_constants(c, rows.device)
        self.aff = self.eye.expand(b, c, c + 1) * scale
        self.grey = grey[None, :, None]
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
        if r.slots is None:
            return
        # The images of every non-linear op at once, grouped by op: one gather, one
        # pending-map pass and one write-back for all; each op runs on its own slice.
        b, c = self.aff.shape[:2]
        if len(self.rows) == b:  # no spare row: a caller that made its own pixels (one copy)
            self.rows = torch.cat([self.x, self.x.new_zeros(1, *self.x.shape[1:])])
            self.x = self.rows[:b]
        read, write = r.slots.read, r.slots.write
        n = len(read)
        aff = self.aff.index_select(0, read)
        images = torch.bmm(aff[:, :, :c].contiguous(), self.x.index_select(0, read))
        images = images.add_(aff[:, :, c:]).clamp_(0, 1).view(n, c, h, w)
        mags, signs = r.mag[read], r.sign[read]
        start = 0
        for k, count in r.slots.sizes:
            part = slice(start, start + count)
            start = part.stop
            view = images[part]
            out = _PIXEL_OPS[OP_NAMES[k]](view, mags[part], signs[part])
            if out.data_ptr() != view.data_ptr():
                view.copy_(out)
        images = images.view(n, c, h * w)
        # Unused slots write to the spare row b, which nothing reads back.
        self.rows.index_copy_(0, write, images)
        spare = (0, 0, 0, 0, 0, 1)
        self.aff = F.pad(self.aff, spare).index_copy_(0, write, self.eye.expand(n, c, c + 1))[:b]
        if self._mean is not None:
            means = F.pad(self._mean, spare)
            means[:, :c].index_copy_(0, write, images.mean(2, keepdim=True))
            self._mean = means[:b]

    def finish(self, mean, std) -> torch.Tensor:
        """The pending maps and the normalisation in one matmul, then the clip to [0, 1] normalised."""
        c = self.aff.shape[1]
        mean, std = _per_channel(mean, c, 0.0), _per_channel(std, c, 1.0)
        scale, shift = _normalisation(mean, std, self.x.device)
        aff = self.aff * scale
        aff[:, :, c] -= shift
        x = torch.bmm(aff[:, :, :c].contiguous(), self.x).add_(aff[:, :, c:])
        for k in range(c):  # per-channel slices: a clamp with tensor bounds is ~4x slower
            x[:, k].clamp_(-mean[k] / std[k], (1 - mean[k]) / std[k])
        return x


@functools.lru_cache(maxsize=16)
def _colour_constants(c: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The identity map [C, C + 1] and the grey weights [C] (ITU-R 601 luma for RGB)."""
    grey = ([0.299, 0.587, 0.114] if c == 3 else [1 / c] * c)
    return torch.eye(c, c + 1, device=device), torch.tensor(grey, device=device)


def _per_channel(v, c: int, default: float) -> tuple[float, ...]:
    """Per-channel numbers from None, a number, a sequence or a tensor (read on the host)."""
    if v is None:
        return (default,) * c
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().flatten().tolist()
    v = [float(v)] if isinstance(v, (int, float)) else [float(e) for e in v]
    return tuple(v * c if len(v) == 1 else v)


@functools.lru_cache(maxsize=16)
def _normalisation(mean: tuple[float, ...], std: tuple[float, ...],
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``1 / std`` as [C, 1] and ``mean / std`` as [C], on the device once."""
    return (torch.tensor([1 / s for s in std], device=device)[:, None],
            torch.tensor([m / s for m, s in zip(mean, std)], device=device))


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


def _erase_mask(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """RandomErasing(p, value=0) as a [B, 1, H, W] mask to multiply by: 0 in a rectangle
    (area 2-33%, aspect 0.3-3.3) of each chosen image, 1 elsewhere.

    The rectangle is the outer product of a row and a column indicator, so no
    per-pixel comparisons; images that are not chosen get an empty row indicator.
    """
    b, _, h, w = x.shape
    chosen = _uniform(b, gen, x.device) < p
    area = _uniform(b, gen, x.device, 0.02, 0.33)
    rows, cols = _box_lines(b, h, w, gen, x.device, area, (0.3, 3.3))
    rows = (rows & chosen[:, None]).to(x.dtype)
    return torch.addcmul(rows.new_ones(()), rows[:, :, None], cols[:, None, :].to(x.dtype),
                         value=-1)[:, None]


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
    k = _OP[name]
    sign = _signed(b, gen, x.device) if sign is None else _per_image(sign, b, x.device)
    every = torch.arange(b, device=x.device)
    slots = _Slots(every, every, ((k, b),)) if k in _PIXEL_IDS else None
    r = _Round(torch.full((b,), k, device=x.device), _per_image(magnitude, b, x.device), sign,
               slots, k in _GEOMETRIC_IDS)
    colour = _Colour(_pixels(_geometry(x, AugmentPolicy(), [r], gen), x, slots is not None),
                     scale, b)
    colour.round(r, x.shape[2], x.shape[3])
    return colour.finish(None, None).view(x.shape)


def _per_image(v, b: int, device: torch.device) -> torch.Tensor:
    """A number or a [B] tensor as float [B] on ``device`` (a number needs no copy to it)."""
    if isinstance(v, torch.Tensor):
        return v.to(device, torch.float32).expand(b).clone()
    return torch.full((b,), float(v), device=device)


# ---------------------------------------------------------------- label mixing


def mix(x: torch.Tensor, y: torch.Tensor, num_classes: int, policy: AugmentPolicy,
        gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup and/or CutMix with a shuffled partner; returns images and soft labels.

    With both on, each image draws one of the two. The mixing weights come from
    Beta(alpha, alpha), drawn on the batch's device with ``gen``.
    """
    b = len(x)
    target = torch.zeros(b, num_classes, device=x.device, dtype=x.dtype)
    target.scatter_(1, y[:, None], 1.0)
    partner = torch.randperm(b, generator=gen, device=x.device)
    other = x[partner]
    use_cutmix = torch.zeros(b, dtype=torch.bool, device=x.device)
    if policy.cutmix_alpha and policy.mixup_alpha:
        use_cutmix = _uniform(b, gen, x.device) < 0.5
    elif policy.cutmix_alpha:
        use_cutmix = torch.ones(b, dtype=torch.bool, device=x.device)
    lam = torch.ones(b, device=x.device, dtype=x.dtype)
    if policy.mixup_alpha:
        lam = _beta(policy.mixup_alpha, b, gen, x.device).to(x.dtype)
    out = _col(lam, x) * x + (1 - _col(lam, x)) * other
    if policy.cutmix_alpha:
        cut_lam = _beta(policy.cutmix_alpha, b, gen, x.device).to(x.dtype)
        box = _boxes(b, *x.shape[2:], gen, x.device, 1 - cut_lam)
        cut = torch.where(box, other, x)
        kept = 1 - box.to(x.dtype).mean(dim=(1, 2, 3))  # the exact share left after rounding
        out = torch.where(use_cutmix[:, None, None, None], cut, out)
        lam = torch.where(use_cutmix, kept, lam)
    soft = _col(lam, x).view(b, 1) * target + (1 - _col(lam, x).view(b, 1)) * target[partner]
    return out, soft


def _beta(alpha: float, n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """``n`` draws of Beta(alpha, alpha) on ``device``, without a host sync.

    torch.distributions takes no generator, so these come from torch's global
    generator of that device (seeded by the trainer and saved in its checkpoints);
    ``validate_args=False`` skips the argument checks, which would sync, and the
    concentrations are made on the device, not copied there.
    """
    concentration = torch.full((), float(alpha), device=device)
    return torch.distributions.Beta(concentration, concentration, validate_args=False).sample((n,))

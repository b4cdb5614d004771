import functools

import pytest
import torch

from trainers import augment as A


def _batch(n=16, size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=gen)


def _gen(seed=1):
    return torch.Generator().manual_seed(seed)


OPS = {
    "flip": lambda x, g: A.random_flip(x, 0.5, g),
    "translate": lambda x, g: A.random_translate(x, 4, g),
    "jitter": lambda x, g: A.color_jitter(x, 0.4, g),
    "erasing": lambda x, g: A.random_erasing(x, 1.0, g),
    "randaugment": lambda x, g: A.rand_augment(x, 2, 0.7, g),
    "trivialaugment": lambda x, g: A.trivial_augment(x, g, 1.0),
    "autoaugment": lambda x, g: A.auto_augment(x, g, 1.0),
    "affine": lambda x, g: A.random_affine(x, 15.0, 0.1, 0.1, g),
    **{f"ra_{name}": functools.partial(lambda op, x, g: A.apply_op(op, x, 0.8, g), name)
       for name in A.OP_NAMES if name != "identity"},
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_keeps_shape_dtype_and_range(name):
    x = _batch()
    before = x.clone()
    y = OPS[name](x, _gen())
    assert torch.equal(x, before)  # the input is never written
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_draws_per_sample_randomness(name):
    # Identical images in one batch must not all receive the same transformation.
    x = _batch(n=1).expand(32, -1, -1, -1).contiguous()
    y = OPS[name](x, _gen())
    distinct = {tuple(img.flatten()[::97].tolist()) for img in y}
    if name in ("ra_autocontrast", "ra_equalize", "ra_solarize", "ra_posterize", "ra_invert"):
        # Deterministic ops: randomness is whether and which op, tested via randaugment.
        assert len(distinct) >= 1
    else:
        assert len(distinct) > 1


@pytest.mark.parametrize("name", sorted(set(A.OP_NAMES) - {"identity"}))
def test_randaugment_ops_are_identity_at_zero_magnitude(name):
    x = (_batch() * 255).round() / 255  # on the uint8 grid, as real images are
    y = A.apply_op(name, x, 0.0, _gen())
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


def test_strength_zero_is_the_identity():
    x = _batch()
    policy = A.AugmentPolicy.from_strength(0.0)
    assert policy.is_identity
    assert torch.equal(A.augment(x, policy, _gen()), x)


def test_strength_scales_every_op_monotonically():
    weak, strong = A.AugmentPolicy.from_strength(0.2), A.AugmentPolicy.from_strength(0.9)
    for field in ("flip_p", "translate_pad", "jitter", "erase_p", "randaug_p", "randaug_magnitude"):
        assert getattr(weak, field) <= getattr(strong, field), field
    assert strong.translate_pad > 0 and strong.randaug_magnitude > 0
    # Stronger augmentation moves images further from the originals.
    x = _batch(n=64)
    weak_change = (A.augment(x, weak, _gen()) - x).abs().mean()
    strong_change = (A.augment(x, strong, _gen()) - x).abs().mean()
    assert 0 < weak_change < strong_change


@pytest.mark.parametrize("strength", [0.3, 1.0])
def test_augment_is_reproducible_with_the_same_generator(strength):
    x = _batch()
    policy = A.AugmentPolicy.from_strength(strength)
    assert torch.equal(A.augment(x, policy, _gen(5)), A.augment(x, policy, _gen(5)))
    assert not torch.equal(A.augment(x, policy, _gen(5)), A.augment(x, policy, _gen(6)))


def test_translate_moves_content_by_whole_pixels():
    x = _batch(n=8)
    y = A.random_translate(x, 2, _gen())
    for img, out in zip(x, y):
        found = any(
            torch.equal(out[:, max(0, dy):32 + min(0, dy), max(0, dx):32 + min(0, dx)],
                        img[:, max(0, -dy):32 + min(0, -dy), max(0, -dx):32 + min(0, -dx)])
            for dy in range(-2, 3) for dx in range(-2, 3)
        )
        assert found


def test_flip_mirrors_exactly():
    x = _batch(n=64)
    y = A.random_flip(x, 0.5, _gen())
    flipped = torch.tensor([torch.equal(a, b.flip(2)) for a, b in zip(y, x)])
    kept = torch.tensor([torch.equal(a, b) for a, b in zip(y, x)])
    assert (flipped | kept).all() and flipped.any() and kept.any()


@pytest.mark.parametrize("ops", ["trivialaugment", "autoaugment", "rotate", "translate", "zoom",
                                 "contrast", "mixup", "cutmix"])
def test_every_selectable_op_is_identity_at_strength_zero_and_active_above(ops):
    x = (_batch() * 255).round() / 255
    assert A.AugmentPolicy.from_strength(0.0, 32, ops).is_identity
    policy = A.AugmentPolicy.from_strength(0.7, 32, ops)
    if policy.mixes:
        y = torch.arange(16) % 10
        mixed, soft = A.mix(x, y, 10, policy, _gen())
        assert not torch.equal(mixed, x) and soft.shape == (16, 10)
    else:
        assert not torch.equal(A.augment(x, policy, _gen()), x)


def test_strength_half_is_the_torch_reference_recipe():
    p = A.AugmentPolicy.from_strength(0.5, 32, "crop,flip,jitter,randaugment,erasing")
    assert (p.translate_pad, p.flip_p, p.jitter, p.erase_p) == (4, 0.5, 0.2, 0.25)
    assert (p.randaug_ops, p.randaug_p) == (2, 1.0)
    assert p.randaug_magnitude == pytest.approx(9 / 30)
    keras = A.AugmentPolicy.from_strength(0.5, 32, "flip,translate,zoom,contrast")
    assert (keras.translate_frac, keras.zoom, keras.contrast) == pytest.approx((0.1, 0.1, 0.2))
    assert keras.translate_pad == 0 and keras.randaug_p == 0


def test_unknown_op_is_refused_with_the_list():
    with pytest.raises(Exception, match="unknown augmentation op.*'blur'.*valid ops"):
        A.parse_ops("flip,blur")
    assert A.parse_ops("none") == () and A.parse_ops(" flip , crop ") == ("flip", "crop")


@pytest.mark.parametrize("ops", ["mixup", "cutmix", "mixup,cutmix"])
def test_mixed_labels_are_distributions_matching_the_pixels(ops):
    x = _batch(n=64)
    y = torch.arange(64) % 10
    torch.manual_seed(0)
    mixed, soft = A.mix(x, y, 10, A.AugmentPolicy.from_strength(0.5, 32, ops), _gen())
    assert mixed.shape == x.shape and 0 <= mixed.min() and mixed.max() <= 1
    torch.testing.assert_close(soft.sum(1), torch.ones(64))
    assert (soft.max(1).values < 1).any()  # some images really are mixed
    if ops == "cutmix":  # the label weight of the own class equals its share of pixels
        own = soft[torch.arange(64), y]
        same = (mixed == x).all(1).float().mean(dim=(1, 2))
        partner_same_class = soft.max(1).values == 1
        torch.testing.assert_close(own[~partner_same_class], same[~partner_same_class])


# ---------------------------------------------------------------- against torchvision
# The batched engine must do what torchvision's functional ops do, image by image.

TF = pytest.importorskip("torchvision.transforms.v2.functional")


def _mid_batch(n=8, seed=0):
    """Images away from 0 and 1, so no op saturates and clipping order cannot matter."""
    return 0.25 + 0.5 * _batch(n=n, seed=seed)


@pytest.mark.parametrize(("name", "reference"), [
    ("brightness", TF.adjust_brightness),
    ("color", TF.adjust_saturation),
    ("contrast", TF.adjust_contrast),
    ("sharpness", TF.adjust_sharpness),
])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_factor_ops_match_torchvision(name, reference, sign):
    x = _batch()
    m = 0.5
    y = A.apply_op(name, x, m, _gen(), sign=sign)
    expected = torch.stack([reference(img, 1 + sign * 0.9 * m) for img in x])
    torch.testing.assert_close(y, expected, atol=2e-3, rtol=0)


def test_posterize_and_solarize_match_torchvision_on_uint8_images():
    x8 = (_batch() * 255).round().to(torch.uint8)
    x = x8.float() / 255
    # magnitude 0.5: 8 - round(2) = 6 bits; solarize above 1 - 0.5
    torch.testing.assert_close(A.apply_op("posterize", x, 0.5, _gen()), TF.posterize(x8, 6).float() / 255)
    torch.testing.assert_close(A.apply_op("solarize", x8, 0.5, _gen()),
                               TF.solarize(x8, 128).float() / 255, atol=1e-6, rtol=0)


def test_autocontrast_at_full_magnitude_matches_torchvision():
    x = _mid_batch()
    torch.testing.assert_close(A.apply_op("autocontrast", x, 1.0, _gen()),
                               TF.autocontrast(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_translate_by_whole_pixels_matches_torchvision_affine(sign):
    x = _batch(n=4)
    m = 4 / (0.45 * 32)  # exactly 4 pixels
    y = A.apply_op("translate_x", x, m, _gen(), sign=sign)
    expected = TF.affine(x, angle=0.0, translate=[-sign * 4, 0], scale=1.0, shear=[0.0, 0.0])
    torch.testing.assert_close(y, expected)


def test_rotate_is_a_nearest_neighbour_rotation_like_torchvision():
    x = _batch(n=8)
    y = A.apply_op("rotate", x, 0.5, _gen(), sign=1.0)  # 15 degrees
    candidates = [TF.rotate(x, angle) for angle in (15.0, -15.0)]
    agreement = max((y == c).float().mean().item() for c in candidates)
    assert agreement > 0.9  # nearest-neighbour rounding may differ on a few pixels
    assert (y == x).float().mean() < 0.2  # and it did rotate


def test_linear_colour_ops_compose_into_one_map():
    """Saturation, contrast, brightness and invert as one map equal applying them in turn."""
    x = _mid_batch(n=6).reshape(6, 3, -1)
    sat, con, bri, inv = (torch.tensor(v) for v in ([0.7, 1.2, 1, 1, 0.9, 1.1], [1.1, 0.8, 1, 1.3, 1, 0.9],
                                                   [0.9, 1.1, 1.2, 1, 1, 1.05], [0, 0, 0, 0.3, 0, 0.2]))
    colour = A._Colour(x.clone(), 1.0)
    colour.linear(sat, con, bri, inv)
    got = colour.finish(None, None)
    img = x.view(6, 3, 32, 32)
    expected = torch.stack([TF.adjust_brightness(TF.adjust_contrast(TF.adjust_saturation(i, s), c), b)
                            for i, s, c, b in zip(img, sat.tolist(), con.tolist(), bri.tolist())])
    expected = expected + inv[:, None, None, None] * (1 - 2 * expected)
    torch.testing.assert_close(got.view(6, 3, 32, 32), expected.clamp(0, 1), atol=2e-3, rtol=0)


def test_uint8_input_gives_what_float_input_gives():
    x8 = (_batch(n=32) * 255).round().to(torch.uint8)
    policy = A.AugmentPolicy.from_strength(0.5)
    torch.testing.assert_close(A.augment(x8, policy, _gen(3)), A.augment(x8.float() / 255, policy, _gen(3)),
                               atol=1e-5, rtol=0)


def test_augment_normalize_normalises_and_lays_out_channels_last():
    x8 = (_batch(n=16) * 255).round().to(torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    policy = A.AugmentPolicy.from_strength(0.6, 32, "crop,flip,jitter,randaugment")  # erasing: below
    out = A.augment_normalize(x8, policy, _gen(2), mean, std, channels_last=True)
    assert out.is_contiguous(memory_format=torch.channels_last)
    plain = A.augment(x8, policy, _gen(2))
    m, s = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    torch.testing.assert_close(out, (plain - m) / s, atol=1e-5, rtol=0)


def test_erasing_sets_one_rectangle_per_chosen_image_to_zero():
    x = _mid_batch(n=400)
    y = A.random_erasing(x, 0.25, _gen())
    erased = (y == 0).all(1)  # [n, H, W]: pixels set to 0 in every channel
    chosen = erased.flatten(1).any(1)
    assert 0.18 < chosen.float().mean() < 0.32
    for img in erased[chosen]:
        rows, cols = img.any(1).nonzero().squeeze(1), img.any(0).nonzero().squeeze(1)
        box = img[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all() and box.sum() == img.sum()  # one filled rectangle
        assert 0.015 <= img.float().mean() <= 0.34
    torch.testing.assert_close(y[~chosen], x[~chosen])

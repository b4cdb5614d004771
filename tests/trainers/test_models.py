from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.ops import StochasticDepth

from trainers.errors import ConfigError
from trainers.models import (
    count_flops,
    count_parameters,
    create_model,
    list_models,
    model_info,
    model_table,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"
WITH_DROP_PATH = [n for n in list_models() if model_info(n).has_drop_path]
WITHOUT_DROP_PATH = [n for n in list_models() if not model_info(n).has_drop_path]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These tiny models gain nothing from a second thread, and on a busy
    # 2-core machine threads waiting on each other made this file 10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_model(name: str, **kwargs) -> nn.Module:
    # The shallowest depth at width 8 keeps each family's pass to milliseconds.
    return create_model(name, 7, depth=min(model_info(name).depths), width=8, **kwargs)


@pytest.mark.parametrize(
    ("name", "depth", "width", "params"),
    [("resnet", 18, 64, 11_173_962), ("resnet", 34, 64, 21_282_122),
     ("resnet", 20, 16, 272_474),  # He et al.'s CIFAR ResNet-20: "0.27M"
     ("lenet5", 5, 6, 62_006)],
)
def test_parameter_counts_match_the_references(name, depth, width, params):
    assert count_parameters(create_model(name, 10, depth, width)) == params


def test_zero_depth_and_width_mean_the_canonical_ones():
    assert count_parameters(create_model("resnet", 10)) == 11_173_962


def test_resnet_depths_and_widths_change_the_size():
    small = count_parameters(create_model("resnet", 10, depth=10, width=16))
    deeper = count_parameters(create_model("resnet", 10, depth=18, width=16))
    wider = count_parameters(create_model("resnet", 10, depth=10, width=32))
    assert small < deeper and small < wider


def test_unknown_model_and_bad_values_fail_helpfully():
    with pytest.raises(ConfigError, match="known models: .*resnet"):
        create_model("vgg99", 10, 18, 64)
    with pytest.raises(ConfigError, match="known models: .*resnet"):
        model_info("vgg99")
    with pytest.raises(ConfigError, match=r"resnet depth must be one of \[10, 18, 20, 34\]"):
        create_model("resnet", 10, 19, 64)
    with pytest.raises(ConfigError, match="width must be >= 1"):
        create_model("resnet", 10, 18, -8)
    with pytest.raises(ConfigError, match=r"drop_path must be in \[0, 1\)"):
        create_model("resnet", 10, drop_path=1.0)
    with pytest.raises(ConfigError, match="at least 28 px"):
        create_model("resnet", 10, image_size=16)


@pytest.mark.parametrize("name", list_models())
def test_depths_the_family_does_not_define_are_refused(name):
    info = model_info(name)
    with pytest.raises(ConfigError, match=rf"{name} depth must be one of \[.*{info.default_depth}"):
        create_model(name, 10, depth=max(info.depths) + 1)


@pytest.mark.parametrize("name", list_models())
def test_model_info_is_consistent(name):
    info = model_info(name)
    assert info.name == name and info.description
    assert info.default_depth in info.depths and info.default_width in info.widths_hint
    has_stochastic_depth = any(isinstance(m, StochasticDepth) for m in small_model(name).modules())
    assert info.has_drop_path == has_stochastic_depth


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("size", [28, 32, 40])
def test_every_model_forward_and_backward_is_finite(name, size):
    torch.manual_seed(0)
    model = small_model(name)
    out = model(torch.randn(4, 3, size, size))
    assert out.shape == (4, 7)
    out.logsumexp(1).mean().backward()
    assert torch.isfinite(out).all()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_channels_last_in_eval(name):
    # The trainer converts models to channels-last; eval must agree with the
    # default layout.
    torch.manual_seed(0)
    model, x = small_model(name).eval(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", WITH_DROP_PATH)
def test_drop_path_is_random_in_training_and_off_in_eval(name):
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    for drop_path in (0.0, 0.5):
        model = small_model(name, drop_path=drop_path)
        for m in model.modules():  # classifier dropout would hide what is tested
            if isinstance(m, nn.Dropout):
                m.p = 0.0
        model.train()
        assert torch.equal(model(x), model(x)) == (drop_path == 0)
        model.eval()
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", WITHOUT_DROP_PATH)
def test_families_without_residual_blocks_refuse_drop_path(name):
    with pytest.raises(ConfigError, match="drop_path must be 0"):
        create_model(name, 10, drop_path=0.1)


def test_count_flops_scales_with_resolution_and_keeps_the_mode():
    model = small_model("resnet").train()
    ratio = count_flops(model, 64) / count_flops(model, 32)
    assert model.training and 3.9 < ratio < 4.1
    # ResNet-18's well-known 0.56 GMACs on a 32x32 image, at 2 FLOPs a MAC.
    assert count_flops(create_model("resnet", 10)) == pytest.approx(1.11e9, rel=0.01)


def test_docs_table_matches_the_registry():
    assert model_table() in DOC.read_text(), (
        "docs/models.md is stale: regenerate its table with `python -m trainers.models`"
    )

import pytest
import torch

from trainers.errors import ConfigError
from trainers.models import count_parameters, create_model, list_models


def test_resnet18_parameter_count_matches_the_reference():
    assert count_parameters(create_model("resnet", 10, depth=18, width=64)) == 11_173_962


def test_resnet_depths_and_widths_change_the_size():
    small = count_parameters(create_model("resnet", 10, depth=10, width=16))
    deeper = count_parameters(create_model("resnet", 10, depth=18, width=16))
    wider = count_parameters(create_model("resnet", 10, depth=10, width=32))
    assert small < deeper and small < wider
    assert count_parameters(create_model("resnet", 10, depth=34, width=64)) == 21_282_122


def test_unknown_model_and_depth_fail_helpfully():
    with pytest.raises(ConfigError, match="known models: .*resnet"):
        create_model("vgg99", 10, 18, 64)
    with pytest.raises(ConfigError, match="depth must be one of"):
        create_model("resnet", 10, 19, 64)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("size", [32, 40])
def test_every_model_forward_and_backward_is_finite(name, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, depth=10, width=8)
    x = torch.randn(4, 3, size, size)
    out = model(x)
    assert out.shape == (4, 7)
    out.logsumexp(1).mean().backward()
    assert torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())

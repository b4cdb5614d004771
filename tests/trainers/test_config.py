import dataclasses

import pytest

from trainers.config import TrialConfig
from trainers.errors import ConfigError


def test_defaults_construct_and_round_trip():
    config = TrialConfig()
    assert TrialConfig.from_dict(config.to_dict()) == config


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"'aug_strenght'.*did you mean 'aug_strength'\?"):
        TrialConfig.from_dict({"aug_strenght": 0.1})
    with pytest.raises(ConfigError, match="'colour'"):
        TrialConfig.from_dict({"lr": 0.1, "colour": 1})


@pytest.mark.parametrize(
    "key, value",
    [("lr", 0.0), ("lr", float("nan")), ("aug_strength", 1.5), ("optimizer", "adam"),
     ("model", "no_such_net"), ("epochs", 0), ("label_smoothing", 1.0), ("val_fraction", 1.0),
     ("data_fraction", 0.0), ("grad_clip", -1.0), ("epochs", "3"), ("depth", True),
     ("warmup_epochs", 31.0), ("aug_ops", "flip,blur"), ("drop_path", 0.9), ("ema_decay", 1.0), ("depth", 19), ("image_size", 16)],
)
def test_invalid_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        TrialConfig.from_dict({key: value})


def test_frozen_and_replace_validates():
    config = TrialConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]
    assert config.replace(lr=0.5).lr == 0.5
    with pytest.raises(ConfigError, match="'lr'"):
        config.replace(lr=-1.0)
    with pytest.raises(ConfigError, match="'nope'"):
        config.replace(nope=1)


def test_depth_and_drop_path_follow_the_model():
    assert TrialConfig(model="vgg", depth=16, width=0).depth == 16
    assert TrialConfig(model="convnext_p2", depth=0, drop_path=0.2).drop_path == 0.2
    with pytest.raises(ConfigError, match="'depth' must be 0 or one of .*for vgg"):
        TrialConfig(model="vgg", depth=18)
    with pytest.raises(ConfigError, match="'drop_path'.*no residual blocks"):
        TrialConfig(model="lenet5", depth=0, width=0, drop_path=0.1)


def test_int_is_accepted_for_float_fields():
    assert TrialConfig(lr=1, min_lr=0).lr == 1

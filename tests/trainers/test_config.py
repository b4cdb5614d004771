import dataclasses

import pytest

from trainers.config import TrialConfig
from trainers.errors import ConfigError


def test_defaults_construct_and_round_trip():
    config = TrialConfig()
    assert TrialConfig.from_dict(config.to_dict()) == config


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"'learning_rate'.*did you mean 'lr'\?"):
        TrialConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="'colour'"):
        TrialConfig.from_dict({"lr": 0.1, "colour": 1})


@pytest.mark.parametrize(
    "key, value",
    [("lr", 0.0), ("lr", float("nan")), ("aug_strength", 1.5), ("optimizer", "adam"),
     ("model", "no_such_net"), ("epochs", 0), ("label_smoothing", 1.0), ("val_fraction", 1.0),
     ("data_fraction", 0.0), ("grad_clip", -1.0), ("epochs", "3"), ("depth", True),
     ("warmup_epochs", 31.0)],
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


def test_int_is_accepted_for_float_fields():
    assert TrialConfig(lr=1, min_lr=0).lr == 1

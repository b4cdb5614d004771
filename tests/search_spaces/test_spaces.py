import optuna
import pytest

from search_spaces import SpaceLimits, UnknownSpaceError, get_defaults, get_space, list_spaces
from studies.presets import PRESETS
from trainers.config import TrialConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_unknown_space_lists_the_known_ones():
    with pytest.raises(UnknownSpaceError, match="known spaces: .*resnet_cifar"):
        get_space("resnet_imagenet")


def test_resnet_cifar_samples_the_required_knobs():
    study = optuna.create_study()
    trial = study.ask()
    get_space("resnet_cifar")(trial, SpaceLimits())
    assert {"depth", "width", "aug_strength", "label_smoothing", "warmup_epochs",
            "weight_decay", "lr", "optimizer"} <= set(trial.params)


@pytest.mark.parametrize("name", list_spaces())
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_space_yields_valid_configs_within_the_preset(name, preset):
    p = PRESETS[preset]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(25):
        trial = study.ask()
        values = get_space(name)(trial, p.limits)
        config = TrialConfig.from_dict({**p.fixed, **trial.params, **values})
        assert config.depth in p.limits.depths and config.width in p.limits.widths
        assert config.warmup_epochs <= p.epochs
        study.tell(trial, 0.5)


@pytest.mark.parametrize("name", list_spaces())
def test_same_seed_gives_the_same_parameters(name):
    def draw(seed):
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=3))
        out = []
        for i in range(6):
            trial = study.ask()
            get_space(name)(trial, SpaceLimits())
            study.tell(trial, i / 10)
            out.append(trial.params)
        return out

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


@pytest.mark.parametrize("name", list_spaces())
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_defaults_are_a_point_of_the_space(name, preset):
    p = PRESETS[preset]
    defaults = get_defaults(name, p.limits)
    study = optuna.create_study()
    study.enqueue_trial(defaults)
    trial = study.ask()
    values = get_space(name)(trial, p.limits)
    assert trial.params == defaults
    TrialConfig.from_dict({**p.fixed, **trial.params, **values})

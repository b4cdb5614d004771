import dataclasses

import optuna
import pytest

from search_spaces import SpaceLimits, UnknownSpaceError, aug_cap, get_space, list_spaces
from search_spaces.cifar_zoo import AUG_POLICIES
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
        config = TrialConfig.from_dict({**p.fixed, **values})
        if name == "resnet_cifar":
            assert config.depth in p.limits.depths and config.width in p.limits.widths
        assert config.warmup_epochs <= p.epochs
        # Every sampled value reaches the config (nothing is sampled and dropped).
        for key, value in trial.params.items():
            field = key.removeprefix(f"{values['model']}_")
            if field == "aug_policy":
                assert values["aug_ops"] == AUG_POLICIES[value]
            else:
                assert values[field] == value, key
        study.tell(trial, 0.5)


def test_the_augmentation_cap_follows_the_epochs():
    assert [aug_cap(e) for e in (1, 2, 6, 10, 12, 20, 30)] == [0.05, 0.1, 0.3, 0.5, 0.6, 1.0, 1.0]


@pytest.mark.parametrize("name", list_spaces())
def test_a_short_budget_samples_weak_augmentation_over_its_whole_range(name):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    drawn = []
    for _ in range(60):
        trial = study.ask()
        drawn.append(get_space(name)(trial, SpaceLimits(max_epochs=6, max_aug_strength=aug_cap(6)))["aug_strength"])
        study.tell(trial, 0.5)
    assert max(drawn) <= 0.3 and max(drawn) > 0.25 and min(drawn) < 0.05


def test_a_study_recorded_before_the_cap_keeps_the_full_range():
    """Continued studies sample under the limits they recorded; older records have no cap."""
    old = SpaceLimits.from_dict({"depths": [10, 18], "widths": [8, 16], "max_epochs": 6, "models": []})
    assert old.max_aug_strength == 1.0
    assert SpaceLimits.from_dict(SpaceLimits(max_aug_strength=0.3).to_dict()).max_aug_strength == 0.3


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


def test_cifar_zoo_ranks_every_family_with_its_own_knobs():
    from trainers.models import list_models

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = {}
    for _ in range(200):
        trial = study.ask()
        values = get_space("cifar_zoo")(trial, PRESETS["quick"].limits)
        seen.setdefault(values["model"], set(trial.params))
        study.tell(trial, 0.1)
    assert set(seen) == set(list_models())
    assert "vgg_depth" in seen["vgg"] and "resnet_depth" not in seen["vgg"]


def test_a_continued_study_samples_from_the_choices_it_was_created_with(tmp_path):
    """cifar_zoo's families come from the study's record, so a model added later
    (the registry grew) does not change the distribution of a continued study."""
    import optuna

    from search_spaces import SpaceLimits, get_space
    from studies import record
    from studies.storage import open_storage, open_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space("cifar_zoo")
    created = SpaceLimits(depths=(10,), widths=(8,), max_epochs=2, models=("lenet5", "resnet"))
    settings = record.StudySettings(space="cifar_zoo", preset="smoke", fixed={}, data=None,
                                    limits=created.to_dict())
    storage = open_storage(f"sqlite:///{tmp_path / 'zoo.db'}", stale_after=None)
    study, _ = open_study(storage, "zoo", settings)
    trial = study.ask()
    assert space(trial, created)["model"] in ("lenet5", "resnet")
    study.tell(trial, 0.5)

    # Continuing with the code's current registry (more models) is what Optuna refuses ...
    everything = SpaceLimits(depths=(10,), widths=(8,), max_epochs=2)
    with pytest.raises(ValueError, match="dynamic value space"):
        space(study.ask(), everything)
    # ... so a continued study takes the limits it recorded.
    again, stored = open_study(storage, "zoo", settings)
    limits = SpaceLimits.from_dict(dict(stored.limits))
    assert limits == created
    trial = again.ask()
    assert space(trial, limits)["model"] in ("lenet5", "resnet")


def test_the_quick_preset_samples_only_width_16_resnets():
    """At the quick budget no width-8 ResNet reached the top (benchmarks/RESULTS.md
    section 13), so a quick study does not spend trials on them; depth is still searched."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        values = get_space("resnet_cifar")(trial, PRESETS["quick"].limits)
        seen.add((values["depth"], values["width"]))
        study.tell(trial, 0.1)
    assert seen == {(10, 16), (18, 16)}


# ---------------------------------------------------------------- a budget's known-good start


def test_a_short_resnet_study_starts_from_the_recorded_recipe_and_a_long_one_does_not():
    from search_spaces import get_starts
    from search_spaces.resnet_cifar import SHORT_BUDGET_START

    quick = dataclasses.replace(PRESETS["quick"].limits, max_aug_strength=aug_cap(6))
    assert get_starts("resnet_cifar", quick) == [SHORT_BUDGET_START]
    assert get_starts("resnet_cifar", quick) is not get_starts("resnet_cifar", quick)  # copies
    full = dataclasses.replace(PRESETS["full"].limits, max_aug_strength=aug_cap(30))
    assert get_starts("resnet_cifar", full) == []  # 30 epochs: the recipe is not measured there
    assert get_starts("resnet_cifar", PRESETS["smoke"].limits) == []  # no ResNet-18 in its limits
    assert get_starts("resnet_cifar", dataclasses.replace(quick, max_epochs=1, max_aug_strength=aug_cap(1))) == []
    two = dataclasses.replace(quick, max_epochs=2, max_aug_strength=aug_cap(2))
    assert get_starts("resnet_cifar", two) == [{**SHORT_BUDGET_START, "warmup_epochs": 0.5}]  # the space's range
    assert get_starts("cifar_zoo", quick) == []  # a space without starts
    assert get_starts("/somewhere/my_space.py", quick) == []  # a user's space: --enqueue is theirs


def test_the_start_is_a_point_of_the_space_it_starts():
    """Enqueued in a study, the start's parameters are all the space samples, within its ranges."""
    from search_spaces import get_starts

    quick = dataclasses.replace(PRESETS["quick"].limits, max_aug_strength=aug_cap(6))
    (start,) = get_starts("resnet_cifar", quick)
    study = optuna.create_study()
    study.enqueue_trial(start)
    trial = study.ask()
    values = get_space("resnet_cifar")(trial, quick)
    assert trial.params == start
    config = TrialConfig.from_dict({**PRESETS["quick"].fixed, **values})
    assert (config.depth, config.width, config.optimizer, config.aug_strength) == (18, 16, "sgd", 0.1)

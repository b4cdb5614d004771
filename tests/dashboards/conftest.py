"""A study shaped like a real search (every state, curves, attributes, two families) and its final run."""

from __future__ import annotations

import math
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

SPACE = {
    "depth": CategoricalDistribution([10, 18]),
    "width": CategoricalDistribution([8, 16]),
    "optimizer": CategoricalDistribution(["adamw", "sgd"]),
    "lr": FloatDistribution(5e-4, 1e-2, log=True),
    "aug_strength": FloatDistribution(0.0, 1.0),
}
BASELINE = {"depth": 18, "width": 16, "optimizer": "adamw", "lr": 0.003, "aug_strength": 0.25}
EPOCHS = 6
RUNG = {0: EPOCHS, 1: 1, 2: 3}  # ASHA-like: most trials stop at epoch 1, some at 3
CLASSES = ["cat", "dog", "ship"]


def _accuracy(params: dict[str, Any], epoch: int) -> float:
    # lr matters most (best near 3e-3), aug_strength a little, the rest barely.
    lr_term = -0.08 * (math.log10(params["lr"]) - math.log10(3e-3)) ** 2 * 4
    return 0.35 + 0.06 * epoch + lr_term - 0.05 * params["aug_strength"] + 0.01 * (params["width"] == 16)


def _space(trial: Any) -> dict[str, Any]:
    return {"model": "resnet", **{name: _suggest(trial, name, dist) for name, dist in SPACE.items()}}


def _suggest(trial: Any, name: str, dist: Any) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    return trial.suggest_float(name, dist.low, dist.high, log=dist.log)


def build_study(
    url: str, name: str = "cifar-demo", n: int = 18, seed: int = 0, family: str = "resnet",
    recipe: str | None = None, scheduler: str = "asha", baseline_epochs: int = EPOCHS,
    start: str | None = None,
) -> optuna.Study:
    """A stored study as studies/run.py leaves it: n trials, then one FAIL (stale), one RUNNING.

    Written by the real writers: :func:`studies.storage.open_study` with the
    study's :class:`~studies.record.StudySettings`, and the searcher Ray drives
    (``suggest``, one ``on_trial_result`` per epoch, ``on_trial_complete``).
    Trial 0 is enqueued (the baseline); the others' values are fixed by
    Optuna's PartialFixedSampler, so each trial's numbers are known here.
    ``recipe`` names trial 0's reference recipe, ``start`` the space whose start it
    is (neither: a config given in advance, as ``--enqueue`` gives);
    ``baseline_epochs`` below the budget has the scheduler stop it there.
    """
    from studies import record
    from studies.storage import open_storage, open_study
    from studies.tune_adapter import StudySearcher, _TrialBook

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = record.StudySettings(
        space="resnet_cifar", preset="quick", fixed={"epochs": EPOCHS, "batch_size": 128},
        data="blake2b:0123456789abcdef", data_source="/data/cifar10", sampler="tpe", scheduler=scheduler)
    storage = open_storage(url, stale_after=None)
    study, _ = open_study(storage, name, settings)
    rng = random.Random(seed)

    def searcher(params: dict[str, Any] | None) -> StudySearcher:
        sampler = optuna.samplers.PartialFixedSampler(params or {}, optuna.samplers.RandomSampler(seed))
        return StudySearcher(space=_space, study=optuna.load_study(study_name=name, storage=storage,
                                                                   sampler=sampler),
                             storage=storage, wanted=10_000, objectives=["val_acc"], book=_TrialBook())

    for number in range(n):
        if number == 0:
            params = dict(BASELINE)
            attrs = {record.RECIPE: recipe} if recipe else {record.START: start} if start else None
            study.enqueue_trial(params, user_attrs=attrs)
        elif number == 4:  # the winner: the baseline with less augmentation, 1 point better
            params = {**BASELINE, "optimizer": "sgd", "aug_strength": 0.05}
        else:
            params = {
                "depth": rng.choice([10, 18]),
                "width": rng.choice([8, 16]),
                "optimizer": rng.choice(["adamw", "sgd"]),
                "lr": math.exp(rng.uniform(math.log(5e-4), math.log(1e-2))),
                "aug_strength": rng.uniform(0.0, 1.0),
            }
        epochs = baseline_epochs if number == 0 else EPOCHS if number % 4 == 0 else RUNG[1 + number % 2]
        curve = {e: round(_accuracy(params, e), 4) for e in range(1, epochs + 1)}
        model = "vgg" if number % 3 == 2 else family
        config = {"model": model, **params, "epochs": EPOCHS, "batch_size": 128}
        ray_id = f"ray{number:04d}"
        writer = searcher(None if number == 0 else params)
        assert writer.suggest(ray_id) is not None
        result: dict[str, Any] = {}
        for epoch, value in curve.items():
            result = {"epoch": epoch, "val_acc": value, "config": config, "node_ip": "192.0.2.2",
                      "train_seconds": 20.0 * epoch * (2 if params["width"] == 16 else 1),
                      "param_count": 700_000 if params["width"] == 16 else 180_000}
            writer.on_trial_result(ray_id, result)
        writer.on_trial_complete(ray_id, {**result, "finished": epochs == EPOCHS})
    interrupted = searcher(BASELINE)  # stopped by Ctrl-C after one epoch: FAIL, stale
    interrupted.suggest("ray-int")
    interrupted.on_trial_result("ray-int", {"epoch": 1, "val_acc": 0.41})
    interrupted.close("the study was interrupted before the trial finished")
    searcher(BASELINE).suggest("ray-run")  # its driver is still running it
    return optuna.load_study(study_name=name, storage=storage)


def final_metrics(study: str = "cifar-demo", trial: int = 0) -> dict[str, Any]:
    """A final run's metrics.json as studies/final.py writes it: 2 seeds, 3 classes."""
    runs = []
    for seed, acc in ((0, 0.80), (1, 0.84)):
        runs.append(
            {
                "seed": seed,
                "test_acc": acc,
                "test_loss": 0.6 - seed / 10,
                "train_seconds": 100.0 + seed,
                "checkpoint": f"results/final/{study}/model_seed{seed}.pt",
                "per_class_acc": {"cat": acc - 0.1, "dog": acc, "ship": acc + 0.1},
                "history": [
                    {"epoch": e, "train_loss": 2.0 / e, "train_acc": 0.3 + 0.1 * e, "lr": 0.003}
                    for e in (1, 2, 3)
                ],
                "confusion": [[70, 20, 10], [10, 80, 10], [5, 5, 90]],
            }
        )
    return {
        "study": study,
        "trial": trial,
        "val_acc": 0.71,
        "test_acc_mean": 0.82,
        "test_acc_std": 0.0283,
        "seeds": [0, 1],
        "classes": CLASSES,
        "runs": runs,
        "config": {"model": "resnet", "depth": 18, "lr": 0.003},
        "data": "/data/cifar10",
        "wall_seconds": 210.0,
        "provenance": {
            "git_commit": "0123abcd",
            "git_dirty": False,
            "versions": {"torch": "2.5", "optuna": "5.0"},
            "python": "3.11.7",
            "hostname": "ci",
            "gpu": None,
            "time": "2026-01-01T00:00:00+00:00",
        },
    }


@pytest.fixture(scope="session")
def _demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    build_study(f"sqlite:///{path}")
    return path


@pytest.fixture
def demo_url(_demo_db: Path, tmp_path: Path) -> str:
    """A sqlite storage of this test's own, holding the demo study "cifar-demo"."""
    shutil.copy(_demo_db, tmp_path / "demo.db")  # building it takes a second; copying it, nothing
    return f"sqlite:///{tmp_path / 'demo.db'}"


@pytest.fixture
def demo_study(demo_url: str) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name="cifar-demo", storage=demo_url)

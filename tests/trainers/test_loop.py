import math
from pathlib import Path

import pytest
import torch

from tests.conftest import write_image_folder
from trainers import metrics as M
from trainers.config import TrialConfig
from trainers.data import load_dataset, make_splits
from trainers.loop import lr_at, train


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = write_image_folder(tmp_path_factory.mktemp("data"), ["a", "b", "c", "d"], 24, 4)
    ds = load_dataset(root, cache_dir=root / "cache")
    return make_splits(ds, val_fraction=0.25, seed=0)


def tiny(**changes):
    base = dict(depth=10, width=4, epochs=3, batch_size=16, lr=0.01, warmup_epochs=1.0,
                aug_strength=0.5, label_smoothing=0.1, grad_clip=1.0)
    return TrialConfig(**{**base, **changes})


def test_lr_schedule_matches_warmup_then_cosine_formula():
    total, warm, peak, low, start = 100, 10, 0.1, 1e-4, 0.01
    assert lr_at(0, total, warm, peak, low, start) == pytest.approx(peak * start)
    assert lr_at(5, total, warm, peak, low, start) == pytest.approx(peak * (start + (1 - start) * 0.5))
    for step in (10, 30, 55, 80, 100):
        t, T = step - warm, total - warm
        expected = low + 0.5 * (peak - low) * (1 + math.cos(math.pi * t / T))
        assert lr_at(step, total, warm, peak, low, start) == pytest.approx(expected)
    assert lr_at(10, total, warm, peak, low, start) == pytest.approx(peak)
    assert lr_at(100, total, warm, peak, low, start) == pytest.approx(low)
    assert lr_at(3, total, 0, peak, low, start) < peak  # no warm-up: decay from step 0


def test_training_reports_every_epoch_and_follows_the_schedule(splits):
    config = tiny()
    rows = []
    result = train(config, splits, report=lambda m, s: rows.append(m), threads=1)
    assert [r[M.EPOCH] for r in rows] == [1, 2, 3]
    for key in (M.VAL_ACC, M.VAL_LOSS, M.TRAIN_LOSS, M.TRAIN_ACC, M.LR, M.EPOCH_SECONDS,
                M.IMAGES_PER_SEC, M.TRAIN_SECONDS):
        assert all(math.isfinite(r[key]) for r in rows), key
    assert [r[M.FINISHED] for r in rows] == [False, False, True]
    steps = len(splits.train_x) // config.batch_size
    for r in rows:  # the lr after each epoch's last step is the formula's value
        expected = lr_at(steps * r[M.EPOCH], steps * 3, steps, config.lr, config.min_lr,
                         config.warmup_start_factor)
        assert r[M.LR] == pytest.approx(expected)
    assert rows[-1][M.LR] == pytest.approx(config.min_lr)
    assert torch.get_num_threads() == 1
    # The data is learnable: the model ends well above chance (25%).
    assert result.last[M.VAL_ACC] > 0.5


def test_resumed_run_ends_exactly_like_an_uninterrupted_one(splits, tmp_path):
    config = tiny(epochs=3, aug_strength=0.8)
    states = {}

    def keep(metrics, state):
        path = tmp_path / f"epoch{metrics[M.EPOCH]}.pt"
        torch.save(state, path)
        states[metrics[M.EPOCH]] = path

    full = train(config, splits, report=keep, threads=1)
    resume = torch.load(states[1], weights_only=True)
    resumed = train(config, splits, report=None, resume=resume, threads=1)
    assert [r[M.VAL_ACC] for r in resumed.history] == [r[M.VAL_ACC] for r in full.history]
    assert [r[M.TRAIN_LOSS] for r in resumed.history] == [r[M.TRAIN_LOSS] for r in full.history]
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_diverging_run_ends_with_a_reason_instead_of_crashing(splits):
    # An L2 penalty of 1 at lr 10 multiplies the weights by about -9 per step.
    config = tiny(optimizer="sgd", lr=10.0, momentum=0.9, grad_clip=0.0, warmup_epochs=0.0,
                  weight_decay=1.0, epochs=12, label_smoothing=0.0)
    rows = []
    result = train(config, splits, report=lambda m, s: rows.append(m), threads=1)
    assert result.diverged and "non-finite" in result.diverged
    assert rows[-1][M.DIVERGED] is True and "learning rate" in rows[-1][M.REASON]
    assert rows[-1][M.FINISHED] is False and len(rows) < 12  # it stopped at once


def test_final_mode_without_validation_skips_evaluation(splits):
    final = make_splits_without_val(splits)
    rows = []
    train(tiny(epochs=1), final, report=lambda m, s: rows.append(m), threads=1)
    assert M.VAL_ACC not in rows[0] and rows[0][M.FINISHED] is True


def make_splits_without_val(splits):
    import dataclasses

    return dataclasses.replace(splits, val_x=splits.val_x[:0], val_y=splits.val_y[:0])


def test_ema_mixup_and_flip_tta_train_and_evaluate(splits):
    import copy

    config = tiny(epochs=2, ema_decay=0.9, tta_flip=True, aug_ops="crop,flip,mixup,cutmix")
    rows = []  # states hold live tensors: keep copies, as a checkpoint file would
    result = train(config, splits, report=lambda m, s: rows.append((m, copy.deepcopy(s))),
                   threads=1)
    metrics, state = rows[-1]
    assert math.isfinite(metrics[M.TRAIN_LOSS]) and 0 <= metrics[M.VAL_ACC] <= 1
    # The evaluated model is the EMA copy, which differs from the raw weights.
    raw = state["model"]
    ema = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if raw[k].is_floating_point())
    assert all(torch.equal(result.model.state_dict()[k], ema[k]) for k in ema)
    # Resuming with an EMA restores it too.
    resumed = train(config, splits, resume=rows[0][1], threads=1)
    assert resumed.history[-1][M.VAL_ACC] == metrics[M.VAL_ACC]


@pytest.mark.parametrize("name", ["torch_reference", "keras_reference"])
def test_reference_recipes_construct_and_train_one_step(name, splits):
    from trainers.recipes import RECIPES, get_recipe

    full = RECIPES[name]
    assert full.epochs == 100 and full.lr == 1e-3 and full.weight_decay == 0.05
    assert full.label_smoothing == 0.1 and full.batch_size == 128
    small = get_recipe(name, epochs=1, max_width=4, batch_size=16)
    assert small.width == 4 and small.warmup_epochs == pytest.approx(0.05)
    result = train(small.replace(data_fraction=1.0), splits, threads=1)
    assert math.isfinite(result.last[M.TRAIN_LOSS])


def test_unknown_recipe_lists_the_known_ones():
    from trainers.errors import ConfigError
    from trainers.recipes import get_recipe

    with pytest.raises(ConfigError, match="named configs: keras_reference, torch_reference"):
        get_recipe("tf_reference")


def test_channels_last_training_at_64px_does_not_crash_the_process(tmp_path):
    """oneDNN's AVX-512 1x1-convolution backward crashed (SIGSEGV) on 8 -> 16 channels, stride 2,
    64 px, channels last: the reference recipes' shortcuts at --image-size 64. In a child process,
    since the crash kills it; the reference recipe at width 8, as the smoke preset runs it, with
    oneDNN's own kernel choice (trainers/onednn.py sidesteps the bad one)."""
    import subprocess
    import sys

    script = (
        "import torch\n"
        "from trainers.data import Splits\n"
        "from trainers.loop import train\n"
        "from trainers.recipes import get_recipe\n"
        "cfg = get_recipe('torch_reference', epochs=1, data_fraction=1.0, max_width=8)"
        ".replace(image_size=64, batch_size=64, channels_last=True)\n"
        "x = torch.randint(0, 255, (128, 3, 64, 64), dtype=torch.uint8); y = torch.arange(128) % 10\n"
        "s = Splits(train_x=x, train_y=y, val_x=x[:0], val_y=y[:0], classes=tuple('abcdefghij'),"
        " mean=(0.5,) * 3, std=(0.25,) * 3)\n"
        "print('trained', train(cfg, s, threads=1).history[-1]['epoch'])\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2], env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trained 1" in proc.stdout

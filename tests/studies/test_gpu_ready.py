"""GPU-ready without a GPU: the trial's device from Ray's grant, the data once per worker,
checkpoints only where the scheduler decides, torch.compile only when asked."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from studies.tune_adapter import SCHEDULERS, CheckpointPolicy, checkpoint_epochs, trial_device
from trainers import metrics as M
from trainers.config import TrialConfig
from trainers.data import Splits
from trainers.loop import compile_model, train
from trainers.models import create_model

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- the device Ray granted


@pytest.mark.parametrize(("gpu_ids", "visible", "expected"), [
    ([], "0,1", "cpu"),  # Ray 2.60 leaves the node's GPUs visible to a worker granted none
    ([], None, "cpu"),
    ([3], "3", "cuda:0"),  # Ray sets CUDA_VISIBLE_DEVICES to the granted ids: torch's cuda:0
    (["3"], "3", "cuda:0"),
    ([2, 5], "2,5", "cuda:0"),  # several granted: the trainer uses the first
    ([5], "1,3,5", "cuda:2"),  # RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES: the node's list
    ([1], None, "cuda:1"),  # ... and none set at all: the ids are torch's ordinals
    (["GPU-8f2c"], "GPU-11aa, GPU-8f2c", "cuda:1"),  # UUIDs, as a node may list them
])
def test_a_trial_trains_on_the_gpu_ray_granted_it_else_the_cpu(gpu_ids, visible, expected):
    assert trial_device(gpu_ids, visible) == torch.device(expected)


def test_a_granted_gpu_missing_from_the_visible_ones_is_an_error():
    with pytest.raises(RuntimeError, match="granted GPU 4"):
        trial_device([4], "0,1")


# ---------------------------------------------------------------- checkpoints at decision points


@pytest.mark.parametrize(("max_t", "grace", "rf"), [(30, 3, 3), (6, 1, 3), (2, 1, 2), (40, 1, 2),
                                                    (9, 1, 3), (100, 1, 4), (5, 7, 3)])
def test_asha_checkpoints_are_its_rungs_and_the_last_epoch(max_t, grace, rf):
    # Read off Ray's own scheduler, so a Ray that moves its rungs fails here.
    asha = SCHEDULERS["asha"](max_t, grace, rf, M.VAL_ACC, "max")
    rungs = {int(milestone) for bracket in asha._brackets for milestone, _ in bracket._rungs}
    assert checkpoint_epochs("asha", max_t, grace, rf) == frozenset(rungs | {max_t})


def test_the_full_preset_saves_four_times_per_trial():
    from studies.presets import PRESETS

    full = PRESETS["full"]
    epochs = checkpoint_epochs("asha", full.epochs, full.grace_period, full.reduction_factor)
    assert sorted(epochs) == [3, 9, 27, 30]
    assert checkpoint_epochs("hyperband", 30, 3, 3) is None  # it pauses and resumes trials
    policy = CheckpointPolicy(epochs)
    assert [e for e in range(1, 31) if policy.saves(e, 30)] == [3, 9, 27, 30]
    assert all(CheckpointPolicy(None).saves(e, 30) for e in range(1, 31))


# ---------------------------------------------------------------- resuming without optimizer state


def _tiny_splits(n=64):
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    y = torch.arange(n) % 10
    return Splits(train_x=x, train_y=y, val_x=x[:16], val_y=y[:16],
                  classes=tuple(str(i) for i in range(10)), mean=(0.5,) * 3, std=(0.25,) * 3)


def test_a_checkpoint_without_optimizer_state_resumes_with_a_fresh_optimizer():
    config = TrialConfig(depth=10, width=4, epochs=3, batch_size=32, aug_strength=0.0, optimizer="sgd")
    splits = _tiny_splits()
    states = []
    # A copy, as torch.save makes one: the state holds the live tensors and history.
    full = train(config, splits, report=lambda m, s: states.append(copy.deepcopy(s)))
    saved = {k: v for k, v in states[0].items() if k != "optimizer"}
    resumed = train(config, splits, resume=saved)
    assert [r[M.EPOCH] for r in resumed.history] == [1, 2, 3]  # epoch 1 from the checkpoint
    assert resumed.history[0] == full.history[0]
    with_optimizer = train(config, splits, resume=states[0])  # still exact with it
    assert with_optimizer.history[-1][M.TRAIN_LOSS] == full.history[-1][M.TRAIN_LOSS]
    # SGD's momentum restarted: the run goes on, but not the same as uninterrupted.
    assert resumed.history[-1][M.TRAIN_LOSS] != full.history[-1][M.TRAIN_LOSS]


# ---------------------------------------------------------------- torch.compile


def test_search_trials_do_not_compile_unless_asked():
    from studies.run import _parser

    assert TrialConfig().compile is False
    assert _parser().parse_args([]).compile is False
    assert _parser().parse_args(["--compile"]).compile is True
    assert _parser().parse_args(["--no-checkpoint-optimizer"]).checkpoint_optimizer is False
    assert _parser().parse_args([]).checkpoint_optimizer is True
    config = TrialConfig(depth=10, width=4, epochs=1, batch_size=32, aug_strength=0.0, compile=True)
    row = train(config, _tiny_splits()).history[0]  # on the CPU compile is ignored
    assert row[M.COMPILE_SECONDS] == 0.0


def test_compiling_up_front_is_timed_and_leaves_the_model_as_it_was(monkeypatch):
    # The "eager" backend: the CPU has no business running inductor here; the contract is the same.
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model: real_compile(model, backend="eager"))
    torch.manual_seed(0)
    model = create_model("resnet", 10, 10, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    compiled, seconds = compile_model(model, TrialConfig(depth=10, width=4), torch.device("cpu"),
                                      (8, 3, 32, 32))
    assert seconds > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats too
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    assert compiled(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


# ---------------------------------------------------------------- a real study on Ray


@pytest.fixture(scope="module")
def five_epoch_study(tiny_cifar, tmp_path_factory):
    """4 trials of 5 epochs in 2 slots, so each worker process runs about two trials."""
    results = tmp_path_factory.mktemp("gpu_ready")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "studies" / "run.py"), "--preset", "smoke", "--data", str(tiny_cifar),
         "--data-fraction", "1", "--results", str(results), "--cache-dir", str(results / "cache"),
         "--trials", "4", "--epochs", "5", "--scheduler", "fifo", "--no-checkpoint-optimizer"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = [p.parent for p in (results / "ray").glob("*/*/result.json")]
    rows = {t: [json.loads(line) for line in (t / "result.json").read_text().splitlines() if line.strip()]
            for t in trials}
    assert len(rows) == 4
    return rows


@pytest.mark.slow
def test_a_reused_worker_fetches_the_data_once(five_epoch_study):
    trials_per_pid: dict[int, set] = {}
    for trial, rows in five_epoch_study.items():
        for row in rows:
            trials_per_pid.setdefault(row["pid"], set()).add(trial)
            # Every trial of a process after its first finds the splits already there.
            assert row["data_fetches"] == 1, (trial.name, row["pid"], row["data_fetches"])
    assert max(len(t) for t in trials_per_pid.values()) >= 2, "no worker was reused: nothing shown"


@pytest.mark.slow
def test_trials_checkpoint_only_at_decision_points_and_the_end(five_epoch_study):
    # The smoke preset's ladder (grace 1, factor 2) up to 5 epochs: 1, 2, 4 and the last.
    for trial, rows in five_epoch_study.items():
        saved = [row[M.EPOCH] for row in rows if row.get("checkpoint_dir_name")]
        assert saved == [1, 2, 4, 5], (trial.name, saved)
        kept = sorted(trial.glob("checkpoint_*/state.pt"))
        assert len(kept) == 1  # num_to_keep=1
        state = torch.load(kept[0], weights_only=True)
        assert state["epoch"] == 5 and "optimizer" not in state and "model" in state

"""No host-device synchronisation inside a training step, counted on the CPU.

On a GPU each sync stalls the device until the host has read a value. The CPU
cannot show a stall, but it runs the same ops, so the ops that would sync can be
counted here: reading a tensor's value on the host (``aten::_local_scalar_dense``,
``Tensor.tolist``/``numpy``/``__bool__``), ops whose output shape depends on the
data (``nonzero``, ``bincount``, ``masked_select``, ``unique``, ``repeat_interleave``
without ``output_size``), and tensors made from host data (``aten::lift_fresh``:
on a GPU a blocking copy, as a per-call ``torch.tensor(table, device=...)`` is).

``train()`` runs each augmentation family for N and for 2N steps. Whatever syncs
a step or an augmentation call makes shows up as a difference between the two;
the epoch's own syncs (its metrics, the evaluation) are the same in both.
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch.optim.optimizer import (register_optimizer_step_post_hook,
                                   register_optimizer_step_pre_hook)
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from tests.conftest import class_images
from trainers import augment as A
from trainers import loop
from trainers.augment import AUG_OPS, DEFAULT_OPS
from trainers.config import TrialConfig
from trainers.data import Splits

SYNC_OPS = {"_local_scalar_dense", "nonzero", "bincount", "masked_select", "lift_fresh"}
SYNC_METHODS = {"tolist", "numpy", "__bool__", "item", "__int__", "__float__", "__index__"}
BATCH, STEPS = 8, 4
# Per run, not per step: the epoch's metrics (one read) and the evaluation (one read).
PER_EPOCH = 2


class SyncCounter:
    """Counts syncing ops while active: ``with SyncCounter() as c: ...; c.counts``.

    The optimizer's own step is left out: on the CPU its step counters live on the
    host (AdamW: ``.item()`` per parameter), while on CUDA the trainer's optimizer
    is fused and keeps them on the device, so they are no sync where it matters.
    """

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._paused = 0
        counter = self

        class Methods(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                name = getattr(func, "__name__", "")
                if name not in SYNC_METHODS:
                    return func(*args, **(kwargs or {}))
                counter._hit(f"Tensor.{name}")
                counter._paused += 1  # its _local_scalar_dense is the same sync
                try:
                    return func(*args, **(kwargs or {}))
                finally:
                    counter._paused -= 1

        class Ops(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                name = func.overloadpacket.__name__
                if (name in SYNC_OPS or name.startswith("unique")
                        or name == "repeat_interleave" and kwargs.get("output_size") is None):
                    counter._hit(f"aten::{name}")
                return func(*args, **kwargs)

        self._modes = [Methods(), Ops()]

    def _hit(self, name: str) -> None:
        if not self._paused:
            self.counts[name] += 1

    def _pause(self, *_) -> None:
        self._paused += 1

    def _resume(self, *_) -> None:
        self._paused -= 1

    def __enter__(self) -> SyncCounter:
        self._hooks = [register_optimizer_step_pre_hook(self._pause),
                       register_optimizer_step_post_hook(self._resume)]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
        for hook in self._hooks:
            hook.remove()


def _splits(steps: int) -> Splits:
    per_class = steps * BATCH // 4
    x = torch.cat([class_images(k, per_class, (32, 32), seed=0) for k in range(4)])
    y = torch.arange(4).repeat_interleave(per_class)
    val = slice(0, len(x), 4)
    return Splits(x, y, x[val], y[val], ("a", "b", "c", "d"), (0.5, 0.45, 0.4), (0.25, 0.25, 0.25))


def _count(config: TrialConfig, steps: int) -> collections.Counter[str]:
    splits = _splits(steps)
    with SyncCounter() as counter:
        loop.train(config, splits, threads=1)
    return counter.counts


CASES = {ops: {} for ops in (*AUG_OPS, "mixup,cutmix", DEFAULT_OPS)}
CASES["crop,flip + ema, sgd, tta"] = dict(aug_ops="crop,flip", ema_decay=0.9, optimizer="sgd",
                                          tta_flip=True)


@pytest.mark.parametrize("case", list(CASES))
def test_a_training_step_never_syncs(case, monkeypatch):
    # Two batches per augmentation call, so that the augmentation runs every other step.
    monkeypatch.setattr(loop, "AUGMENT_CHUNK", 2 * BATCH)
    options = {"aug_ops": case, **CASES[case]}
    config = TrialConfig(model="lenet5", depth=5, width=6, epochs=1, batch_size=BATCH,
                         eval_batch_size=4 * BATCH, aug_strength=1.0, warmup_epochs=0.0,
                         grad_clip=1.0, label_smoothing=0.1, **options)
    _count(config, 2)  # fills the caches of constants built once per process and device
    short, long = _count(config, STEPS), _count(config, 2 * STEPS)
    per_step = (sum(long.values()) - sum(short.values())) / STEPS
    print(f"{case}: {per_step:g} syncs per step; per run {dict(long)}")
    assert long == short, f"syncs that grow with the steps: {long - short}"
    assert per_step < 0.05
    # and per run only the epoch's (plus, with EMA, AveragedModel's count made from a number)
    assert sum(long.values()) <= PER_EPOCH + bool(config.ema_decay), long


def test_the_counter_sees_syncs_and_skips_the_optimizer_step():
    x = torch.tensor([0.0, 1.0, 2.0])
    param = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([param])
    param.grad = torch.ones(2)
    with SyncCounter() as counter:
        x.nonzero()
        x.sum().item()
        x.tolist()
        bool(x[1] > 0)
        torch.tensor([1.0, 2.0])
        optimizer.step()  # reads its step count with .item(): not counted
    assert counter.counts == {"aten::nonzero": 1, "Tensor.item": 1, "Tensor.tolist": 1,
                              "Tensor.__bool__": 1, "aten::lift_fresh": 1}
    with SyncCounter() as counter:
        torch.repeat_interleave(torch.tensor([1, 2]))
        torch.repeat_interleave(x, torch.tensor([1, 1, 1]), output_size=3)
    assert counter.counts == {"aten::lift_fresh": 2, "aten::repeat_interleave": 1}


def test_a_step_that_syncs_is_caught(monkeypatch):
    """The step test can fail: an ``.item()`` per step shows up as one sync per step."""
    monkeypatch.setattr(loop, "AUGMENT_CHUNK", 2 * BATCH)
    original = loop.mix

    def syncing_mix(x, y, *args):
        y.sum().item()
        return original(x, y, *args)

    monkeypatch.setattr(loop, "mix", syncing_mix)
    config = TrialConfig(model="lenet5", depth=5, width=6, epochs=1, batch_size=BATCH,
                         aug_ops="mixup", aug_strength=0.5, warmup_epochs=0.0)
    short, long = _count(config, STEPS), _count(config, 2 * STEPS)
    assert (long - short) == {"Tensor.item": STEPS}


def test_evaluation_moves_nothing_back_per_batch():
    """One read of the sums per evaluation, however many batches."""
    splits = _splits(8)
    model = loop._build_model(TrialConfig(model="lenet5", depth=5, width=6), 4)
    config = TrialConfig(model="lenet5", depth=5, width=6, eval_batch_size=4)
    loop.evaluate(model, splits.val_x, splits.val_y, splits, config)  # caches the mean and std
    with SyncCounter() as counter:
        result = loop.evaluate(model, splits.val_x, splits.val_y, splits, config)
    assert len(splits.val_x) // config.eval_batch_size == 4
    assert counter.counts == {"Tensor.tolist": 1}
    assert result["pred"].shape == splits.val_y.shape and 0 <= result["acc"] <= 1


# ---------------------------------------------------------------- what the sync-free draws keep


@pytest.mark.parametrize(("table", "b"), [("randaugment", 64), ("randaugment", 5),
                                          ("autoaugment", 64), ("autoaugment", 5)])
def test_fixed_size_groups_keep_each_image_s_distribution(table, b):
    """Every image still draws its ops with the policy's probabilities, and the groups that
    run the non-linear ops hold exactly the images that drew them (5 images: fewer than
    AutoAugment's blocks, so the permutation also holds items that are no image)."""
    tables = {"randaugment": A._randaugment_table(0.5, 0.3), "autoaugment": A._autoaugment_table(1.0)}
    t, device = tables[table], torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    seen: collections.Counter[tuple[int, ...]] = collections.Counter()
    draws = 12000 // b
    for _ in range(draws):
        rounds = A._draw(t, b, gen, device)
        for ops in torch.stack([r.op for r in rounds], 1).tolist():
            seen[tuple(ops)] += 1
        for r in rounds:
            in_group = torch.zeros(b + 1, dtype=torch.long)
            start = 0
            for k, count in r.slots.sizes:
                part = slice(start, start + count)
                start += count
                write, read = r.slots.write[part], r.slots.read[part]
                mine = write < b  # the others write to the spare row
                assert (r.op[write[mine]] == k).all() and torch.equal(read[mine], write[mine])
                in_group.index_add_(0, write, torch.ones_like(write))
            assert torch.equal(in_group[:b], torch.isin(r.op, torch.tensor(A._PIXEL_IDS)).long())
    expected: collections.Counter[tuple[int, ...]] = collections.Counter()
    for o, p in enumerate(t.probs):
        expected[tuple(ops[o] for ops in t.ops)] += p
    n = draws * b
    for key, p in expected.items():  # within 4.5 standard deviations of a binomial count
        assert abs(seen[key] - n * p) <= 4.5 * (n * p * (1 - p)) ** 0.5 + 1, (key, seen[key], n * p)
    assert set(seen) <= set(expected)


def test_mixing_weights_are_seeded_beta_draws():
    torch.manual_seed(3)
    draws = A._beta(0.4, 20000, torch.Generator().manual_seed(3), torch.device("cpu"))
    torch.manual_seed(3)
    again = A._beta(0.4, 20000, torch.Generator().manual_seed(3), torch.device("cpu"))
    assert torch.equal(draws, again)  # torch's seeded global generator: the trainer saves its state
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    assert abs(draws.mean().item() - 0.5) < 0.01
    assert abs(draws.var().item() - 1 / (4 * 1.8)) < 0.01

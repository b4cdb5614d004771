"""The training loop shared by every trial and by the final run.

Plain PyTorch: no Ray, no Optuna. The caller passes a ``report`` callback that
receives the epoch's metrics and the state to checkpoint, and optionally a
state to resume from; ``studies/`` turns these into Ray Tune calls.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainers import metrics as M
from trainers.augment import AugmentPolicy, augment_normalize, mix
from trainers.config import TrialConfig
from trainers.data import Splits
from trainers.memory import keep_freed_memory
from trainers.models import count_parameters, create_model
from trainers.onednn import sidestep_strided_1x1

Report = Callable[[dict[str, Any], dict[str, Any]], None]
_DIVERGENCE_CHECK_EVERY = 50  # steps; one host sync per check
# Images augmented per call: several batches at once, since per-call overheads
# (small tensors, Python) stop mattering around 1024 32x32 images on a CPU
# (benchmarks/RESULTS.md: 512 per call is ~25% slower, 256 ~40%).
AUGMENT_CHUNK = 1024


@dataclasses.dataclass
class TrainResult:
    """What a finished (or stopped) run leaves behind."""

    model: nn.Module
    history: list[dict[str, Any]]
    param_count: int
    train_seconds: float
    diverged: str | None = None

    @property
    def last(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def default_device() -> torch.device:
    """CUDA when visible, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float, min_lr: float,
          start_factor: float) -> float:
    """Linear warm-up from ``peak * start_factor`` to ``peak``, then cosine to ``min_lr``.

    After warm-up, with t steps into the decay of T:
    eta_t = eta_min + 0.5 (eta_max - eta_min)(1 + cos(pi t / T)).
    """
    if step < warmup_steps:
        return peak * (start_factor + (1 - start_factor) * step / warmup_steps)
    t = min(step - warmup_steps, total_steps - warmup_steps)
    decay_steps = max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (peak - min_lr) * (1 + math.cos(math.pi * t / decay_steps))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Decay on weights of convs and linears only; decaying norms and biases hurts.
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(config: TrialConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = _param_groups(model, config.weight_decay)
    # Fused on CUDA: one kernel for all parameters, step counts kept on the device
    # (no host sync). The CPU has no fused kernels worth it; there the default stays.
    fused = {"fused": True} if next(model.parameters()).is_cuda else {}
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True,
                               **fused)
    return torch.optim.AdamW(groups, lr=config.lr, **fused)


class _Normalizer:
    """uint8 batch -> normalised float batch, with augmentation in between."""

    def __init__(self, splits: Splits, device: torch.device, channels_last: bool) -> None:
        # numbers for the augmentation (it reads them on the host), tensors for evaluation
        self.numbers = tuple(map(float, splits.mean)), tuple(map(float, splits.std))
        self.mean, self.std = _mean_std(*self.numbers, device)
        self.format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, x_uint8: torch.Tensor, policy: AugmentPolicy | None = None,
                 gen: torch.Generator | None = None) -> torch.Tensor:
        if policy is not None:  # augmentation, conversion and normalisation in one pass
            return augment_normalize(x_uint8, policy, gen, *self.numbers,
                                     self.format == torch.channels_last)
        x = x_uint8.float().div_(255)
        return ((x - self.mean) / self.std).contiguous(memory_format=self.format)


@functools.lru_cache(maxsize=8)
def _mean_std(mean: tuple[float, ...], std: tuple[float, ...],
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std as [C, 1, 1] on the device, copied there once."""
    return (torch.tensor(mean, device=device, dtype=torch.float32)[:, None, None],
            torch.tensor(std, device=device, dtype=torch.float32)[:, None, None])


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, splits: Splits,
             config: TrialConfig, device: torch.device | None = None) -> dict[str, Any]:
    """Accuracy, mean loss and predictions of ``model`` on uint8 images ``x``.

    With ``config.tta_flip`` the logits of each image and its mirror are averaged.
    ``x`` and ``y`` may already be on the device (``train`` moves them once); the
    sums stay there, so the whole evaluation waits on the device once, at the end.
    """
    device = device or next(model.parameters()).device
    norm = _Normalizer(splits, device, config.channels_last)
    model.eval()
    preds = []
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for i in range(0, len(x), config.eval_batch_size):
        xb = x[i : i + config.eval_batch_size].to(device, non_blocking=True)
        yb = y[i : i + config.eval_batch_size].to(device, non_blocking=True)
        with _autocast(device, config):
            inputs = norm(xb)
            out = model(inputs).float()
            if config.tta_flip:
                out = (out + model(inputs.flip(3)).float()) / 2
        loss_sum += F.cross_entropy(out, yb, reduction="sum")
        pred = out.argmax(1)
        correct += (pred == yb).sum()
        preds.append(pred)
    loss, hits = torch.stack([loss_sum, correct.double()]).tolist()  # the one host sync
    # the device is idle by now, so this copy waits for nothing
    pred = torch.cat(preds).cpu() if preds else torch.zeros(0, dtype=torch.int64)
    n = max(1, len(y))
    return {"acc": hits / n, "loss": loss / n, "pred": pred}


def compile_model(model: nn.Module, config: TrialConfig, device: torch.device,
                  batch_shape: tuple[int, ...]) -> tuple[nn.Module, float]:
    """``torch.compile(model)``, compiled now on one zero batch; returns it and the seconds taken.

    Compiling up front keeps the compile time out of the first epoch's time and
    images/s. The warm-up step leaves no trace: the BatchNorm statistics, the
    gradients and the RNG states are as they were. ``torch.compiler.reset()``
    first: a process that trains model after model (a reused Ray actor, the
    seeds of a final run) would otherwise pile guards on the same forward code
    and, past the recompile limit (8), fall back to eager without a word.
    """
    torch.compiler.reset()
    compiled = torch.compile(model)
    t0 = time.perf_counter()
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    x = torch.zeros(batch_shape, device=device).contiguous(memory_format=fmt)
    model.train()
    with _autocast(device, config):
        out = compiled(x)
    out.float().sum().backward()  # the backward graph compiles at the first backward
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    torch.set_rng_state(cpu_rng)
    if cuda_rng is not None:
        torch.cuda.set_rng_state(cuda_rng, device)
    return compiled, seconds


def _autocast(device: torch.device, config: TrialConfig):
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and config.mixed_precision
    )


def train(
    config: TrialConfig,
    splits: Splits,
    report: Report | None = None,
    resume: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    threads: int | None = None,
) -> TrainResult:
    """Trains one model for ``config.epochs`` epochs, reporting after each.

    Args:
        config: the trial's configuration.
        splits: train and validation data as uint8 tensors (validation may be
            empty: then no per-epoch evaluation is done, as in a final run).
        report: called after every epoch with the metrics (``trainers.metrics``
            names) and the state to checkpoint; it may raise to stop the run.
        resume: a state passed to ``report`` earlier; training continues after
            its epoch and ends exactly where an uninterrupted run would (CPU).
        device: defaults to CUDA when available.
        threads: torch intra-op threads; set it to the CPUs the trial owns.

    Returns:
        The model that was evaluated (the EMA copy when ``ema_decay`` is set), the
        per-epoch history and, if the loss stopped being finite, the reason (the
        run ends at that epoch instead of crashing).
    """
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cpu":
        keep_freed_memory()
    if device.type == "cuda":  # the shapes repeat every step: let cuDNN time its kernels once
        torch.backends.cudnn.benchmark = True
    channels_last = config.channels_last
    torch.manual_seed(config.seed)
    model = _build_model(config, splits.num_classes).to(device)
    if device.type == "cpu":
        sidestep_strided_1x1(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    param_count = count_parameters(model)
    # The EMA copy (averaging buffers too, so its BatchNorm statistics match).
    ema = None
    if config.ema_decay:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay),
            use_buffers=True)
    step_model, compile_seconds = model, 0.0
    if config.compile and device.type == "cuda":
        batch_shape = (min(config.batch_size, len(splits.train_x)), *splits.train_x.shape[1:])
        step_model, compile_seconds = compile_model(model, config, device, batch_shape)
    optimizer = build_optimizer(config, model)
    n = len(splits.train_x)
    batch = min(config.batch_size, n)
    steps_per_epoch = n // batch
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_at(s, total_steps, warmup_steps, config.lr, config.min_lr,
                        config.warmup_start_factor) / config.lr,
    )
    gen = torch.Generator(device=device).manual_seed(config.seed)
    start_epoch, train_seconds, history = 0, 0.0, []
    if resume is not None:
        model.load_state_dict(resume["model"])
        if "optimizer" in resume:  # a checkpoint may leave it out: the optimizer then starts afresh
            optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        _set_rng_state(resume["rng"], gen, device)
        start_epoch, train_seconds = resume["epoch"], resume["train_seconds"]
        history = list(resume["history"])
        if ema is not None:
            ema.load_state_dict(resume["ema"])

    train_x, train_y = _resident(splits.train_x, device), _resident(splits.train_y, device)
    val_x, val_y = _resident(splits.val_x, device), _resident(splits.val_y, device)
    norm = _Normalizer(splits, device, channels_last)
    policy = AugmentPolicy.from_strength(config.aug_strength, splits.train_x.shape[-1],
                                         config.aug_ops)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    eval_model = ema.module if ema is not None else model
    ema_fresh = resume is None  # the first update copies the weights
    diverged = None

    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        perm = torch.randperm(n, generator=gen, device=device)
        per_chunk = max(1, AUGMENT_CHUNK // batch)  # batches augmented together
        for step in range(steps_per_epoch):
            if step % per_chunk == 0:
                rows = perm[step * batch : min(step + per_chunk, steps_per_epoch) * batch]
                chunk = norm(train_x[rows], policy, gen)
            first = (step % per_chunk) * batch
            idx = perm[step * batch : (step + 1) * batch]
            xb, yb = chunk[first : first + batch], train_y[idx]
            target = yb
            if policy.mixes:
                xb, target = mix(xb, yb, splits.num_classes, policy, gen)
            with _autocast(device, config):
                out = step_model(xb)
                loss = criterion(out.float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            if ema is not None:
                _update_ema(ema, model, ema_fresh)
                ema_fresh = False
            loss_sum += loss.detach() * len(idx)
            correct += (out.argmax(1) == yb).sum()
            if (step + 1) % _DIVERGENCE_CHECK_EVERY == 0 and not torch.isfinite(loss_sum):
                break
        seen = steps_per_epoch * batch
        # the epoch's one host sync (and the end of its queued work, for the timing)
        loss_total, hits = torch.stack([loss_sum.double(), correct.double()]).tolist()
        train_time = time.perf_counter() - t0
        train_loss = loss_total / seen
        row: dict[str, Any] = {
            M.EPOCH: epoch + 1,
            M.TRAIN_LOSS: train_loss,
            M.TRAIN_ACC: hits / seen,
            M.LR: optimizer.param_groups[0]["lr"],
            M.IMAGES_PER_SEC: seen / max(train_time, 1e-9),
            M.PARAM_COUNT: param_count,
            M.DIVERGED: False,
        }
        if not math.isfinite(train_loss):
            diverged = (
                f"non-finite training loss in epoch {epoch + 1} (lr {config.lr:g}); "
                "lower the learning rate or enable grad_clip"
            )
            row.update({M.DIVERGED: True, M.REASON: diverged, M.TRAIN_LOSS: float("nan")})
            if len(splits.val_x):
                row.update({M.VAL_ACC: 0.0, M.VAL_LOSS: float("nan")})
        elif len(splits.val_x):
            result = evaluate(eval_model, val_x, val_y, splits, config, device)
            row.update({M.VAL_ACC: result["acc"], M.VAL_LOSS: result["loss"]})
        train_seconds += time.perf_counter() - t0
        row[M.EPOCH_SECONDS] = time.perf_counter() - t0
        row[M.TRAIN_SECONDS] = train_seconds
        row[M.FINISHED] = diverged is None and epoch + 1 == config.epochs
        row[M.COMPILE_SECONDS] = compile_seconds  # spent before the first epoch, in neither time above
        history.append(row)
        if report is not None:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch + 1,
                "train_seconds": train_seconds,
                "history": history,
                "rng": _rng_state(gen, device),
                "config": config.to_dict(),
            }
            if ema is not None:
                state["ema"] = ema.state_dict()
            report(dict(row), state)
        if diverged:
            break
    return TrainResult(eval_model, history, param_count, train_seconds, diverged)


def _rng_state(gen: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """The augmentation generator's state and torch's: the CPU's, and on CUDA the device's
    (dropout and stochastic depth draw from it there)."""
    state = {"generator": gen.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], gen: torch.Generator,
                   device: torch.device) -> None:
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:  # checkpoints from before it was saved lack it
        torch.cuda.set_rng_state(state["cuda"], device)


def _resident(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device``, copied once per run; on CUDA from pinned memory, asynchronously."""
    if device.type == "cuda" and not x.is_cuda and x.numel():
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def _update_ema(ema: torch.optim.swa_utils.AveragedModel, model: nn.Module, first: bool) -> None:
    """``ema.update_parameters(model)`` without its two host syncs per step.

    AveragedModel reads its update count, a tensor, to tell the first update (a
    copy) from the others (its ``multi_avg_fn``); the loop knows which is which.
    The count is still kept, so the state is AveragedModel's own.
    """
    pairs = list(zip([*ema.module.parameters(), *ema.module.buffers()],
                     [*model.parameters(), *model.buffers()], strict=True))
    with torch.no_grad():
        if first:
            for averaged, current in pairs:
                averaged.copy_(current)
        else:  # the EMA function takes floats and integers (BatchNorm's count) apart
            for floats in (True, False):
                group = [pair for pair in pairs if pair[0].is_floating_point() == floats]
                if group:
                    ema.multi_avg_fn(*map(list, zip(*group)), ema.n_averaged)
        ema.n_averaged += 1


def _build_model(config: TrialConfig, num_classes: int) -> nn.Module:
    return create_model(config.model, num_classes, depth=config.depth, width=config.width,
                        drop_path=config.drop_path, image_size=config.image_size)

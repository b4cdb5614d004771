"""The one frozen configuration of a trial, validated on construction.

Every knob a trial can turn lives here, so a result saved beside its config can
always be re-run (``TrialConfig.from_dict(json.load(f))``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any

from trainers.errors import ConfigError

OPTIMIZERS = ("adamw", "sgd")


@dataclasses.dataclass(frozen=True)
class TrialConfig:
    """Everything that decides what one training run does.

    Attributes:
        model: name in the model registry (``trainers.models.list_models()``).
        depth: network depth, meaning defined by the model (ResNet: 10, 18, 20,
            34; see docs/models.md); 0 is the model's canonical depth.
        width: the model's width knob (usually first-stage channels); 0 is canonical.
        image_size: side in pixels that images are resized to when loaded.
        epochs: full training budget; the LR schedule spans all of it.
        batch_size: training batch size.
        optimizer: ``adamw`` or ``sgd`` (SGD uses Nesterov momentum).
        lr: peak learning rate, reached at the end of the warm-up.
        momentum: SGD momentum (AdamW ignores it).
        weight_decay: decoupled for AdamW, L2 for SGD; never on norms or biases.
        warmup_epochs: linear warm-up length, fractional epochs allowed.
        warmup_start_factor: warm-up starts at ``lr * warmup_start_factor``.
        min_lr: the cosine decay ends here (eta_min).
        label_smoothing: cross-entropy label smoothing.
        grad_clip: max global gradient norm; 0 disables clipping.
        aug_strength: 0 is no augmentation, 0.5 the reference recipes' magnitudes,
            1 the strongest; it scales every op in ``aug_ops``.
        aug_ops: comma-separated augmentation ops (``trainers.augment.AUG_OPS``):
            crop, flip, jitter, contrast, rotate, translate, zoom, erasing,
            randaugment, trivialaugment, autoaugment, mixup, cutmix.
        drop_path: stochastic-depth rate, on architectures with residual blocks.
        ema_decay: evaluate an exponential moving average of the weights with
            this decay per step (e.g. 0.999); 0 disables it.
        tta_flip: average the predictions of each image and its mirror image.
        compile: ``torch.compile`` the model (CUDA only; ignored on CPU).
        data_fraction: share of the training split used (stratified).
        val_fraction: share of train carved out for validation; 0 in a final run.
        split_seed: seed of the train/validation split, shared by a whole study.
        seed: seed of initialisation, shuffling and augmentation.
        mixed_precision: bf16 autocast on CUDA (ignored on CPU).
        channels_last: channels-last memory format (faster on CUDA, and on x86
            CPUs through oneDNN: 1.8x for a small ResNet on this 2-core machine).
        eval_batch_size: batch size for evaluation.
    """

    model: str = "resnet"
    depth: int = 18
    width: int = 64
    image_size: int = 32
    epochs: int = 30
    batch_size: int = 256
    optimizer: str = "adamw"
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    warmup_start_factor: float = 0.01
    min_lr: float = 1e-6
    label_smoothing: float = 0.0
    grad_clip: float = 0.0
    aug_strength: float = 0.5
    aug_ops: str = "crop,flip,jitter,randaugment,erasing"
    drop_path: float = 0.0
    ema_decay: float = 0.0
    tta_flip: bool = False
    compile: bool = False
    data_fraction: float = 1.0
    val_fraction: float = 0.1
    split_seed: int = 0
    seed: int = 0
    mixed_precision: bool = True
    channels_last: bool = True
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            expected = {"int": int, "float": (int, float), "str": str, "bool": bool}[field.type]
            if isinstance(value, bool) and field.type != "bool" or not isinstance(value, expected):
                raise ConfigError(
                    f"config key {field.name!r} must be {field.type}, got {value!r}"
                )
            if field.type == "float" and not math.isfinite(value):
                raise ConfigError(f"config key {field.name!r} must be finite, got {value!r}")
        _check(self.depth >= 0, "depth", self.depth, ">= 0 (0: the model's canonical depth)")
        _check(self.width >= 0, "width", self.width, ">= 0 (0: the model's canonical width)")
        _check(28 <= self.image_size <= 1024, "image_size", self.image_size, "in [28, 1024]")
        _check(self.epochs >= 1, "epochs", self.epochs, ">= 1")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        _check(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, f"one of {OPTIMIZERS}")
        _check(0 < self.lr <= 10, "lr", self.lr, "in (0, 10]")
        _check(0 <= self.momentum < 1, "momentum", self.momentum, "in [0, 1)")
        _check(0 <= self.weight_decay <= 1, "weight_decay", self.weight_decay, "in [0, 1]")
        _check(
            0 <= self.warmup_epochs <= self.epochs,
            "warmup_epochs", self.warmup_epochs, f"in [0, epochs={self.epochs}]",
        )
        _check(
            0 <= self.warmup_start_factor <= 1,
            "warmup_start_factor", self.warmup_start_factor, "in [0, 1]",
        )
        _check(0 <= self.min_lr <= self.lr, "min_lr", self.min_lr, f"in [0, lr={self.lr}]")
        _check(
            0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "in [0, 1)"
        )
        _check(self.grad_clip >= 0, "grad_clip", self.grad_clip, ">= 0")
        _check(0 <= self.aug_strength <= 1, "aug_strength", self.aug_strength, "in [0, 1]")
        _check(
            0 < self.data_fraction <= 1, "data_fraction", self.data_fraction, "in (0, 1]"
        )
        _check(0 <= self.val_fraction < 1, "val_fraction", self.val_fraction, "in [0, 1)")
        _check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, ">= 1")
        _check(0 <= self.drop_path <= 0.5, "drop_path", self.drop_path, "in [0, 0.5]")
        _check(0 <= self.ema_decay < 1, "ema_decay", self.ema_decay, "in [0, 1)")
        # Imported here: these modules import torch, the config should not need to.
        from trainers.augment import parse_ops
        from trainers.models import list_models, model_info

        _check(self.model in list_models(), "model", self.model, f"one of {list_models()}")
        info = model_info(self.model)
        _check(self.depth == 0 or self.depth in info.depths, "depth", self.depth,
               f"0 or one of {list(info.depths)} for {self.model}")
        _check(self.drop_path == 0 or info.has_drop_path, "drop_path", self.drop_path,
               f"0 for {self.model}, which has no residual blocks to drop")
        try:
            parse_ops(self.aug_ops)
        except ConfigError as err:
            raise ConfigError(f"config key 'aug_ops': {err}") from None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialConfig:
        """Builds a config, refusing keys that are not fields.

        Raises:
            ConfigError: an unknown key (named, with the closest valid one) or
                an invalid value.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in values if key not in names]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, names, n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(f"unknown config key {', '.join(hints)}; valid keys: {names}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain JSON-ready values."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrialConfig:
        """A copy with some fields changed, validated (unknown keys refused)."""
        return TrialConfig.from_dict({**self.to_dict(), **changes})


def _check(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"config key {key!r} must be {rule}, got {value!r}")

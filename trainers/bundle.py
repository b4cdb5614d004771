"""A trained model and everything needed to use it, in one file.

A *bundle* is a dict of tensors, strings, numbers, lists and dicts only, so
``torch.load(path, weights_only=True)`` reads it without running any pickled
code: the weights, the config that built the model, the class names, the
normalisation statistics, the image size, the EMA and test-time-flip flags,
the test accuracy and where it came from (provenance, plugins).

:class:`Classifier` wraps the model so that it takes float images
``N x 3 x H x W`` in [0, 1] and returns logits, with the normalisation and the
flip averaging inside: what ``trainers.loop.evaluate`` does, as one module
that can be traced or exported.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainers.config import TrialConfig
from trainers.errors import ConfigError, UserError

FORMAT = "tunebench-model"
VERSION = 1
_REQUIRED = ("state_dict", "config", "classes", "mean", "std", "image_size", "ema", "tta_flip",
             "seed", "test_acc", "provenance", "plugins")
_REMAKE = "re-run studies/final.py to write a model bundle"


def make_bundle(model: nn.Module, config: TrialConfig, classes: Sequence[str], mean: Sequence[float],
                std: Sequence[float], *, seed: int, test_acc: float | None,
                provenance: dict[str, Any], plugins: Sequence[str]) -> dict[str, Any]:
    """The bundle of a trained model, ready for ``torch.save``.

    Args:
        model: the trained model (the EMA copy when ``config.ema_decay`` is set).
        config: the config it was trained with.
        classes: class names, in label order.
        mean: per-channel mean of the training images in [0, 1].
        std: per-channel standard deviation, likewise.
        seed: the training seed.
        test_acc: accuracy on the test split, if measured.
        provenance: a JSON-ready record of code, libraries and machine.
        plugins: the ``--plugin`` files or modules that registered the model;
            files are stored as absolute paths.
    """
    from trainers.plugins import is_file_spec

    _check_plain(provenance, "provenance")
    return {
        "format": FORMAT,
        "version": VERSION,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "config": config.to_dict(),
        "classes": [str(c) for c in classes],
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "image_size": int(config.image_size),
        "ema": bool(config.ema_decay),
        "tta_flip": bool(config.tta_flip),
        "seed": int(seed),
        "test_acc": None if test_acc is None else float(test_acc),
        "provenance": dict(provenance),
        "plugins": [str(Path(p).expanduser().resolve()) if is_file_spec(p) else p for p in plugins],
    }


def _check_plain(value: Any, where: str) -> None:
    """Refuses what ``torch.load(weights_only=True)`` would refuse later: fail when writing, not reading."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, where)
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not (value is None or isinstance(value, str | int | float | bool | torch.Tensor)):
        raise TypeError(f"{where} holds a {type(value).__name__}; a bundle holds only tensors, str, "
                        "int, float, bool, None, lists and dicts")


class Classifier(nn.Module):
    """Float images ``N x 3 x H x W`` in [0, 1] -> logits, in eval mode.

    Normalises with the training statistics, and with ``tta_flip`` averages the
    logits of each image and its mirror, as ``trainers.loop.evaluate`` does
    (in float32: no autocast, so it runs the same on any device).
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], *,
                 tta_flip: bool = False, channels_last: bool = False) -> None:
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last) if channels_last else model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.tta_flip = tta_flip
        self.channels_last = channels_last
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.model(x).float()
        if self.tta_flip:
            out = (out + self.model(x.flip(3)).float()) / 2
        return out


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A loaded bundle (see :func:`make_bundle` for the fields)."""

    path: Path
    config: TrialConfig
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    ema: bool
    tta_flip: bool
    seed: int
    test_acc: float | None
    provenance: dict[str, Any]
    plugins: tuple[str, ...]
    state_dict: dict[str, torch.Tensor] = dataclasses.field(repr=False)

    def classifier(self, device: torch.device | str = "cpu") -> Classifier:
        """The model with its weights, wrapped as a :class:`Classifier`, on ``device``.

        Raises:
            UserError: the weights do not fit the model the config builds.
        """
        from trainers.models import create_model

        c = self.config
        model = create_model(c.model, len(self.classes), depth=c.depth, width=c.width,
                             drop_path=c.drop_path, image_size=c.image_size)
        result = model.load_state_dict(self.state_dict, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise UserError(
                f"{str(self.path)!r}: the weights do not fit model {c.model!r} as registered now "
                f"(missing {_few(result.missing_keys)}; unexpected {_few(result.unexpected_keys)}); "
                "was the plugin that defines it changed? Pass the one it was trained with")
        return Classifier(model, self.mean, self.std, tta_flip=self.tta_flip,
                          channels_last=c.channels_last).to(device)


def _few(names: Sequence[str]) -> str:
    if not names:
        return "none"
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def load_bundle(path: str | Path) -> Bundle:
    """Reads a bundle with ``torch.load(weights_only=True)``, on the CPU.

    Raises:
        UserError: no such file; a file that is not a bundle (a bare state_dict
            from an older final.py, a corrupt or foreign file, a newer format);
            or a model name not registered in this process (the plugins the
            bundle was made with are named).
    """
    path = Path(path)
    shown = repr(str(path))
    if not path.is_file():
        raise UserError(f"no model file {shown}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):  # garbage read as a pickle
            raise UserError(f"{shown} is not a tunebench model bundle: it is corrupt, truncated or not "
                            "a torch.save file; pass a model_seed*.pt written by studies/final.py") from None
        # A pickle of other Python objects: never run here.
        raise UserError(f"{shown} is not a tunebench model bundle: it holds Python objects beyond "
                        "tensors and plain data, which are not loaded (weights_only=True); "
                        "pass a model_seed*.pt written by studies/final.py") from None
    except Exception as err:  # torch's messages for these run to several lines
        raise UserError(f"{shown} is not a tunebench model bundle: it is corrupt, truncated or not a "
                        f"torch.save file ({type(err).__name__}); "
                        "pass a model_seed*.pt written by studies/final.py") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        if isinstance(blob, dict) and blob and all(isinstance(v, torch.Tensor) for v in blob.values()):
            raise UserError(f"{shown} holds bare weights (a checkpoint from an older studies/final.py) "
                            f"without the config, classes and normalisation to use them; {_REMAKE}")
        raise UserError(f"{shown} is not a tunebench model bundle (no format tag {FORMAT!r}); "
                        "pass a model_seed*.pt written by studies/final.py")
    version = blob.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise UserError(f"{shown} is bundle version {version!r}, newer than this code reads "
                        f"(up to {VERSION}); update tunebench")
    missing = [key for key in _REQUIRED if key not in blob]
    if missing:
        raise UserError(f"{shown} is an incomplete model bundle (missing {', '.join(missing)}); {_REMAKE}")
    return _from_blob(path, blob)


def _from_blob(path: Path, blob: dict[str, Any]) -> Bundle:
    from trainers.models import list_models

    shown = repr(str(path))
    plugins = tuple(blob["plugins"])
    config = blob["config"]
    name = config.get("model") if isinstance(config, dict) else None
    if not isinstance(name, str):
        raise UserError(f"{shown} has no model name in its config; {_REMAKE}")
    if name not in list_models():
        if plugins:
            hint = f"it was made with --plugin {' --plugin '.join(plugins)}: pass the same"
        else:
            hint = ("it names no plugin; pass --plugin with the file or module that registers it")
        raise UserError(f"{shown}: model {name!r} is not registered (built-in models: "
                        f"{', '.join(list_models())}); {hint}")
    try:
        config = TrialConfig.from_dict(config)
    except ConfigError as err:
        raise UserError(f"{shown}: its config is not valid here ({err})") from None
    classes, mean, std = blob["classes"], blob["mean"], blob["std"]
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)
            and len(mean) == len(std) == 3
            and isinstance(blob["state_dict"], dict)):
        raise UserError(f"{shown} is a malformed model bundle (classes, mean/std or weights); {_REMAKE}")
    return Bundle(path=path, config=config, classes=tuple(classes),
                  mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
                  image_size=int(blob["image_size"]), ema=bool(blob["ema"]),
                  tta_flip=bool(blob["tta_flip"]), seed=int(blob["seed"]),
                  test_acc=blob["test_acc"], provenance=dict(blob["provenance"]), plugins=plugins,
                  state_dict=blob["state_dict"])


# ---------------------------------------------------------------- prediction


@torch.no_grad()
def predict(bundle: Bundle, paths: Iterable[str | Path], *, top: int = 1, batch_size: int = 64,
            device: torch.device | str = "cpu") -> Iterator[tuple[Path, list[tuple[str, float]]]]:
    """The ``top`` most probable classes of each image file, a batch at a time.

    Images are decoded as the dataset loaders decode them
    (``trainers.data.load_image`` at the bundle's image size).

    Yields:
        ``(path, [(class, probability), ...])`` per image, in the given order,
        most probable first.

    Raises:
        DataError: an image cannot be decoded (it is named).
    """
    from trainers.data import load_image

    classifier = bundle.classifier(device)
    top = min(top, len(bundle.classes))
    paths = [Path(p) for p in paths]
    # Decoding releases the GIL, so threads decode a batch in parallel.
    with ThreadPoolExecutor(max_workers=min(8, batch_size)) as pool:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            images = list(pool.map(lambda p: load_image(p, bundle.image_size), chunk))
            x = torch.stack(images).to(device).float().div_(255)
            probs = classifier(x).softmax(1)
            values, indices = probs.topk(top, dim=1)
            for path, vs, ks in zip(chunk, values.tolist(), indices.tolist(), strict=True):
                yield path, [(bundle.classes[k], v) for v, k in zip(vs, ks, strict=True)]

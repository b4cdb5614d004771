"""Search spaces, one module per space, found by name.

A space is a define-by-run function ``space(trial, limits) -> dict`` that calls
``trial.suggest_*`` and returns the trial's config keys as constants: no data,
no model, no compute. Parameter names are Optuna's (they may be prefixed per
architecture, e.g. ``vgg_depth``); the returned keys are TrialConfig fields.
``limits`` carries the preset's caps (which depths and widths fit the budget).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainers.errors import UserError


class UnknownSpaceError(UserError, KeyError):
    """A space name that no module in search_spaces/ defines."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


@dataclasses.dataclass(frozen=True)
class SpaceLimits:
    """Caps a preset puts on a space, so a CPU study samples what it can afford."""

    depths: tuple[int, ...] = (10, 18, 34)
    widths: tuple[int, ...] = (16, 32, 64, 96, 128)
    max_epochs: int = 30
    models: tuple[str, ...] = ()  # the families a space may choose from; () = every registered one
    max_aug_strength: float = 1.0  # the augmentation a trial's budget can use (see aug_cap)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as a study records its choices."""
        return {f.name: list(v) if isinstance(v, tuple) else v
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> SpaceLimits:
        """The limits a study recorded; unknown keys are left out, lists become tuples."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in names})


def aug_cap(epochs: int) -> float:
    """The strongest augmentation worth sampling for trials of ``epochs`` epochs.

    Short trainings want weak augmentation: in the recorded 6-epoch random
    search (benchmarks/results/strategies-quick.db) augmentation strength had
    rank correlation -0.90 with accuracy and every top-10 trial had strength at
    most 0.25; the A/B in benchmarks/RESULTS.md measures the cap. 0.05 per epoch
    (6 epochs: 0.3, the reference recipes' 0.5 from 10 epochs, everything from
    20), so a longer study searches the strong policies the literature uses.
    """
    return min(1.0, round(0.05 * max(1, epochs), 2))


Space = Callable[[Any, SpaceLimits], dict[str, Any]]


def list_spaces() -> list[str]:
    """Names of all spaces (the modules of this package), sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def is_builtin(spec: str) -> bool:
    """A bare name of this package's spaces, rather than a file or ``module:function``."""
    return ":" not in spec and not spec.endswith(".py") and "/" not in spec and "\\" not in spec


def get_space(spec: str) -> Space:
    """The define-by-run function of a space: a built-in name, ``PATH.py`` (its
    ``space`` function), ``PATH.py:function`` or ``package.module:function``.

    Raises:
        UnknownSpaceError: no such built-in space; the message lists the known ones.
        UserError: the file or module cannot be imported or has no such function.
    """
    if not is_builtin(spec):
        from trainers.plugins import load_function

        return load_function(spec, "space", "--space")
    if spec not in list_spaces():
        raise UnknownSpaceError(f"unknown search space {spec!r}; known spaces: {', '.join(list_spaces())}; "
                                "or pass PATH.py defining space(trial, limits)")
    return importlib.import_module(f"{__name__}.{spec}").space


def get_starts(spec: str, limits: SpaceLimits) -> list[dict[str, Any]]:
    """A built-in space's known-good parameters for ``limits`` (its optional
    ``starts(limits)``), tried before anything is sampled; [] for other spaces
    (a user's own known-good configs go in ``--enqueue``)."""
    if not is_builtin(spec) or spec not in list_spaces():
        return []
    starts = getattr(importlib.import_module(f"{__name__}.{spec}"), "starts", None)
    return [dict(s) for s in starts(limits)] if starts else []


def space_id(spec: str) -> str:
    """What a study records as its space: a built-in name, or the file's absolute path
    (with ``:function``), so the same file continues the same study from any folder."""
    if is_builtin(spec) or not spec.split(":")[0].endswith(".py") and "/" not in spec:
        return spec
    target, sep, attr = spec.rpartition(":") if ":" in spec[2:] else (spec, "", "")
    return str(Path(target).expanduser().resolve()) + (f":{attr}" if sep else "")


def space_label(spec: str) -> str:
    """A short name for study names: ``resnet_cifar``, ``my_space`` (from
    ``~/my_space.py``), ``my_space.wide`` (``my_space.py:wide``), ``pkg.mod.fn``."""
    if is_builtin(spec):
        return spec
    target, sep, attr = spec.rpartition(":") if ":" in spec[2:] else (spec, "", "")
    base = Path(target).stem if target.endswith(".py") or "/" in target else target
    label = f"{base}.{attr}" if sep and attr != "space" else base
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", label).lstrip("._-") or "space"

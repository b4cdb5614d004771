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
from collections.abc import Callable
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as a study records its choices."""
        return {f.name: list(v) if isinstance(v, tuple) else v
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> SpaceLimits:
        """The limits a study recorded; unknown keys are left out, lists become tuples."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in names})


Space = Callable[[Any, SpaceLimits], dict[str, Any]]


def list_spaces() -> list[str]:
    """Names of all spaces (the modules of this package), sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get_space(name: str) -> Space:
    """The define-by-run function of a space.

    Raises:
        UnknownSpaceError: no such space; the message lists the known ones.
    """
    if name not in list_spaces():
        raise UnknownSpaceError(f"unknown search space {name!r}; known spaces: {', '.join(list_spaces())}")
    return importlib.import_module(f"{__name__}.{name}").space

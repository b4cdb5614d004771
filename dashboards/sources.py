"""Opening what the dashboards read: Optuna storages, with errors a user can act on."""

from __future__ import annotations

from pathlib import Path

import optuna
from sqlalchemy.exc import SQLAlchemyError

from studies.record import redact_url, scrub

__all__ = ["DEFAULT_STORAGE", "UserError", "open_storage", "open_study", "study_names"]

DEFAULT_STORAGE = "sqlite:///results/optuna.db"


class UserError(Exception):
    """A mistake the user can fix (storage URL, study name, file path)."""


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Opens an existing RDB storage; a missing sqlite file is an error, not created."""
    sqlite_file = _sqlite_file(url)
    # Optuna would create a missing sqlite file, and an empty study list with it.
    if sqlite_file is not None and not sqlite_file.is_file():
        raise UserError(f"storage file not found: {sqlite_file} (from --storage {redact_url(url)})")
    try:
        return optuna.storages.RDBStorage(url)
    except (ImportError, RuntimeError, ValueError, SQLAlchemyError) as error:
        raise UserError(f"cannot open storage {redact_url(url)}: {scrub(_first_line(error), url)}") from None


def study_names(storage: optuna.storages.RDBStorage, url: str) -> list[str]:
    """The names of the studies in a storage."""
    try:
        return optuna.get_all_study_names(storage)
    except (RuntimeError, ValueError, SQLAlchemyError) as error:
        raise UserError(f"cannot read storage {redact_url(url)}: {scrub(_first_line(error), url)}") from None


def open_study(name: str, url: str) -> optuna.Study:
    """Loads a study, or raises :class:`UserError` naming the studies that do exist."""
    storage = open_storage(url)
    names = study_names(storage, url)
    if name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise UserError(f"study {name!r} not found in {redact_url(url)}; studies there: {known}")
    return optuna.load_study(study_name=name, storage=storage)


def _sqlite_file(url: str) -> Path | None:
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return None
    path = url.removeprefix(prefix).split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__

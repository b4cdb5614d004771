"""What the entry points share: one-line errors, presets, data and storage options."""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from studies.presets import PRESETS
from trainers.errors import UserError

DEFAULT_RESULTS = Path("results")
STORAGE_ENV = "TUNEBENCH_STORAGE"  # a storage URL with a password stays out of argv and shell history


def default_storage(results: Path) -> str:
    return f"sqlite:///{results / 'optuna.db'}"


def storage_url(args: argparse.Namespace) -> str:
    """``--storage``, else ``$TUNEBENCH_STORAGE``, else SQLite under ``--results``."""
    return args.storage or os.environ.get(STORAGE_ENV) or default_storage(args.results)


def study_name(text: str) -> str:
    """A study name, which also names folders under ``--results``: no separators, no ``..``.

    Raises:
        UserError: any other character, a leading dot or dash, or over 128 characters.
    """
    from studies.record import check_study_name

    try:
        return check_study_name(text)
    except ValueError as err:
        raise UserError(f"--study: {err}") from None


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


SEED_LIMIT = 2**32  # numpy's and Optuna's samplers take seeds in [0, 2**32)


def seed(text: str) -> int:
    """A sampler seed: a whole number in [0, 2**32)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**32), got {value}")
    return value


def machine_cpus() -> int:
    """The CPUs this process may use, as Ray counts them (affinity, then a cgroup quota)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def writable_folder(path: Path, option: str) -> Path:
    """Creates ``path`` if needed and checks a file can be written in it.

    Raises:
        UserError: it is a file, or cannot be created or written.
    """
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {str(path)!r} is a file; pass a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as err:
        raise UserError(f"{option} {str(path)!r} is not writable ({err.strerror}); "
                        "pass a folder you can write") from None
    return path


def fraction(text: str) -> float:
    value = non_negative_float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--space", default="resnet_cifar", help="search space name (default: resnet_cifar)")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="budget; default: full when a GPU is visible, else quick")
    parser.add_argument("--data", help="dataset: a cifar-10-batches-py folder, an ImageFolder with "
                        "train/ and test/, or an archive of either; default: download CIFAR-10")
    parser.add_argument("--cache-dir", help="where decoded tensors are cached (default ~/.cache/tunebench)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                        help="folder for the storage, reports and Ray files (default: results)")
    parser.add_argument("--storage", help=f"Optuna RDB URL (default: ${STORAGE_ENV} if set, else "
                        "sqlite:///RESULTS/optuna.db); a URL with a password is better given "
                        f"in ${STORAGE_ENV}, out of the process list")
    parser.add_argument("--study", help="study name (default: SPACE-PRESET)")
    parser.add_argument("--epochs", type=positive_int, help="override the preset's epochs")
    parser.add_argument("--data-fraction", type=fraction, help="override the preset's share of train")


def pick_preset(name: str | None) -> tuple[str, str]:
    """The preset's name, and why it was chosen."""
    if name:
        return name, "as asked"
    import torch

    if torch.cuda.is_available():
        return "full", f"a GPU is visible: {torch.cuda.get_device_name(0)}"
    return "quick", "no GPU visible; pass --preset full for the GPU budget"


def main_wrapper(main: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """Turns a user's mistake into one line on stderr and exit status 2."""

    def wrapped(argv: Sequence[str] | None = None) -> int:
        try:
            return main(argv)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: finished trials are kept in the storage, the open ones are FAIL "
                  "(interrupted); re-run the same command to continue", file=sys.stderr)
            return 130

    return wrapped

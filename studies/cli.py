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


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
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


def add_plugin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", action="append", default=[], metavar="PATH.py|MODULE",
                        help="import this file or module first, e.g. one that calls "
                        "trainers.models.register_model (repeatable; Ray workers import it too)")


def image_size(text: str) -> int:
    value = positive_int(text)
    if not 28 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"must be in [28, 1024], got {value}")
    return value


def add_common(parser: argparse.ArgumentParser,
               preset_help: str = "budget; default: full when a GPU is visible, else quick") -> None:
    parser.add_argument("--space", default="resnet_cifar",
                        help="search space: a built-in name (default: resnet_cifar), PATH.py defining "
                        "space(trial, limits), PATH.py:function or package.module:function")
    parser.add_argument("--preset", choices=sorted(PRESETS), help=preset_help)
    parser.add_argument("--data", help="dataset: a cifar-10-batches-py folder, an ImageFolder with "
                        "train/, test/ and optionally val/, a CSV manifest (path,label[,split]), or an "
                        "archive of a folder; default: download CIFAR-10")
    parser.add_argument("--cache-dir", help="where decoded tensors are cached (default ~/.cache/tunebench)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                        help="folder for the storage, reports and Ray files (default: results)")
    parser.add_argument("--storage", help=f"Optuna RDB URL (default: ${STORAGE_ENV} if set, else "
                        "sqlite:///RESULTS/optuna.db); a URL with a password is better given "
                        f"in ${STORAGE_ENV}, out of the process list")
    parser.add_argument("--study", help="study name (default: SPACE-PRESET)")
    parser.add_argument("--epochs", type=positive_int, help="override the preset's epochs")
    parser.add_argument("--data-fraction", type=fraction, help="override the preset's share of train")
    parser.add_argument("--image-size", type=image_size,
                        help="side in pixels images are resized to, for training and prediction alike "
                        "(default 32)")
    add_plugin(parser)


def pick_preset(name: str | None) -> tuple[str, str]:
    """The preset's name, and why it was chosen."""
    if name:
        return name, "as asked"
    import torch

    if torch.cuda.is_available():
        return "full", f"a GPU is visible: {torch.cuda.get_device_name(0)}"
    return "quick", "no GPU visible; pass --preset full for the GPU budget"


def quiet_optuna() -> None:
    """Optuna's info logs and experimental warnings off: our commands say what they do themselves
    (set_metric_names and some samplers are "experimental" in Optuna 5)."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def main_wrapper(main: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """Turns a user's mistake into one line on stderr and exit status 2."""

    def wrapped(argv: Sequence[str] | None = None) -> int:
        import signal

        # Ctrl-C (SIGINT) stops a command cleanly even when it was started with SIGINT ignored, as
        # a script's background job or a test runner's child is: Python keeps an inherited SIG_IGN.
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
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


# ---------------------------------------------------------------- options from a file or a call

OPTIONS_FILE = "options.toml"  # each study's fully resolved options, beside its report


def add_options_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--options", type=Path, metavar="FILE.toml",
                        help="read options from a TOML file (keys as the flags without --, e.g. "
                        f"trials = 8); flags given here override it; each study writes its own {OPTIONS_FILE}")


def reword(parser: argparse.ArgumentParser, **helps: str | None) -> None:
    """Rewords the help of shared options (by dest) for a command that uses them its own way;
    None hides one."""
    actions = _actions(parser)
    for dest, text in helps.items():
        actions[dest].help = argparse.SUPPRESS if text is None else text


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions  # noqa: SLF001 - argparse has no public list
            if a.dest not in ("help", "options") and a.option_strings}


def _convert(action: argparse.Action, key: str, value: object, where: str) -> object:
    """One option's value from TOML or a Python call, checked as its flag would be."""
    kind = type(value).__name__
    if action.nargs == 0:  # a flag: store_true
        if not isinstance(value, bool):
            raise UserError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if isinstance(action, argparse._AppendAction):  # noqa: SLF001 - a repeatable flag
        items = [value] if isinstance(value, (str, os.PathLike)) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, (str, os.PathLike)) for v in items):
            raise UserError(f"{where}: {key} must be a list of strings, got {value!r}")
        return [str(v) for v in items]
    if isinstance(value, bool) or not isinstance(value, (str, int, float, os.PathLike)):
        raise UserError(f"{where}: {key} must be a {'number' if action.type not in (None, Path) else 'string'}, "
                        f"got {kind} {value!r}")
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    try:
        converted = action.type(text) if action.type else text
    except (argparse.ArgumentTypeError, ValueError, TypeError) as err:
        raise UserError(f"{where}: {key}: {err}") from None
    if action.choices is not None and converted not in action.choices:
        raise UserError(f"{where}: {key} must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return converted


def options_from(parser: argparse.ArgumentParser, values: dict[str, object], where: str) -> dict[str, object]:
    """Checked option values by dest, from a mapping of flag names (``-`` or ``_``).

    Raises:
        UserError: an unknown key (with the closest valid one) or a value its flag would refuse.
    """
    import difflib

    actions = _actions(parser)
    out = {}
    for key, value in values.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            names = sorted(d.replace("_", "-") for d in actions)
            close = difflib.get_close_matches(str(key).replace("_", "-"), names, n=1)
            raise UserError(f"{where}: unknown option {key!r}"
                            f"{f' (did you mean {close[0]!r}?)' if close else ''}; options: {', '.join(names)}")
        if value is None:
            continue
        out[dest] = _convert(actions[dest], str(key), value, where)
    return out


def read_options_file(path: Path, where: str | None = None) -> dict[str, object]:
    """A TOML file of options; ``where`` names it in errors (default ``--options 'PATH'``)."""
    import tomllib

    where = where or f"--options {str(path)!r}"
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{where} cannot be read: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{where} is not valid TOML: {err}") from None


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args`` with ``--options FILE.toml`` read first: the flags override the file."""
    args = parser.parse_args(argv)
    if getattr(args, "options", None) is None:
        return args
    values = read_options_file(args.options)
    parser.set_defaults(**options_from(parser, values, f"--options {str(args.options)!r}"))
    try:
        return parser.parse_args(argv)
    finally:
        parser.set_defaults(**{dest: action.default for dest, action in _actions(parser).items()})


def from_call(parser: argparse.ArgumentParser, values: dict[str, object], where: str) -> argparse.Namespace:
    """The options of a Python call (``run_study(trials=8)``), checked like the flags."""
    args = parser.parse_args([])
    if values.get("options") is not None:
        for dest, value in options_from(parser, read_options_file(Path(values["options"])),
                                        f"options {str(values['options'])!r}").items():
            setattr(args, dest, value)
    for dest, value in options_from(parser, {k: v for k, v in values.items() if k != "options"}, where).items():
        setattr(args, dest, value)
    return args


def _toml_value(value: object) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(os.fspath(value) if isinstance(value, os.PathLike) else str(value))


def options_toml(values: dict[str, object], header: str) -> str:
    """A TOML file of flag values (``None`` left out), readable by ``--options``."""
    lines = [f"# {line}" for line in header.splitlines()]
    for dest, value in values.items():
        if value is None or value == [] or dest == "options":
            continue
        lines.append(f"{dest.replace('_', '-')} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"

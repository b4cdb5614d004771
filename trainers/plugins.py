"""User code without forking: plugins and spaces from a file or an importable module.

A *plugin* is a Python file (``PATH.py``) or module (``package.module``) that is
imported for its side effects, typically ``trainers.models.register_model``. A
file is imported once per process under a name derived from its absolute
path, so importing it again (a reused Ray worker, a second ``--plugin`` of the
same file) does not register its models twice.

A Ray worker on another machine may not have the file at the same path: the
driver ships the file's text (:func:`plugin_payload`) and the worker imports
that when the path is missing or holds other text (:func:`load_payload`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from trainers.errors import UserError

_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def is_file_spec(spec: str) -> bool:
    """A path (``x.py``, or anything with a separator) rather than a module name."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def _module_name(path: Path) -> str:
    return "tunebench_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]


def _exec_file(name: str, path: Path, source: str | None, what: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"{what}: {str(path)!r} cannot be imported as Python; pass a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: pickle finds its functions by this name
    try:
        if source is None:
            spec.loader.exec_module(module)
        else:  # shipped text: the path does not exist (or differs) here
            exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 - the user's own plugin
    except UserError:
        del sys.modules[name]
        raise
    except Exception as err:  # the user's code: one line that says where
        del sys.modules[name]
        raise UserError(f"{what}: importing {str(path)!r} raised {type(err).__name__}: {err}") from None
    return module


def import_user_module(spec: str, what: str = "--plugin") -> ModuleType:
    """Imports a file (``PATH.py``) or a module (``package.module``) once per process.

    Raises:
        UserError: no such file or module, a malformed name, or the code raised
            while importing (its exception in one line).
    """
    if is_file_spec(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise UserError(f"{what} {spec!r}: no such file")
        path = path.resolve()
        return _exec_file(_module_name(path), path, None, what)
    if not _MODULE.fullmatch(spec):
        raise UserError(f"{what} {spec!r} is neither a .py file nor a module name like package.module")
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as err:
        if err.name and spec.startswith(err.name):
            raise UserError(f"{what} {spec!r}: no module {err.name!r} on the Python path; "
                            "pass a .py file or install the package") from None
        raise UserError(f"{what} {spec!r}: importing it raised ModuleNotFoundError: {err}") from None
    except Exception as err:
        raise UserError(f"{what}: importing {spec!r} raised {type(err).__name__}: {err}") from None


def load_plugins(specs: Iterable[str] | None) -> list[ModuleType]:
    """Imports every plugin, in order (see :func:`import_user_module`)."""
    return [import_user_module(spec) for spec in specs or ()]


def plugin_payload(specs: Sequence[str] | None) -> list[dict[str, Any]]:
    """What a worker needs to import the plugins: each file's absolute path and text.

    Modules travel by name only: they must be importable on every machine.
    """
    payload = []
    for spec in specs or ():
        if is_file_spec(spec):
            path = Path(spec).expanduser().resolve()
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError) as err:
                raise UserError(f"--plugin {spec!r} cannot be read: {err}") from None
            payload.append({"spec": spec, "path": str(path), "source": text})
        else:
            payload.append({"spec": spec, "path": None, "source": None})
    return payload


def load_payload(payload: Sequence[dict[str, Any]]) -> None:
    """Imports shipped plugins in a worker: from the file when it holds the same text, else the text."""
    for item in payload:
        if item["path"] is None:
            import_user_module(item["spec"])
            continue
        path = Path(item["path"])
        try:
            same = path.read_text() == item["source"]
        except (OSError, UnicodeDecodeError):
            same = False
        _exec_file(_module_name(path), path, None if same else item["source"], "--plugin")


def load_function(spec: str, default: str, what: str) -> Any:
    """``PATH.py``, ``PATH.py:function`` or ``package.module:function`` -> the function.

    Raises:
        UserError: the file or module cannot be imported, or has no such callable.
    """
    target, _, attr = spec.rpartition(":") if ":" in spec else (spec, "", default)
    if ":" in spec and len(target) <= 1:  # C:\... on Windows is a path, not a target
        target, attr = spec, default
    module = import_user_module(target, what)
    function = getattr(module, attr, None)
    if not callable(function):
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        raise UserError(f"{what} {spec!r}: {target!r} defines no function {attr!r}"
                        f"{'; it defines: ' + ', '.join(defined) if defined else ''}")
    return function

"""Run one of our own commands (run.py, final.py) as a child process, logged and timed.

The benchmark and the architecture leaderboard run each study in its own
process, so Ray starts and stops cleanly each time and a crash names its log.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from trainers.errors import UserError

__all__ = ["run_child"]


def run_child(command: Sequence[str], log: Path, what: str, env: Mapping[str, str] | None = None) -> float:
    """Runs ``command`` with its output appended to ``log``; returns its wall seconds.

    A storage URL belongs in ``env`` (``TUNEBENCH_STORAGE``), never in the
    command: a password must not show in the process list or the log.

    Raises:
        UserError: the child said ``error: ...`` and exited 2 (the user's mistake,
            passed on as one line naming ``what``).
        RuntimeError: it crashed (any other status): the message names the log.
        KeyboardInterrupt: it was interrupted (the same Ctrl-C reached it; it is
            given a minute to close its trials).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    with log.open("a") as out:
        out.write(f"\n=== {started.isoformat(timespec='seconds')}: {' '.join(command)}\n")
        out.flush()
        t0 = time.perf_counter()
        process = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})})
        try:
            status = process.wait()
        except KeyboardInterrupt:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            raise
        seconds = time.perf_counter() - t0
    if status == 130:
        raise KeyboardInterrupt
    if status != 0:
        lines = log.read_text(errors="replace").splitlines()
        said = next((ln for ln in reversed(lines) if ln.startswith("error: ")), None)
        if status == 2 and said:
            raise UserError(f"{what}: {said.removeprefix('error: ')}")
        raise RuntimeError(f"{what}: exited with status {status}; see {log}")
    return seconds

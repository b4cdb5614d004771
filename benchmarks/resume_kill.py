"""Acceptance run: kill -9 the study driver at several moments, re-run, check nothing is lost.

Each run starts ``studies/run.py`` (smoke preset, ``--trials`` trials) in a fresh
results folder, waits until ``kill_after`` trials have finished (0: a few seconds
after the start, while Ray starts), sends SIGKILL to the driver only (as
``kill -9 PID`` does; Ray's own processes of that session are then killed too,
as a dead driver's are), snapshots the stored study, runs the same command again
and checks, from the Optuna storage:

- every trial that had finished before the kill is unchanged (state, value,
  every intermediate value, every attribute);
- no trial is RUNNING; trials that were running when the driver died are FAIL
  as stale (the re-run finds their driver's process gone), and were re-run;
- exactly ``--trials`` trials finished: none counted twice.

    python benchmarks/resume_kill.py --kills 0,1,2,3,5

It writes resume_kill.json and resume_kill.md (to ``--out``, default
benchmarks/out) and exits 1 if any run lost or duplicated a trial.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
STUDY = "resnet_cifar-smoke"


def finished_in(db: Path) -> int:
    """COMPLETE + PRUNED trials in an SQLite study file, read without Optuna (cheap to poll)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute(
                "select count(*) from trials where state in ('COMPLETE', 'PRUNED')").fetchone()[0]
    except sqlite3.Error:  # tables not created yet
        return 0


def frozen(study) -> dict[int, tuple]:
    """The finished trials, everything a resume must leave alone."""
    from optuna.trial import TrialState

    return {t.number: (t.state, t.value, t.intermediate_values, t.user_attrs) for t in study.trials
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}


@dataclasses.dataclass
class KillRun:
    """What one kill-and-resume run found."""

    kill_after: int
    finished_before_kill: int
    running_at_kill: int
    rerun_exit: int
    rerun_seconds: float
    finished_after: int
    running_after: int
    stale_failed: int
    stale_with_reason: int
    unchanged: bool
    trials_total: int
    requested: int
    rerun_stderr: str = ""  # its last lines, for a failed re-run

    @property
    def ok(self) -> bool:
        return (self.rerun_exit == 0 and self.unchanged and self.running_after == 0
                and self.finished_after == self.requested
                and self.stale_failed == self.stale_with_reason
                and self.trials_total == self.requested + self.stale_failed)


def kill_and_resume(data: str | os.PathLike, folder: Path, kill_after: int, trials: int,
                    extra: list[str] | None = None, timeout: float = 600,
                    storage: str | None = None) -> KillRun:
    """One run: start the study, SIGKILL the driver after ``kill_after`` finished trials, re-run.

    ``storage``: an RDB URL (PostgreSQL, say), given to run.py by environment;
    default SQLite in ``folder``.
    """
    import optuna
    from optuna.trial import TrialState

    from studies import record

    db = folder / "optuna.db"
    cmd = [sys.executable, str(REPO_ROOT / "studies" / "run.py"), "--preset", "smoke", "--data",
           str(data), "--trials", str(trials), "--results", str(folder), *(extra or [])]
    env = {**os.environ, "TUNEBENCH_STORAGE": storage} if storage else None
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, env=env)

    def finished() -> int:
        if storage is None:
            return finished_in(db)
        try:
            study = optuna.load_study(study_name=STUDY, storage=storage)
        except KeyError:
            return 0
        return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)

    try:
        deadline = time.monotonic() + timeout
        while finished() < kill_after and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if kill_after == 0:
            time.sleep(4)
        if proc.poll() is not None:
            raise RuntimeError(f"the study ended (exit {proc.returncode}) before it could be killed")
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, as `kill -9 PID` would
        proc.wait()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # Ray's own processes of that session
        except ProcessLookupError:
            pass
    storage = storage or f"sqlite:///{db}"
    names = optuna.get_all_study_names(storage) if not storage.startswith("sqlite") or db.exists() else []
    killed = optuna.load_study(study_name=STUDY, storage=storage) if STUDY in names else None
    before = frozen(killed) if killed is not None else {}
    running = ([t for t in killed.trials if t.state == TrialState.RUNNING]
               if killed is not None else [])

    t0 = time.monotonic()
    rerun = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                           check=False, env=env)
    seconds = time.monotonic() - t0
    study = optuna.load_study(study_name=STUDY, storage=storage)
    after = frozen(study)
    stale = [t for t in study.trials if record.is_stale(t)]
    return KillRun(
        kill_after=kill_after, finished_before_kill=len(before), running_at_kill=len(running),
        rerun_exit=rerun.returncode, rerun_seconds=seconds, finished_after=len(after),
        running_after=sum(t.state == TrialState.RUNNING for t in study.trials),
        stale_failed=sum(t.state == TrialState.FAIL for t in stale),
        stale_with_reason=sum(record.fail_reason(t) == record.STALE_REASON for t in stale),
        unchanged={n: after.get(n) for n in before} == before,
        trials_total=len(study.trials), requested=trials,
        rerun_stderr=rerun.stderr[-3000:] if rerun.returncode else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="dataset (default: ../shared/data/cifar10-jpeg.tar.gz)")
    p.add_argument("--kills", default="0,1,2,3,5",
                   type=lambda s: [int(k) for k in s.split(",")],
                   help="finished trials before each kill, one run each (0: during start-up)")
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--out", type=Path, default=None, help="folder for the JSON + markdown")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks import _common as C

    data = args.data or C.default_archive()
    if data is None:
        raise SystemExit(f"error: no --data given and no ../shared/data/{C.ARCHIVE_NAME} found")
    runs = []
    for kill_after in args.kills:
        with tempfile.TemporaryDirectory(prefix="resume_kill_") as tmp:
            run = kill_and_resume(data, Path(tmp), kill_after, args.trials,
                                  ["--cache-dir", str(Path(tmp) / "cache")] if args.data else None)
        runs.append(run)
        print(f"kill after {kill_after}: {'ok' if run.ok else 'LOST OR DUPLICATED'} {run}", flush=True)
    record: dict[str, Any] = {
        "benchmark": "resume_kill",
        "command": " ".join(["python", "benchmarks/resume_kill.py", *(argv or sys.argv[1:])]),
        "data": str(data), "trials": args.trials,
        "runs": [{**dataclasses.asdict(r), "ok": r.ok} for r in runs],
        "machine": C.machine(),
    }
    lines = ["## Resume after kill -9 of the driver", "", f"`{record['command']}`  ",
             f"{record['machine']['time']}; smoke preset, {args.trials} trials per study, data {data}.",
             "", ("| killed after (finished trials) | finished at kill | running at kill | re-run exit "
                  "| re-run s | finished after | RUNNING after | stale -> FAIL (with reason) "
                  "| finished trials unchanged | trials stored | ok |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r.kill_after} | {r.finished_before_kill} | {r.running_at_kill} | "
                     f"{r.rerun_exit} | {r.rerun_seconds:.0f} | {r.finished_after} | "
                     f"{r.running_after} | {r.stale_failed} ({r.stale_with_reason}) | "
                     f"{'yes' if r.unchanged else 'NO'} | {r.trials_total} | "
                     f"{'yes' if r.ok else 'NO'} |")
    C.publish(args.out, "resume_kill", record, "\n".join(lines) + "\n")
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

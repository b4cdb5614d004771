"""What ASHA would have spent on a study's own trials: a replay of recorded full curves.

A FIFO study trains every trial to the end, so its storage holds each trial's
whole curve. Replaying them in start order through Ray's asynchronous
successive halving rule (a trial reaching a rung stops when its value is below
the ``1 - 1/rf`` percentile of the values recorded there before it; the first
one always continues) says, for each grace period, how many trial-epochs ASHA
would have spent on the same configurations and when it would have reached the
study's final best. It sets the scheduler apart from the sampler: the same
configurations, another stopping rule. Trials run one after another here; a
real study with parallel slots reaches rungs in a slightly different order.

    python benchmarks/asha_replay.py --storage sqlite:///benchmarks/results/strategies-quick40.db \\
        --study bench-resnet_cifar-quick-random-fifo-s0 --grace 1,2,3
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import positive_ints, publish


@dataclasses.dataclass(frozen=True)
class Replay:
    grace: int
    trial_epochs: int  # what ASHA would have trained in all
    best: float  # the best final value among the trials it let finish
    reached_at: int | None  # trial-epochs when it first held the target (None: never)
    stopped: int  # trials it stopped early


def rungs(grace: int, reduction_factor: int, max_epochs: int) -> list[int]:
    """Ray's milestones below the last epoch: grace, grace*rf, ..."""
    out, r = [], grace
    while r < max_epochs:
        out.append(r)
        r *= reduction_factor
    return out


def replay(curves: Sequence[Sequence[float]], grace: int, reduction_factor: int, target: float) -> Replay:
    """Replays full curves (validation accuracy per epoch, all of one length) in order through ASHA."""
    max_epochs = len(curves[0])
    recorded: dict[int, list[float]] = {m: [] for m in rungs(grace, reduction_factor, max_epochs)}
    spent, best, reached, stopped = 0, float("-inf"), None, 0
    for curve in curves:
        ran = max_epochs
        for milestone, values in recorded.items():
            value = curve[milestone - 1]
            cut = np.nanpercentile(values, (1 - 1 / reduction_factor) * 100) if values else None
            values.append(value)
            if cut is not None and value < cut:
                ran = milestone
                break
        spent += ran
        if ran == max_epochs:
            best = max(best, curve[-1])
        else:
            stopped += 1
        if reached is None and best >= target:
            reached = spent
    return Replay(grace, spent, best, reached, stopped)


def study_curves(storage: str, study_name: str) -> tuple[list[list[float]], int]:
    """The full curves of a study's finished trials, in start order, and its epochs."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise SystemExit(f"error: no study {study_name!r} in that storage; pass --study with one of its names")
    trials = sorted((t for t in study.trials if t.intermediate_values), key=lambda t: t.datetime_start)
    epochs = max(len(t.intermediate_values) for t in trials)
    curves = [[t.intermediate_values[e] for e in sorted(t.intermediate_values)] for t in trials]
    full = [c for c in curves if len(c) == epochs]
    if len(full) < len(curves):
        raise SystemExit(f"error: {len(curves) - len(full)} of the {len(curves)} trials of {study_name!r} stopped early; "
                         "replay a FIFO study, whose trials all ran to the end")
    return full, epochs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--storage", required=True, help="Optuna RDB URL of a FIFO study")
    parser.add_argument("--study", required=True, help="the study's name")
    parser.add_argument("--grace", type=positive_ints, default="1,2,3",
                        help="grace periods to replay (comma-separated)")
    parser.add_argument("--reduction-factor", type=int, default=3, help="at least 2, as in Ray")
    parser.add_argument("--out", type=Path, help="folder for asha_replay.json/.md (default $OUT or benchmarks/out)")
    args = parser.parse_args(argv)
    if args.reduction_factor < 2:  # 1 would never reach the last epoch
        parser.error(f"--reduction-factor {args.reduction_factor}: must be at least 2")
    curves, epochs = study_curves(args.storage, args.study)
    target = max(c[-1] for c in curves)
    results = [replay(curves, g, args.reduction_factor, target) for g in args.grace]
    lines = [f"{args.study}: {len(curves)} trials of {epochs} epochs, {len(curves) * epochs} trial-epochs, "
             f"final best {target * 100:.2f}%", "",
             "| grace | trial-epochs | stopped | best | reached the final best at |", "|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r.grace} | {r.trial_epochs} | {r.stopped} | {r.best * 100:.2f}% | "
                     f"{r.reached_at if r.reached_at is not None else 'never'} |")
    publish(args.out, "asha_replay",
            {"study": args.study, "reduction_factor": args.reduction_factor, "epochs": epochs, "target": target,
             "curves": curves, "replays": [dataclasses.asdict(r) for r in results]},
            "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

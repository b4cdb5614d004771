"""The whole workflow's time to test accuracy: the README's study, then its final run, beside
the reference recipe given the same final-run minutes.

    python benchmarks/workflow.py [--data ../shared/data/cifar10-jpeg.tar.gz] [--seeds 1]

Runs, each as its own process with the README's commands, into a fresh results folder:

1. ``studies/run.py --space resnet_cifar --data D`` (the quick preset on a CPU);
2. ``studies/final.py --study resnet_cifar-quick --data D --seeds S`` (default budget);
3. ``studies/final.py --config torch_reference --data D --seeds S --minutes M`` with M the
   minutes per seed the final run was given (the preset's default unless ``--minutes``).

Records the wall time of each, the study's best validation accuracy, and the test accuracy of
both final runs, as JSON and markdown under ``--out`` (else ``$OUT``, else benchmarks/out/).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO_ROOT, default_archive, machine, publish

from studies.presets import PRESETS  # after _common, which puts the repository on sys.path


def _run(command: list[str], log: Path) -> float:
    print("$ " + " ".join(command), flush=True)
    t0 = time.perf_counter()
    with log.open("a") as out:
        status = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT).returncode
    seconds = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"error: exit {status} after {seconds:.0f} s; see {log}")
    print(f"  {seconds / 60:.1f} min", flush=True)
    return seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="CIFAR-10 (default: ../shared/data/cifar10-jpeg.tar.gz)")
    p.add_argument("--seeds", type=int, default=1, help="seeds of each final run (default 1)")
    p.add_argument("--minutes", type=float, help="final-run minutes per seed (default: the preset's)")
    p.add_argument("--results", type=Path, help="results folder (default: a new temporary one)")
    p.add_argument("--out", type=Path, default=None, help="folder for the JSON + markdown")
    args = p.parse_args(argv)
    data = args.data or default_archive()
    if data is None:
        raise SystemExit("error: no --data given and no ../shared/data/cifar10-jpeg.tar.gz found")
    results = args.results or Path(tempfile.mkdtemp(prefix="tunebench-workflow-"))
    log = results / "workflow.log"
    results.mkdir(parents=True, exist_ok=True)
    py = [sys.executable]
    common = ["--data", str(data), "--results", str(results)]
    minutes = ["--minutes", f"{args.minutes:g}"] if args.minutes else []
    study_s = _run([*py, "studies/run.py", "--space", "resnet_cifar", *common], log)
    final_s = _run([*py, "studies/final.py", "--study", "resnet_cifar-quick", "--seeds", str(args.seeds),
                    *minutes, *common], log)
    final = json.loads((results / "final" / "resnet_cifar-quick" / "metrics.json").read_text())
    given = final["final_budget"].get("minutes") or args.minutes
    ref_s = _run([*py, "studies/final.py", "--config", "torch_reference", "--preset", "quick",
                  "--seeds", str(args.seeds), *(["--minutes", f"{given:g}"] if given else []), *common], log)
    ref = json.loads((results / "final" / "torch_reference-quick" / "metrics.json").read_text())
    record = {
        "data": str(data), "results": str(results), "seeds": args.seeds, "final_minutes_per_seed": given,
        "study_seconds": study_s, "final_seconds": final_s, "workflow_seconds": study_s + final_s,
        "search_val_acc": final.get("val_acc"), "trial": final.get("trial"),
        "final_test_acc": final["test_acc_mean"], "final_config": final["config"],
        "final_epochs": final["config"]["epochs"],
        "final_train_seconds": [r["train_seconds"] for r in final["runs"]],
        "reference_seconds": ref_s, "reference_test_acc": ref["test_acc_mean"],
        "reference_epochs": ref["config"]["epochs"],
        "reference_train_seconds": [r["train_seconds"] for r in ref["runs"]],
        "machine": machine(),
    }
    quick = PRESETS["quick"]
    markdown = "\n".join([
        "| run | wall time | accuracy | epochs |", "|---|---:|---:|---|",
        f"| study (README command, quick preset) | {study_s / 60:.1f} min | best validation "
        f"{record['search_val_acc'] * 100:.2f}% (trial {record['trial']}) | "
        f"{quick.epochs} on {quick.data_fraction:.0%} |",
        f"| final run of its best, {args.seeds} seed(s), default budget | {final_s / 60:.1f} min | test "
        f"{record['final_test_acc'] * 100:.2f}% | {record['final_epochs']} on 100% |",
        f"| **workflow: study + final run** | **{(study_s + final_s) / 60:.1f} min** | **test "
        f"{record['final_test_acc'] * 100:.2f}%** | |",
        f"| torch_reference recipe, same final minutes ({given:g}/seed), no search | {ref_s / 60:.1f} min | "
        f"test {record['reference_test_acc'] * 100:.2f}% | {record['reference_epochs']} on 100% |",
    ])
    publish(args.out, "workflow", record, markdown)
    return record


if __name__ == "__main__":
    main()

"""The final run's budget: minutes per seed turned into epochs, warm-up scaled with it, finished
seeds kept across a kill, a changed budget set aside instead of mixed."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studies.final import final_epochs, scaled_warmup
from trainers.config import TrialConfig

ROOT = Path(__file__).resolve().parents[2]


def final(data, results, *args):
    return [sys.executable, str(ROOT / "studies" / "final.py"), "--config", "torch_reference", "--preset",
            "smoke", "--data", str(data), "--results", str(results), "--cache-dir", str(results / "cache"),
            *map(str, args)]


def test_minutes_become_epochs_at_the_measured_throughput_and_warm_up_keeps_its_share():
    assert final_epochs(6, {"minutes": 10}, images_per_epoch=50_000, images_per_second=1_250) == 15
    assert final_epochs(6, {"minutes": 0.01}, images_per_epoch=50_000, images_per_second=1_250) == 1
    assert final_epochs(6, {"epochs": 4, }, images_per_epoch=50_000, images_per_second=None) == 4
    assert final_epochs(6, {}, images_per_epoch=50_000, images_per_second=None) == 6  # the search's
    base = TrialConfig(epochs=6, warmup_epochs=2.0)
    assert scaled_warmup(base, 15) == pytest.approx(5.0)  # a third of training before and after
    assert scaled_warmup(base, 3) == pytest.approx(1.0)


def test_a_final_run_plans_its_epochs_from_minutes_and_says_so(tiny_cifar, tmp_path):
    proc = subprocess.run(final(tiny_cifar, tmp_path, "--seeds", 1, "--minutes", 0.05),
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "final" / "torch_reference-smoke"
    plan = json.loads((out / "plan.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    # All of train+validation (300 images), whatever share the search used (5% in smoke).
    assert plan["images_per_epoch"] == 300 // 64 * 64 and metrics["config"]["data_fraction"] == 1.0
    rate = plan["probe_images_per_sec"]
    epochs = max(1, math.floor(0.05 * 60 * rate / plan["images_per_epoch"]))
    assert metrics["config"]["epochs"] == epochs == metrics["final_budget"]["epochs"]
    assert metrics["config"]["warmup_epochs"] == pytest.approx(scaled_warmup(
        TrialConfig.from_dict({**metrics["config"], "epochs": plan["search"]["epochs"],
                               "warmup_epochs": TrialConfig.from_dict(plan["config"]).warmup_epochs
                               / epochs * plan["search"]["epochs"]}), epochs))
    line = next(x for x in proc.stdout.splitlines() if x.startswith("plan: "))
    assert f"{epochs} epochs x 256 images" in line and "min per seed" in line
    assert "Ctrl-C keeps finished seeds" in line and "the search ran 2 epochs on 5% of train" in line


@pytest.mark.slow
def test_a_killed_final_run_keeps_its_finished_seed_and_a_new_budget_is_set_aside(tiny_cifar, tmp_path):
    command = final(tiny_cifar, tmp_path, "--seeds", 2, "--epochs", 20)
    out = tmp_path / "final" / "torch_reference-smoke"
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while not (out / "seed0.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # then kill at once: the second seed has begun
    assert proc.poll() is None, "the run ended before the kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = (out / "seed0.json").read_text()
    model = (out / "model_seed0.pt").read_bytes()
    assert not (out / "seed1.json").exists() and not (out / "metrics.json").exists()

    again = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "seeds 0 kept from an earlier run" in again.stdout
    assert "seed 0: test accuracy" not in again.stdout and "seed 1: test accuracy" in again.stdout
    assert (out / "seed0.json").read_text() == first and (out / "model_seed0.pt").read_bytes() == model
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seeds"] == [0, 1] and metrics["runs"][0] == json.loads(first)["run"]

    other = subprocess.run(final(tiny_cifar, tmp_path, "--seeds", 1, "--epochs", 2),
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert other.returncode == 0, other.stderr[-3000:]
    aside = [p for p in out.iterdir() if p.name.startswith("earlier-")]
    assert len(aside) == 1 and (aside[0] / "seed1.json").exists() and (aside[0] / "metrics.json").exists()
    assert json.loads((out / "metrics.json").read_text())["config"]["epochs"] == 2


def _adopt_case(tmp_path, target_seeds):
    """A --top run's folder for trial 7 (planned at 16 epochs, seed 0 done) and the study's final
    folder holding an earlier plan of the same request at 14 epochs with ``target_seeds`` done."""
    from types import SimpleNamespace

    from studies.final import _Candidate, _Runner

    base = TrialConfig(model="resnet", depth=10, width=8, epochs=6)
    runner = _Runner(SimpleNamespace(threads=None), SimpleNamespace(fingerprint=lambda: "data"), None, "s",
                     {"minutes": 12.0}, 1.0, 32)
    key = runner._request(base)  # noqa: SLF001 - the key the runner itself derives
    source, target = tmp_path / "top" / "trial_7", tmp_path / "final"
    for folder, epochs, seeds in ((source, 16, [0]), (target, 14, target_seeds)):
        folder.mkdir(parents=True)
        (folder / "plan.json").write_text(json.dumps({"key": key, "config": base.replace(epochs=epochs).to_dict()}))
        for s in seeds:
            (folder / f"seed{s}.json").write_text(json.dumps({"key": key, "run": {"seed": s, "epochs": epochs}}))
            (folder / f"model_seed{s}.pt").write_bytes(b"weights %d" % epochs)
    return runner, _Candidate(base, 7, 0.6), source, target


def test_adopting_the_top_winner_never_mixes_two_plans_of_one_request(tmp_path, capsys):
    # The earlier final run finished seed 0: it is kept, its plan stays, the --top seed is not copied.
    runner, candidate, source, target = _adopt_case(tmp_path / "a", [0])
    runner.adopt(source, target, candidate, 0)
    assert json.loads((target / "plan.json").read_text())["config"]["epochs"] == 14
    assert (target / "model_seed0.pt").read_bytes() == b"weights 14"
    assert "already holds seeds 0 of a final run" in capsys.readouterr().out
    # It finished nothing: the --top run's plan and seed replace its plan.
    runner, candidate, source, target = _adopt_case(tmp_path / "b", [])
    runner.adopt(source, target, candidate, 0)
    assert json.loads((target / "plan.json").read_text())["config"]["epochs"] == 16
    assert (target / "model_seed0.pt").read_bytes() == b"weights 16"

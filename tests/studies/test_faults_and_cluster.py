"""Faults and scale: a killed trial worker is retried; a 2-node Ray cluster runs one study."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[2]


def study_command(data, results, *extra):
    return [sys.executable, str(ROOT / "studies" / "run.py"), "--preset", "smoke", "--data",
            str(data), "--data-fraction", "1", "--results", str(results),
            "--cache-dir", str(results / "cache"), *map(str, extra)]


def epochs_reported(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("select count(*) from trial_intermediate_values").fetchone()[0]
    except sqlite3.Error:
        return 0


def _parent(pid: int) -> int:
    try:  # the field after the parenthesised command name, which may hold spaces
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def trial_workers(root: int) -> list[int]:
    """PIDs of Ray actor processes running a trial (their title names the trainable) that
    descend from ``root``: the study's own, never another study's on the same machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"ray::ImplicitFunc" not in cmdline:
                continue
            pid = int(entry.name)
            while pid > 1 and pid != root:
                pid = _parent(pid)
            if pid == root:
                pids.append(int(entry.name))
    return pids


def test_a_killed_trial_worker_is_retried_from_its_checkpoint(tiny_cifar, tmp_path):
    db = tmp_path / "optuna.db"
    # Long enough trials that a worker is surely busy when it is killed; FIFO so none stops early.
    proc = subprocess.Popen(study_command(tiny_cifar, tmp_path, "--trials", 2, "--epochs", 40,
                                          "--scheduler", "fifo"),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        workers = trial_workers(proc.pid)
        if epochs_reported(db) >= 2 and workers:  # a checkpoint exists to retry from
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.1)
    assert killed, "no trial worker was found to kill"
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="resnet_cifar-smoke", storage=f"sqlite:///{db}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    retried = [t for t in study.trials if t.user_attrs.get("failures", 0) >= 1]
    assert len(retried) == 1
    # Retried from its checkpoint: every epoch is on the curve, each once.
    assert sorted(retried[0].intermediate_values) == list(range(1, 41))


@pytest.mark.slow
def test_a_two_node_cluster_runs_trials_on_both_nodes(tiny_cifar, tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        # A trial no node can hold would wait forever: refused in one line instead.
        too_big = subprocess.run(study_command(tiny_cifar, tmp_path / "big", "--trials", 1, "--cpus-per-trial", 2,
                                               "--address", cluster.address),
                                 cwd=ROOT, capture_output=True, text=True, timeout=300)
        # Trials long enough (~5 s) that both nodes get one before any slot frees up.
        proc = subprocess.run(study_command(tiny_cifar, tmp_path, "--trials", 4, "--epochs", 30,
                                            "--scheduler", "fifo", "--address", cluster.address),
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        cluster.shutdown()
    assert too_big.returncode == 2, too_big.stderr[-3000:]
    assert too_big.stderr.strip().splitlines() == [
        "error: a trial asks for 2 CPUs and 0 GPUs, but no node of the cluster has that much (at most 1 CPUs, "
        "0 GPUs on one node); lower --cpus-per-trial/--gpus-per-trial"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="resnet_cifar-smoke",
                              storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert len({t.user_attrs["node_id"] for t in study.trials}) == 2


def _can_unshare_mounts() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _can_unshare_mounts(), reason="needs a mount namespace (unshare -m, as root)")
def test_a_results_folder_another_node_cannot_see_is_refused(tiny_cifar, tmp_path):
    """The second node runs in its own mount namespace, where --results is another (empty) folder,
    as on a machine that does not share it: the study is refused before any trial, in one line."""
    from ray.cluster_utils import Cluster

    results, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    results.mkdir()
    elsewhere.mkdir()
    ray_cli = Path(sys.executable).parent / "ray"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    node = None
    try:
        node = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", f'mount --bind "{elsewhere}" "{results}" && exec "{ray_cli}" start '
             f'--address={cluster.address} --num-cpus=1 --block'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        cluster.wait_for_nodes()
        deadline = time.monotonic() + 120
        import ray

        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        try:
            while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        finally:
            ray.shutdown()
        proc = subprocess.run(study_command(tiny_cifar, results, "--trials", 2, "--address", cluster.address),
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
    finally:
        if node is not None:
            os.killpg(node.pid, signal.SIGTERM)
            node.wait(timeout=60)
        cluster.shutdown()
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: --results {results} is not shared by every node")
    assert "1 of 2 cannot see it" in lines[0] and "NFS" in lines[0]
    study = optuna.load_study(study_name="resnet_cifar-smoke", storage=f"sqlite:///{results / 'optuna.db'}")
    assert {t.state for t in study.trials} <= {TrialState.WAITING}  # refused before any trial ran
    assert not list(results.glob("ray/.shared-check-*"))  # the marker is cleaned up

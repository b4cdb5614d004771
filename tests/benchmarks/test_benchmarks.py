"""The benchmark scripts at tiny sizes: they run and write positive, finite numbers.

Speeds and wall times are never asserted; only that every number is there.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_image_folder

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory) -> Path:
    """A 10-class JPEG ImageFolder, like the shared CIFAR-10 archive but tiny."""
    root = tmp_path_factory.mktemp("bench_data")
    return write_image_folder(root, [f"class{i}" for i in range(10)], 16, 4, fmt="jpg")


def _run(script: str, *args: str, tmp_path: Path, timeout: float = 120,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # A private tensor cache, and no inherited $OUT unless the test sets one.
    full_env = {k: v for k, v in os.environ.items() if k != "OUT"}
    full_env.update({"TUNEBENCH_CACHE": str(tmp_path / "cache"), **(env or {})})
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                          capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_augment_throughput_tiny(jpeg_folder, tmp_path):
    _run("augment_throughput.py", "--data", str(jpeg_folder), "--images", "64",
         "--batch-size", "16", "--chunk", "16", "--warmup-batches", "1", "--repeats", "2",
         "--retries", "0", "--out", str(tmp_path), tmp_path=tmp_path)
    record = json.loads((tmp_path / "augment_throughput.json").read_text())
    assert (tmp_path / "augment_throughput.md").read_text().strip()
    names = [r["pipeline"] for r in record["rows"]]
    # ours with 1 and 2 threads and in 2 workers; classic from PIL images in memory and from disk
    assert [n.split(":")[0] for n in names] == ["ours", "ours", "ours", "classic", "classic"]
    assert [r["workers"] for r in record["rows"]] == [0, 0, 2, 2, 2]
    for row in record["rows"]:
        assert row["images"] == 64
        assert _positive(row["images_per_sec"]), row
        assert len(row["runs_images_per_sec"]) == 2
        assert all(_positive(v) for v in row["runs_images_per_sec"])
    assert len(record["ratios"]) == 6 and all(_positive(r["ratio"]) for r in record["ratios"])
    assert record["ours_stages"] and all(_positive(r["ms_per_batch"]) for r in record["ours_stages"])


def test_train_throughput_tiny(jpeg_folder, tmp_path):
    _run("train_throughput.py", "--data", str(jpeg_folder), "--images", "80", "--batch-size", "16",
         "--depth", "10", "--width", "4", "--warmup-steps", "1", "--profile-steps", "2", "--repeats", "1",
         "--retries", "0",
         "--out", str(tmp_path), tmp_path=tmp_path)
    record = json.loads((tmp_path / "train_throughput.json").read_text())
    assert (tmp_path / "train_throughput.md").read_text().strip()
    assert len(record["rows"]) == 3  # ours, classic with 2 workers, classic with 0
    for row in record["rows"]:
        assert row["images"] == 80 and _positive(row["images_per_sec"]), row
        assert math.isfinite(row["train_loss"])
    assert _positive(record["ours_over_classic"])
    profile = record["profile"]
    assert _positive(profile["images_per_sec"])
    assert all(_positive(p["ms_per_step"]) for p in profile["phases"])
    assert profile["top_ops"] and all(_positive(o["self_ms_per_step"]) for o in profile["top_ops"])


def test_gpu_check_skips_sections_the_budget_cannot_fit(tmp_path):
    _run("gpu_check.py", "--smoke", "--synthetic", "--budget", "1", tmp_path=tmp_path,
         env={"OUT": str(tmp_path)})
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    assert {s["status"] for s in record["sections"].values()} == {"skipped"}
    assert (tmp_path / "gpu_check.md").exists()


# The GPU machine has torch and torchvision but no Ray, Optuna or pandas: gpu_check and
# everything it imports from trainers/ must do without them. A sitecustomize on
# PYTHONPATH makes them missing in every process the run starts.
_NO_STUDY_LIBRARIES = """
import sys
from importlib.machinery import PathFinder


class _Without:
    # As if not installed: find_spec says None (torch probes optional modules with it).
    NAMES = {"ray", "optuna", "optuna_dashboard", "pandas", "plotly", "scipy", "tensorboardX"}

    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.NAMES:
            return None
        return self.inner.find_spec(name, path, target)

    def find_distributions(self, *args, **kwargs):  # importlib.metadata.version() asks here
        found = self.inner.find_distributions(*args, **kwargs)
        return (d for d in found if d.metadata["Name"] not in self.NAMES)

    def invalidate_caches(self):
        self.inner.invalidate_caches()


sys.meta_path[:] = [_Without(f) if f is PathFinder else f for f in sys.meta_path]
"""


def _torch_only_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "torch_only"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_NO_STUDY_LIBRARIES)
    return {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


def test_gpu_check_needs_only_torch_and_torchvision(tmp_path):
    modules = ["benchmarks.gpu_check", "trainers.loop", "trainers.data", "trainers.models",
               "trainers.config", "trainers.augment", "trainers.metrics"]
    code = ("import importlib, sys\n"
            f"for name in {modules!r}: importlib.import_module(name)\n"
            "from benchmarks import _common as C\n"
            "versions = C.machine()['versions']\n"
            "assert versions['torch'] and versions['ray'] is None, versions\n"
            "bad = sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'optuna', 'pandas'})\n"
            "assert not bad, bad\n")
    env = {**os.environ, **_torch_only_env(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hidden = subprocess.run([sys.executable, "-c", "import ray"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=60, check=False)
    assert hidden.returncode != 0 and "No module named 'ray'" in hidden.stderr  # the check works


def test_gpu_check_without_real_data_fails_at_once_in_one_line(tmp_path):
    # (Where no archive is found at all: the next test, in process.)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke",
                           "--data", str(tmp_path / "missing.tar.gz"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
                          env={k: v for k, v in os.environ.items() if k != "OUT"})
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"gpu_check: error: --data {tmp_path / 'missing.tar.gz'}: no such file or folder"]
    assert not (tmp_path / "out").exists()  # nothing ran


def test_gpu_check_looks_for_the_archive_in_the_checkout_then_beside_it(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT))
    from benchmarks import _common as C
    from benchmarks import gpu_check

    args = gpu_check.parse_args(["--smoke"])
    checkout, shared = tmp_path / "data" / C.ARCHIVE_NAME, tmp_path / "shared" / C.ARCHIVE_NAME
    monkeypatch.setattr(gpu_check, "CHECKOUT_ARCHIVE", checkout)
    monkeypatch.setattr(C, "default_archive", lambda: shared if shared.exists() else None)
    with pytest.raises(gpu_check._NoData, match="time_to_93 needs the real CIFAR-10.*--synthetic"):
        gpu_check.find_data(args)
    assert gpu_check.find_data(gpu_check.parse_args(["--smoke", "--synthetic"])) is None
    assert gpu_check.find_data(gpu_check.parse_args(["--smoke", "--sections", "resnet18"])) is None
    shared.parent.mkdir()
    shared.write_bytes(b"")
    assert gpu_check.find_data(args) == shared
    checkout.parent.mkdir()
    checkout.write_bytes(b"")
    assert gpu_check.find_data(args) == checkout  # the carried copy first


def test_gpu_check_synthetic_skips_time_to_accuracy_and_says_so(tmp_path):
    _run("gpu_check.py", "--smoke", "--synthetic", "--sections", "time_to_93", "--out", str(tmp_path),
         tmp_path=tmp_path)
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    t93 = record["sections"]["time_to_93"]
    assert t93["status"] == "skipped" and "--synthetic" in t93["reason"]
    assert "skipped — --synthetic" in (tmp_path / "gpu_check.md").read_text()


ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.mark.slow
@pytest.mark.skipif(not ARCHIVE.exists(), reason="needs ../shared/data/cifar10-jpeg.tar.gz")
def test_gpu_check_smoke_runs_every_section(tmp_path):
    # $OUT names the output folder, as on the GPU machine; the archive is found beside the
    # checkout; Ray, Optuna and pandas are missing, as there. Decoding the archive takes ~30 s.
    # A budget above the default: on a loaded shared machine the decoding alone took 80 s.
    proc = _run("gpu_check.py", "--smoke", "--budget", "600", tmp_path=tmp_path, timeout=700,
                env={"OUT": str(tmp_path), **_torch_only_env(tmp_path)})
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    assert (tmp_path / "gpu_check.md").read_text().strip()
    assert record["data"]["real"] and record["data"]["train"] == 50_000, record["data"]
    assert "[gpu_check] data: random images" not in proc.stdout
    sections = record["sections"]
    assert list(sections) == ["resnet18", "ours_vs_classic", "concurrency", "time_to_93"]
    assert all(s["status"] == "ok" for s in sections.values()), sections
    assert sections["time_to_93"]["data"] == "real CIFAR-10 (JPEG q75 copy)"
    assert sections["time_to_93"]["test_classes"] == 10  # a smoke-sized test split of every class
    r18 = sections["resnet18"]["results"]
    for mode in ("fp32_eager", "bf16_channels_last", "bf16_channels_last_compile"):
        assert _positive(r18[mode]["images_per_sec"]), r18[mode]
    ovc = sections["ours_vs_classic"]["results"]
    assert _positive(ovc["ours"]["images_per_sec"]) and _positive(ovc["classic"]["images_per_sec"])
    assert _positive(ovc["ours_over_classic"])
    conc = sections["concurrency"]["results"]
    assert conc and all(_positive(r["total_images_per_sec"]) and r["finished"] == r["trials"]
                        for r in conc.values())
    t93 = sections["time_to_93"]["results"]
    assert t93["epochs_run"] >= 1 and all(0 <= c["test_acc"] <= 1 for c in t93["curve"])
    assert _positive(record["total_seconds"])


def test_asha_replay_applies_ray_s_rule_to_recorded_curves(tmp_path):
    import optuna

    from benchmarks.asha_replay import Replay, replay, rungs

    assert rungs(1, 3, 6) == [1, 3] and rungs(3, 3, 6) == [3] and rungs(2, 3, 27) == [2, 6, 18]
    curves = [[0.5, 0.6, 0.7], [0.4, 0.5, 0.9], [0.6, 0.7, 0.8]]
    # The first trial continues; the second is below the 67th percentile of [0.5] and stops after
    # epoch 1; the third is above that of [0.5, 0.4] (0.467) and finishes.
    assert replay(curves, 1, 3, target=0.9) == Replay(1, 7, 0.8, None, 1)
    assert replay(curves, 1, 3, target=0.8) == Replay(1, 7, 0.8, 7, 1)
    assert replay(curves, 3, 3, target=0.9) == Replay(3, 9, 0.9, 6, 0)  # no rung below the last epoch

    url = f"sqlite:///{tmp_path / 'fifo.db'}"
    study = optuna.create_study(study_name="fifo", storage=url, direction="maximize")
    for curve in curves:
        study.add_trial(optuna.trial.create_trial(
            value=curve[-1], intermediate_values={e + 1: v for e, v in enumerate(curve)}))
    proc = _run("asha_replay.py", "--storage", url, "--study", "fifo", "--grace", "1,3", "--out",
                str(tmp_path), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "asha_replay.json").read_text())
    assert record["target"] == 0.9 and [r["reached_at"] for r in record["replays"]] == [None, 6]
    assert "| 1 | 7 | 1 | 80.00% | never |" in proc.stdout and "| 3 | 9 | 0 | 90.00% | 6 |" in proc.stdout
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, intermediate_values={1: 0.1}))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "asha_replay.py"), "--storage", url,
                           "--study", "fifo", "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "error: 1 of the 4 trials of 'fifo' stopped early; replay a FIFO study, whose trials all ran to the end")
    for bad, message in ((["--grace", "1,a"], "argument --grace: invalid positive_ints value: '1,a'"),
                         (["--reduction-factor", "1"], "--reduction-factor 1: must be at least 2")):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "asha_replay.py"), "--storage", url,
                               "--study", "fifo", *bad], capture_output=True, text=True, cwd=ROOT, check=False)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(message)


def test_sampler_toy_scores_variants_of_the_product_s_sampler(tmp_path):
    import optuna

    from benchmarks.sampler_toy import OPTIMUM, PerOptimiserNames, reached_at, toy_accuracy

    best = {"model": "resnet", "depth": 18, "optimizer": "sgd", "lr": 0.1, "weight_decay": 3e-4,
            "aug_strength": 0.1, "label_smoothing": 0.12, "warmup_epochs": 0.7}
    assert toy_accuracy(best) == pytest.approx(OPTIMUM)
    assert toy_accuracy({**best, "lr": 0.01}) == pytest.approx(OPTIMUM - 0.05)  # a decade off: 5 points
    assert reached_at([0.5, 0.7, 0.6, 0.8], 0.7) == 2 and reached_at([0.5], 0.7) is None

    study = optuna.create_study()
    study.enqueue_trial({"optimizer": "sgd"})
    trial = study.ask()
    from search_spaces import get_space
    from studies.presets import PRESETS

    values = get_space("resnet_cifar")(PerOptimiserNames(trial), PRESETS["quick"].limits)
    assert values["lr"] == trial.params["sgd_lr"] and "lr" not in trial.params
    assert trial.distributions["sgd_lr"].low == 0.02

    _run("sampler_toy.py", "--seeds", "2", "--budgets", "6", "--out", str(tmp_path), tmp_path=tmp_path)
    record = json.loads((tmp_path / "sampler_toy.json").read_text())
    assert [r["variant"] for r in record["rows"]] == [
        "tpe", "tpe-per-optimiser-names", "tpe-multivariate", "tpe-startup-3", "random"]
    for row in record["rows"]:
        assert len(row["regrets"]) == 2 and all(0 <= r < 0.2 for r in row["regrets"])
        assert 1 <= row["reached_random_best_median"] <= 7 and 0 <= row["reached_random_best_in_a_third"] <= 1
    assert record["rows"][0]["p_better_than_tpe"] == 0.5  # against itself
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sampler_toy.py"), "--variants", "tpe,bogus"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 2 and "--variants: bogus; known: tpe," in proc.stderr
    for bad, message in ((["--budgets", "1x"], "argument --budgets: invalid positive_ints value: '1x'"),
                         (["--seeds", "0"], "argument --seeds: invalid positive_int value: '0'")):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sampler_toy.py"), *bad],
                              capture_output=True, text=True, cwd=ROOT, check=False)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(message)
        assert "Traceback" not in proc.stderr

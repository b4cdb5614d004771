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


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_section(tmp_path):
    # $OUT names the output folder, as on the GPU machine.
    _run("gpu_check.py", "--smoke", "--synthetic", tmp_path=tmp_path, timeout=300,
         env={"OUT": str(tmp_path)})
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    assert (tmp_path / "gpu_check.md").read_text().strip()
    sections = record["sections"]
    assert list(sections) == ["resnet18", "ours_vs_classic", "concurrency", "time_to_93"]
    assert all(s["status"] == "ok" for s in sections.values()), sections
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

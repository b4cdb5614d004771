"""What the benchmark scripts share: paths, data, the classic PIL pipeline, output files."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # scripts run as `python benchmarks/x.py`, uninstalled too
    sys.path.insert(0, str(REPO_ROOT))

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from trainers.augment import AugmentPolicy
from trainers.data import ImageDataset, load_dataset

ARCHIVE_NAME = "cifar10-jpeg.tar.gz"
# RandAugment magnitudes: torchvision's bins 0..30 are our fraction 0..1 of the maximum.
RANDAUG_BINS = 31
# The AugmentPolicy fields classic_transform knows; any other one set is refused.
_MAPPED_FIELDS = {"flip_p", "translate_pad", "jitter", "erase_p", "randaug_p", "randaug_ops",
                  "randaug_magnitude"}


def add_measurement_args(p) -> None:
    """Options both CPU benchmarks share: re-runs on a busy machine, seed, output."""
    p.add_argument("--max-others", type=float, default=0.1,
                   help="re-run a measurement when other processes used more than this share "
                        "of the CPU during it (the machine is shared)")
    p.add_argument("--retries", type=int, default=3, help="re-runs per measurement, at most")
    p.add_argument("--retry-wait", type=float, default=20, help="seconds before a re-run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="folder for the JSON + markdown")


def positive_int(text: str) -> int:
    """An argparse type: a positive integer (argparse turns the error into one line)."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def positive_ints(text: str) -> list[int]:
    """An argparse type: ``"1,2,3"`` as positive integers."""
    values = [positive_int(v) for v in text.split(",") if v.strip()]
    if not values:
        raise ValueError(text)
    return values


def default_archive() -> Path | None:
    """The shared CIFAR-10 archive beside the repository (``../shared/data``), if present."""
    for root in (REPO_ROOT.parent, REPO_ROOT):
        path = root / "shared" / "data" / ARCHIVE_NAME
        if path.exists():
            return path
    return None


def load(data: str | None) -> ImageDataset:
    """The dataset at ``data`` (default: the shared archive), through the tensor cache."""
    path = data or default_archive()
    if path is None:
        raise SystemExit(f"error: no --data given and no ../shared/data/{ARCHIVE_NAME} found")
    return load_dataset(path)


def image_folder_train_dir(dataset: ImageDataset) -> Path | None:
    """The ``train/`` folder of an ImageFolder source (the unpacked archive), if it is one."""
    folder = Path(dataset.source) / "train"
    return folder if folder.is_dir() else None


def synthetic_dataset(n_train: int, n_test: int, classes: int = 10, size: int = 32,
                      seed: int = 0) -> ImageDataset:
    """Random uint8 images with random labels, for throughput where accuracy is moot."""
    gen = torch.Generator().manual_seed(seed)

    def part(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)
        return x, torch.randint(0, classes, (n,), generator=gen)

    (train_x, train_y), (test_x, test_y) = part(n_train), part(n_test)
    return ImageDataset(train_x, train_y, test_x, test_y,
                        tuple(str(i) for i in range(classes)), "synthetic")


# ---------------------------------------------------------------- the classic pipeline


def classic_transform(policy: AugmentPolicy, mean, std, image_size: int = 32) -> T.Compose:
    """torchvision v1 transforms on PIL images equivalent to ``policy``, then ToTensor + Normalize.

    With the torch_reference policy (pad 4, flip 0.5, jitter 0.2, RandAugment 2 ops at
    0.3, erasing 0.25) this is exactly that recipe: RandomCrop(32, padding=4),
    RandomHorizontalFlip, ColorJitter(0.2, 0.2, 0.2), RandAugment(2, 9), ToTensor,
    Normalize, RandomErasing(p=0.25).
    """
    unmapped = [f.name for f in dataclasses.fields(policy)
                if f.name not in _MAPPED_FIELDS and getattr(policy, f.name)]
    if unmapped:
        raise ValueError(f"classic_transform has no torchvision equivalent for {unmapped}")
    ops: list[Any] = []
    if policy.translate_pad:
        ops.append(T.RandomCrop(image_size, padding=policy.translate_pad))
    if policy.flip_p:
        ops.append(T.RandomHorizontalFlip(policy.flip_p))
    if policy.jitter:
        ops.append(T.ColorJitter(policy.jitter, policy.jitter, policy.jitter))
    if policy.randaug_p and policy.randaug_magnitude:
        magnitude = round(policy.randaug_magnitude * (RANDAUG_BINS - 1))
        randaug = T.RandAugment(policy.randaug_ops, magnitude, num_magnitude_bins=RANDAUG_BINS)
        ops.append(randaug if policy.randaug_p >= 1 else T.RandomApply([randaug], policy.randaug_p))
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    if policy.erase_p:
        ops.append(T.RandomErasing(p=policy.erase_p))
    return T.Compose(ops)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """uint8 ``[N, C, H, W]`` to PIL images held in memory (no JPEG decode per sample)."""
    return [Image.fromarray(img) for img in images.permute(0, 2, 3, 1).contiguous().numpy()]


class PILImages(Dataset):
    """In-memory PIL images and labels, transformed per sample as a classic Dataset does."""

    def __init__(self, images: list[Image.Image], labels: torch.Tensor, transform) -> None:
        self.images, self.labels, self.transform = images, labels.tolist(), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


# ---------------------------------------------------------------- sharing the machine


class OthersCpu:
    """Measures the share of the machine's CPU time that *other* processes used in a block.

    Machine-wide busy time from ``/proc/stat`` minus this process's and its
    joined children's (DataLoader workers) CPU time, over wall time x CPUs.
    ``share`` is None where ``/proc/stat`` is missing.
    """

    share: float | None = None

    def __enter__(self) -> OthersCpu:  # noqa: PYI034 - typing.Self needs Python 3.11
        self._busy, self._own, self._t0 = _busy_seconds(), _own_seconds(), time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        busy = _busy_seconds()
        if busy is None or self._busy is None:
            return
        wall = max(time.monotonic() - self._t0, 1e-9)
        others = (busy - self._busy) - (_own_seconds() - self._own)
        self.share = max(0.0, others) / (wall * (os.cpu_count() or 1))


def _busy_seconds() -> float | None:
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # guest time is in user already


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def quiet_run(measure, max_others: float, retries: int, wait_s: float) -> dict[str, Any]:
    """Runs ``measure()``; runs it again (after ``wait_s``) while others used more than
    ``max_others`` of the CPU, at most ``retries`` more times. The row records the share."""
    for attempt in range(retries + 1):
        with OthersCpu() as watch:
            row = measure()
        row = {**row, "others_cpu_share": watch.share, "attempts": attempt + 1}
        if watch.share is None or watch.share <= max_others or attempt == retries:
            return row
        print(f"[benchmarks] other processes used {watch.share:.0%} of the CPU during "
              f"{row.get('pipeline') or row.get('loop')}; again in {wait_s:.0f}s", flush=True)
        time.sleep(wait_s)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- provenance and output


def machine() -> dict[str, Any]:
    """Provenance of a benchmark result: code, libraries, CPU model, cores, load."""
    from studies.provenance import provenance

    record = provenance()
    record["cpu_model"] = _cpu_model()
    record["cpu_count"] = os.cpu_count()
    try:
        record["loadavg_1_5_15"] = list(os.getloadavg())
    except OSError:
        record["loadavg_1_5_15"] = None
    return record


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def write_outputs(out_dir: str | os.PathLike, name: str, record: dict[str, Any],
                  markdown: str) -> tuple[Path, Path]:
    """Writes ``<name>.json`` and ``<name>.md`` under ``out_dir``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(tmp, json_path)
    md_path.write_text(markdown)
    return json_path, md_path


def median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One pipeline's interleaved runs as one row: the median images/s, every run kept."""
    median = statistics.median(r["images_per_sec"] for r in runs)
    return {**runs[0], "images_per_sec": median, "seconds": runs[0]["images"] / median,
            "runs_images_per_sec": [r["images_per_sec"] for r in runs],
            "runs_others_cpu_share": [r["others_cpu_share"] for r in runs],
            "runs_attempts": [r["attempts"] for r in runs]}


def publish(out: Path | None, name: str, record: dict[str, Any], markdown: str) -> None:
    """Prints the markdown and writes NAME.json + NAME.md to ``out`` (else the default)."""
    print(markdown)
    paths = write_outputs(out or default_out(), name, record, markdown)
    print(f"wrote {paths[0]} and {paths[1]}")


def default_out() -> Path:
    """``$OUT`` when set (the GPU machine's return folder), else ``benchmarks/out`` (ignored by git)."""
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO_ROOT / "benchmarks" / "out"


def fmt_shares(row: dict[str, Any]) -> str:
    """Others' CPU share of each run, with the attempts it took when more than one."""
    parts = []
    for share, attempts in zip(row["runs_others_cpu_share"], row["runs_attempts"]):
        text = "n/a" if share is None else f"{share:.0%}"
        parts.append(text + (f" ({attempts} tries)" if attempts > 1 else ""))
    return ", ".join(parts)


def fmt_rate(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:,.0f}"

"""Hostile and unusual data: each case loads correctly or stops with a DataError naming the problem."""

import io
import multiprocessing
import os
import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import class_images, write_cifar_batches, write_image_folder
from trainers.data import _channel_stats, load_dataset, make_splits
from trainers.errors import DataError


# ---------------------------------------------------------------- pickles


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_cifar_pickle_runs_nothing(tmp_path):
    folder, _, _ = write_cifar_batches(tmp_path / "src")
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({"data": _Exploit(marker), "labels": [0]}, f)
    with pytest.raises(DataError, match=r"cannot read CIFAR batch .*data_batch_3.*names posix\.system"):
        load_dataset(folder, cache_dir=tmp_path / "cache")
    assert not marker.exists()


def test_official_style_batches_still_load(tmp_path):
    # Protocol 2 (as the official Python 2 files) and the default protocol both load.
    folder, x, _ = write_cifar_batches(tmp_path / "src")
    with open(folder / "data_batch_1", "rb") as f:
        batch = pickle.load(f)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    ds = load_dataset(folder, cache_dir=tmp_path / "cache")
    assert torch.equal(ds.train_x, x[:100])


# ---------------------------------------------------------------- the tensor cache


def test_moving_an_image_to_another_class_changes_the_loaded_labels(tmp_path):
    root = write_image_folder(tmp_path / "imgs", ["a", "b"], 3, 1)
    before = load_dataset(root, cache_dir=tmp_path / "cache")
    assert before.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    moved = root / "train" / "b" / "0000.png"
    mtime = moved.stat().st_mtime_ns
    shutil.move(root / "train" / "a" / "0002.png", moved.parent / "0009.png")
    os.utime(moved.parent / "0009.png", ns=(mtime, mtime))  # same count, sizes and newest mtime
    after = load_dataset(root, cache_dir=tmp_path / "cache")
    assert after.train_y.tolist() == [0, 0, 1, 1, 1, 1]


def test_a_read_only_cache_still_loads_and_leaves_nothing(tmp_path):
    if os.geteuid() == 0:  # root writes anywhere: make the cache a path that cannot be created
        blocker = tmp_path / "blocked"
        blocker.mkdir()
        (blocker / "cache").write_text("")  # tensors/ can't be made under a file ...
        cache = blocker / "cache" / "sub"  # ... nor under a path through it
    else:
        cache = tmp_path / "ro"
        cache.mkdir()
        cache.chmod(0o500)
    root = write_image_folder(tmp_path / "imgs", ["a", "b"], 2, 1)
    archive = tmp_path / "data.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(root, arcname="data")
    ds = load_dataset(archive, cache_dir=cache)
    assert len(ds.train_x) == 4
    assert not list(tmp_path.rglob("*.tmp*")) and not list(tmp_path.rglob(".unpacking-*"))


def test_a_cache_dir_that_is_a_file_is_refused(tmp_path):
    root = write_image_folder(tmp_path / "imgs", ["a", "b"], 2, 1)
    (tmp_path / "cachefile").write_text("")
    with pytest.raises(DataError, match="cache folder .*cachefile.* is a file; pass --cache-dir a folder"):
        load_dataset(root, cache_dir=tmp_path / "cachefile")


# ---------------------------------------------------------------- formats


def test_bmp_and_16_bit_png_decode_to_8_bit_rgb(tmp_path):
    root = write_image_folder(tmp_path / "imgs", ["a", "b"], 2, 1)
    pixels = class_images(0, 1, (32, 32), seed=9)[0]  # uint8, 3 x 32 x 32
    hwc = pixels.permute(1, 2, 0).numpy()
    Image.fromarray(hwc).save(root / "train" / "a" / "9000.bmp")
    # A 16-bit grey PNG (mode I;16) whose values are the 8-bit ones times 257.
    grey = (pixels[0].numpy().astype(np.uint16) * 257)
    Image.fromarray(grey).save(root / "train" / "b" / "9001.png")  # Pillow writes it as I;16
    ds = load_dataset(root, cache_dir=tmp_path / "cache")
    assert ds.train_x.dtype == torch.uint8 and ds.train_x.shape == (6, 3, 32, 32)
    labels = ds.train_y.tolist()
    assert torch.equal(ds.train_x[2], pixels)  # a/9000.bmp sorts after a/0000, a/0001
    assert labels[:3] == [0, 0, 0]
    grey8 = ds.train_x[5]
    assert torch.equal(grey8[0], pixels[0]) and torch.equal(grey8[1], pixels[0])


def test_macos_archive_debris_is_skipped(tmp_path):
    root = write_image_folder(tmp_path / "src" / "data", ["a", "b"], 2, 1)
    (root / "train" / "a" / "._0000.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(root.rglob("*")):
            zf.write(path, Path("data") / path.relative_to(root))
        zf.writestr("__MACOSX/data/train/a/._0000.png", b"\x00\x05\x16\x07")
    ds = load_dataset(archive, cache_dir=tmp_path / "cache")
    assert ds.classes == ("a", "b") and len(ds.train_x) == 4


@pytest.mark.parametrize("case, expected", [
    ("empty class", "class folder .*train/b.* holds no images"),
    ("train only", "test/ in .* has other class folders than train/ \\(in one only: c\\)"),
    ("one class", "has one class folder \\(a\\); a classifier needs at least two"),
])
def test_unusable_class_layouts_are_named(tmp_path, case, expected):
    root = write_image_folder(tmp_path / "imgs", ["a"] if case == "one class" else ["a", "b"], 2, 1)
    if case == "empty class":
        for image in (root / "train" / "b").iterdir():
            image.unlink()
    elif case == "train only":
        write_image_folder(tmp_path / "more", ["c"], 2, 0)
        shutil.copytree(tmp_path / "more" / "train" / "c", root / "train" / "c")
    with pytest.raises(DataError, match=expected):
        load_dataset(root, cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------- archives


def _load_in_child(archive: str, cache: str, queue) -> None:
    try:
        queue.put(len(load_dataset(archive, cache_dir=cache).train_x))
    except Exception as err:  # pragma: no cover - reported to the parent
        queue.put(repr(err))


def test_two_processes_unpacking_one_archive_both_succeed(tmp_path):
    root = write_image_folder(tmp_path / "src" / "data", ["a", "b"], 40, 2)
    archive = tmp_path / "data.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(root, arcname="data")
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    children = [context.Process(target=_load_in_child, args=(str(archive), str(tmp_path / "cache"), queue))
                for _ in range(2)]
    for child in children:
        child.start()
    results = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
    assert results == [80, 80]
    assert len(list((tmp_path / "cache" / "extracted").iterdir())) == 1  # one copy kept, no leftovers


def test_an_archive_past_the_size_cap_is_refused(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "src" / "data", ["a", "b"], 2, 1)
    archive = tmp_path / "data.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(root, arcname="data")
    monkeypatch.setenv("TUNEBENCH_MAX_ARCHIVE_GB", "0.000001")  # 1 kB
    with pytest.raises(DataError, match="unpacks to 0.0 GB, over the 1e-06 GB cap"):
        load_dataset(archive, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "extracted").exists()


# ---------------------------------------------------------------- splits


def test_a_val_folder_is_the_validation_split(tmp_path):
    root = write_image_folder(tmp_path / "imgs", ["a", "b"], 5, 2)
    write_image_folder(tmp_path / "v", ["a", "b"], 3, 0)
    shutil.copytree(tmp_path / "v" / "train", root / "val")
    ds = load_dataset(root, cache_dir=tmp_path / "cache")
    assert ds.val_x is not None and len(ds.val_x) == 6
    search = make_splits(ds, val_fraction=0.1)
    assert len(search.train_x) == 10 and torch.equal(search.val_x, ds.val_x)
    final = make_splits(ds, val_fraction=0.0)  # a final run trains on train + val
    assert len(final.train_x) == 16 and len(final.val_x) == 0


def test_channel_statistics_match_a_float64_copy_without_making_one():
    x = torch.randint(0, 256, (3000, 3, 8, 8), dtype=torch.uint8)
    mean, std = _channel_stats(x, chunk=700)
    pixels = x.double() / 255
    assert mean == pytest.approx(pixels.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(pixels.std(dim=(0, 2, 3)).tolist(), abs=1e-9)


def _can_mount_tmpfs() -> bool:
    import subprocess

    try:
        return subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs a mount namespace (unshare -m, as root)")
def test_a_full_cache_folder_still_loads_and_leaves_nothing(tmp_path):
    """The cache is a 64 kB tmpfs (in the child's own mount namespace): the archive cannot be
    unpacked there, nor the tensors saved; loading still works and leaves no temporary file."""
    import subprocess
    import sys

    root = write_image_folder(tmp_path / "src" / "data", ["a", "b"], 20, 2)
    archive = tmp_path / "data.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(root, arcname="data")
    cache = tmp_path / "cache"
    cache.mkdir()
    code = (f"from trainers.data import load_dataset; import os; ds = load_dataset({str(archive)!r}, "
            f"cache_dir={str(cache)!r}); "
            f"print(len(ds.train_x), sorted(f for _, ds_, fs in os.walk({str(cache)!r}) for f in ds_ + fs))")
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o size=64k tmpfs "{cache}" && '
                           f'exec "{sys.executable}" -c "$CODE"'],
                          capture_output=True, text=True, timeout=300, cwd=repo,
                          env={**os.environ, "CODE": code, "PYTHONPATH": str(repo)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    count, _, listing = proc.stdout.strip().partition(" ")
    assert count == "40"
    assert listing == "['extracted', 'tensors']"  # neither the unpacked archive nor the tensors fit

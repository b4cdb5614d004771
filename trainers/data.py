"""Datasets as uint8 tensors in memory: loaded once, cached on disk, split by seed.

Sources (``load_dataset``):
  * ``None``: CIFAR-10 downloaded by torchvision into the cache folder;
  * a ``cifar-10-batches-py`` folder (or a folder holding one), as users get it;
  * an ImageFolder tree with ``train/<class>/*`` and ``test/<class>/*``, any
    classes and image sizes (resized to ``image_size``);
  * a ``.tar.gz`` / ``.tgz`` / ``.tar`` / ``.zip`` archive of either, unpacked once.

Images are decoded once; the tensors are cached under the cache folder keyed by
the source, its files and the options, so no trial ever decodes an image.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from trainers.errors import DataError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
_CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$TUNEBENCH_CACHE`` or ``~/.cache/tunebench``."""
    return Path(os.environ.get("TUNEBENCH_CACHE", Path.home() / ".cache" / "tunebench"))


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """A whole dataset: uint8 images ``[N, C, H, W]`` and int64 labels."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    source: str

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]

    def fingerprint(self) -> str:
        """A digest of the pixels, labels and class names of both splits.

        The dataset's identity by content, not by where it was loaded from: the
        same images unpacked to another folder give the same fingerprint, a
        relabelled image or a renamed class another one.
        """
        digest = hashlib.blake2b(digest_size=16)
        for tensor in (self.train_x, self.train_y, self.test_x, self.test_y):
            digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
            digest.update(memoryview(tensor.contiguous().numpy()).cast("B"))
        digest.update("\0".join(self.classes).encode())
        return f"blake2b:{digest.hexdigest()}"


@dataclasses.dataclass(frozen=True)
class Splits:
    """What a trial trains and evaluates on. ``val_x`` is empty in a final run."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ---------------------------------------------------------------- loading


def load_dataset(
    source: str | os.PathLike | None,
    image_size: int = 32,
    cache_dir: str | os.PathLike | None = None,
    download_url: str = CIFAR10_URL,
    download_md5: str | None = CIFAR10_MD5,
) -> ImageDataset:
    """Loads a dataset from any supported source, through the tensor cache.

    Raises:
        DataError: the source is missing, unrecognised, corrupt (the bad file is
            named) or cannot be downloaded.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = _resolve_source(source, cache, download_url, download_md5)
    kind, folder = _detect_layout(root)
    key = hashlib.sha256(
        repr((_CACHE_VERSION, kind, str(folder.resolve()), image_size, _fingerprint(folder))).encode()
    ).hexdigest()[:16]
    cached = cache / "tensors" / f"{kind}-{key}.pt"
    if cached.exists():
        try:
            blob = torch.load(cached, weights_only=True)
            return ImageDataset(**{**blob, "classes": tuple(blob["classes"]), "source": str(folder)})
        except Exception:
            cached.unlink(missing_ok=True)  # a torn or stale cache file is rebuilt
    if kind == "cifar-pickle":
        parts = _load_cifar_pickles(folder, image_size)
    else:
        parts = _load_image_folder(folder, image_size)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".tmp{os.getpid()}")
    torch.save({**parts, "classes": list(parts["classes"])}, tmp)
    os.replace(tmp, cached)  # atomic: a killed run never leaves half a cache file
    return ImageDataset(**parts, source=str(folder))


def download_cifar10(root: Path, url: str = CIFAR10_URL, md5: str | None = CIFAR10_MD5) -> Path:
    """Downloads and unpacks CIFAR-10 with torchvision; returns the batches folder."""
    from torchvision.datasets.utils import download_and_extract_archive

    target = root / "cifar-10-batches-py"
    if not target.exists():
        try:
            download_and_extract_archive(url, str(root), md5=md5)
        except Exception as err:  # URLError, RuntimeError (md5), OSError ...
            raise DataError(
                f"could not download CIFAR-10 from {url} ({type(err).__name__}: {err}); "
                "pass --data PATH to a local copy (a cifar-10-batches-py folder, "
                "an ImageFolder with train/ and test/, or an archive of either)"
            ) from None
    return target


def _resolve_source(source, cache: Path, url: str, md5: str | None) -> Path:
    if source is None:
        return download_cifar10(cache / "downloads", url, md5)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"data path {str(path)!r} does not exist; pass --data a cifar-10-batches-py "
            "folder, an ImageFolder with train/ and test/, or an archive of either"
        )
    if path.is_file():
        if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
            raise DataError(
                f"data path {str(path)!r} is a file but not an archive {ARCHIVE_SUFFIXES}"
            )
        return _extract(path, cache)
    return path


def _extract(archive: Path, cache: Path) -> Path:
    stat = archive.stat()
    key = hashlib.sha256(repr((str(archive.resolve()), stat.st_size, stat.st_mtime_ns)).encode())
    target = cache / "extracted" / key.hexdigest()[:16]
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent))
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(tmp, filter="data")  # refuses paths outside tmp
        os.replace(tmp, target)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"cannot unpack archive {str(archive)!r}: {err}") from None
    return target


def _detect_layout(root: Path, depth: int = 0) -> tuple[str, Path]:
    if (root / "data_batch_1").exists():
        return "cifar-pickle", root
    if (root / "cifar-10-batches-py" / "data_batch_1").exists():
        return "cifar-pickle", root / "cifar-10-batches-py"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "image-folder", root
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if depth == 0 and len(subdirs) == 1:
        return _detect_layout(subdirs[0], depth + 1)
    raise DataError(
        f"no dataset found in {str(root)!r}: expected a cifar-10-batches-py folder "
        "(data_batch_1 ... test_batch) or an ImageFolder with train/<class>/ and test/<class>/"
    )


def _fingerprint(folder: Path) -> tuple[int, int, int]:
    count = size = newest = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            count, size, newest = count + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return count, size, newest


def _load_cifar_pickles(folder: Path, image_size: int) -> dict:
    def read(name: str) -> dict:
        path = folder / name
        if not path.exists():
            raise DataError(f"CIFAR folder {str(folder)!r} lacks {name}; re-download it")
        try:
            with open(path, "rb") as f:
                # The official format is a pickle; torchvision reads it the same way.
                return pickle.load(f, encoding="latin1")
        except Exception as err:
            raise DataError(f"cannot read CIFAR batch {str(path)!r}: {err}") from None

    def images(batches: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([torch.as_tensor(b["data"], dtype=torch.uint8) for b in batches])
        y = torch.cat([torch.as_tensor(b["labels"], dtype=torch.int64) for b in batches])
        return _resize_batch(x.view(-1, 3, 32, 32), image_size), y

    train_x, train_y = images([read(f"data_batch_{i}") for i in range(1, 6)])
    test_x, test_y = images([read("test_batch")])
    meta = folder / "batches.meta"
    classes = read("batches.meta")["label_names"] if meta.exists() else [str(i) for i in range(10)]
    return dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, classes=tuple(classes))


def _resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x.contiguous()
    out = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True)
    return out.round().clamp(0, 255).to(torch.uint8)


def _list_split(split_dir: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{str(split_dir)!r} has no class folders; expected {split_dir}/<class>/<image>")
    items = []
    for label, name in enumerate(classes):
        for path in sorted((split_dir / name).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                items.append((path, label))
    return classes, items


def _decode(path: Path, size: int) -> torch.Tensor:
    try:
        img = decode_image(str(path), mode=ImageReadMode.RGB)
    except Exception as err:
        raise DataError(f"cannot decode image {str(path)!r} ({err}); remove or replace it") from None
    if img.shape[1:] != (size, size):
        # Shorter side to `size`, then the centre square: keeps the aspect ratio.
        img = TF.center_crop(TF.resize(img, size, antialias=True), [size, size])
    return img


def _load_image_folder(folder: Path, image_size: int) -> dict:
    out = {}
    classes = None
    for split in ("train", "test"):
        split_classes, items = _list_split(folder / split)
        if classes is not None and split_classes != classes:
            raise DataError(
                f"train/ and test/ in {str(folder)!r} have different class folders: "
                f"{classes} vs {split_classes}"
            )
        classes = split_classes
        if not items:
            raise DataError(f"{str(folder / split)!r} holds no images ({sorted(IMAGE_SUFFIXES)})")
        # Decoding releases the GIL, so threads decode in parallel.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            imgs = list(pool.map(lambda item: _decode(item[0], image_size), items, chunksize=256))
        out[f"{split}_x"] = torch.stack(imgs)
        out[f"{split}_y"] = torch.tensor([label for _, label in items], dtype=torch.int64)
    return dict(**out, classes=tuple(classes))


# ---------------------------------------------------------------- splitting


def make_splits(
    dataset: ImageDataset, val_fraction: float, data_fraction: float = 1.0, seed: int = 0
) -> Splits:
    """Carves a stratified, seeded validation split from train, then subsamples train.

    Each class keeps its share in both parts, so a 10% split of CIFAR-10 has
    exactly 500 images per class. The test split is never touched here.
    """
    gen = torch.Generator().manual_seed(seed)
    train_idx, val_idx = [], []
    for label in range(len(dataset.classes)):
        idx = (dataset.train_y == label).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_val = round(len(idx) * val_fraction)
        if val_fraction > 0 and len(idx) > 1:
            n_val = min(max(n_val, 1), len(idx) - 1)
        rest = idx[n_val:]
        n_train = max(1, round(len(rest) * data_fraction)) if len(rest) else 0
        val_idx.append(idx[:n_val])
        train_idx.append(rest[:n_train])
    tr = torch.cat(train_idx).sort().values
    va = torch.cat(val_idx).sort().values
    train_x = dataset.train_x[tr]
    pixels = train_x.to(torch.float64).div_(255)
    mean = pixels.mean(dim=(0, 2, 3))
    std = pixels.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return Splits(
        train_x=train_x,
        train_y=dataset.train_y[tr],
        val_x=dataset.train_x[va],
        val_y=dataset.train_y[va],
        classes=dataset.classes,
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
    )

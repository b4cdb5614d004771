"""Datasets as uint8 tensors in memory: loaded once, cached on disk, split by seed.

Sources (``load_dataset``):
  * ``None``: CIFAR-10 downloaded by torchvision into the cache folder;
  * a ``cifar-10-batches-py`` folder (or a folder holding one), as users get it;
  * an ImageFolder tree with ``train/<class>/*`` and ``test/<class>/*`` (and
    optionally ``val/<class>/*``, the validation split), any classes and image
    sizes (resized to ``image_size``);
  * a ``.tar.gz`` / ``.tgz`` / ``.tar`` / ``.zip`` archive of either, unpacked once;
  * a CSV manifest (``.csv``): rows ``path,label[,split]``, paths relative to the
    CSV's folder, split one of train/val/test. Without a split column a test
    split is carved from it: 1/6 of each class, chosen by a hash of the path (so
    neither the row order nor a seed changes it), and ``ImageDataset.source`` says so.

Images are decoded once; the tensors are cached under the cache folder keyed by
the source, its files and the options, so no trial ever decodes an image.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath, PureWindowsPath
from stat import S_ISREG

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from trainers.errors import DataError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
MANIFEST_SPLITS = ("train", "val", "test")
CARVED_TEST_SHARE = 1 / 6  # CIFAR-10's 10k test images of 60k
_CACHE_VERSION = 2  # 2: keyed on relative paths; optional val/ split


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
    val_x: torch.Tensor | None = None  # a val/ folder beside train/ and test/: the validation split
    val_y: torch.Tensor | None = None

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
        parts = (self.train_x, self.train_y, self.test_x, self.test_y)
        if self.val_x is not None and self.val_y is not None:
            parts += (self.val_x, self.val_y)
        for tensor in parts:
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

    A CSV manifest without a split column gets a carved test split: 1/6 of each
    class with two or more images, picked by a hash of each path, so the same
    rows in any order give the same split. ``source`` then says it was carved.

    Raises:
        DataError: the source is missing, unrecognised, corrupt (the bad file, or
            the manifest's row, is named) or cannot be downloaded.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if cache.exists() and not cache.is_dir():
        raise DataError(f"cache folder {str(cache)!r} is a file; pass --cache-dir a folder")
    with contextlib.ExitStack() as cleanup:
        root = _resolve_source(source, cache, download_url, download_md5, cleanup)
        manifest = None
        if root.is_file():  # _resolve_source passes on no file but a CSV manifest
            kind, folder, manifest = "csv-manifest", root, _read_manifest(root)
            stamp, where = manifest.stamp, manifest.source
        else:
            kind, folder = _detect_layout(root)
            stamp, where = _fingerprint(folder), str(folder)
        key = hashlib.sha256(
            repr((_CACHE_VERSION, kind, str(folder.resolve()), image_size, stamp)).encode()
        ).hexdigest()[:16]
        cached = cache / "tensors" / f"{kind}-{key}.pt"
        if cached.exists():
            try:
                blob = torch.load(cached, weights_only=True)
                return ImageDataset(**{**blob, "classes": tuple(blob["classes"]), "source": where})
            except Exception:
                with contextlib.suppress(OSError):
                    cached.unlink()  # a torn or stale cache file is rebuilt
        if kind == "cifar-pickle":
            parts = _load_cifar_pickles(folder, image_size)
        elif manifest is not None:
            parts = _load_manifest(manifest, image_size)
        else:
            parts = _load_image_folder(folder, image_size)
        _save_cache(cached, {**parts, "classes": list(parts["classes"])})
        return ImageDataset(**parts, source=where)


def _save_cache(path: Path, blob: dict) -> None:
    """Writes the tensor cache atomically, if it can: a read-only or full cache folder
    only costs the next run a decode, and leaves no temporary file behind."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        torch.save(blob, tmp)
        os.replace(tmp, path)  # atomic: a killed run never leaves half a cache file
        tmp = None
    except (OSError, RuntimeError):  # torch.save reports a full disk as RuntimeError
        pass
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()


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
                "an ImageFolder with train/ and test/, an archive of either, "
                "or a CSV manifest of path,label[,split] rows)"
            ) from None
    return target


def _resolve_source(source, cache: Path, url: str, md5: str | None, cleanup: contextlib.ExitStack) -> Path:
    if source is None:
        return download_cifar10(cache / "downloads", url, md5)
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"data path {str(path)!r} does not exist; pass --data a cifar-10-batches-py "
            "folder, an ImageFolder with train/ and test/, an archive of either, "
            "or a CSV manifest of path,label[,split] rows"
        )
    if path.is_file():
        if path.name.lower().endswith(".csv"):
            return path
        if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
            raise DataError(
                f"data path {str(path)!r} is a file but neither an archive "
                f"({', '.join(ARCHIVE_SUFFIXES)}) nor a CSV manifest (.csv)"
            )
        return _extract(path, cache, cleanup)
    return path


def max_archive_bytes() -> int:
    """The most an archive may unpack to: ``$TUNEBENCH_MAX_ARCHIVE_GB`` (default 50) GB."""
    try:
        return int(float(os.environ.get("TUNEBENCH_MAX_ARCHIVE_GB", "50")) * 1e9)
    except ValueError:
        raise DataError("TUNEBENCH_MAX_ARCHIVE_GB must be a number of gigabytes") from None


def _unpacked_size(archive: Path) -> int:
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            return sum(info.file_size for info in zf.infolist())
    with tarfile.open(archive) as tf:
        return sum(member.size for member in tf.getmembers() if member.isfile())


def _unpack(archive: Path, folder: Path) -> None:
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(folder)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(folder, filter="data")  # refuses paths outside the folder


def _extract(archive: Path, cache: Path, cleanup: contextlib.ExitStack) -> Path:
    """Unpacks an archive once into the cache (or, where the cache cannot be written,
    into a temporary folder removed after loading). Two processes unpacking the same
    archive at once both succeed: each unpacks beside the target, the first rename wins."""
    stat = archive.stat()
    key = hashlib.sha256(repr((str(archive.resolve()), stat.st_size, stat.st_mtime_ns)).encode())
    target = cache / "extracted" / key.hexdigest()[:16]
    if target.is_dir():
        return target
    try:
        size = _unpacked_size(archive)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise DataError(f"cannot unpack archive {str(archive)!r}: {err}") from None
    if size > max_archive_bytes():
        raise DataError(f"archive {str(archive)!r} unpacks to {size / 1e9:.1f} GB, over the "
                        f"{max_archive_bytes() / 1e9:g} GB cap; unpack it yourself and pass the folder, "
                        "or raise TUNEBENCH_MAX_ARCHIVE_GB")
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=target.parent))
        _unpack(archive, tmp)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"cannot unpack archive {str(archive)!r}: {err}") from None
    except OSError:  # a read-only or full cache: unpack for this run only, in a temporary folder
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        tmp = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="tunebench-data-")))
        try:
            _unpack(archive, tmp)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
            raise DataError(f"cannot unpack archive {str(archive)!r}: {err}") from None
        return tmp
    try:
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.is_dir():  # not another process's finished copy: a real failure
            raise DataError(f"cannot move the unpacked archive into {str(target)!r}; "
                            "pass --cache-dir a writable folder") from None
    return target


def _detect_layout(root: Path, depth: int = 0) -> tuple[str, Path]:
    if (root / "data_batch_1").exists():
        return "cifar-pickle", root
    if (root / "cifar-10-batches-py" / "data_batch_1").exists():
        return "cifar-pickle", root / "cifar-10-batches-py"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "image-folder", root
    subdirs = [p for p in root.iterdir() if p.is_dir() and _visible(p)]
    if depth == 0 and len(subdirs) == 1:
        return _detect_layout(subdirs[0], depth + 1)
    raise DataError(
        f"no dataset found in {str(root)!r}: expected a cifar-10-batches-py folder "
        "(data_batch_1 ... test_batch) or an ImageFolder with train/<class>/ and test/<class>/; "
        "for another layout, pass --data a CSV manifest of path,label[,split] rows"
    )


def _fingerprint(folder: Path) -> str:
    """A digest of every file's path relative to ``folder``, size and mtime.

    Moving an image to another class folder or renaming a class changes the
    labels, so it changes the key (a count and total size would not).
    """
    digest = hashlib.sha256()
    for dirpath, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            digest.update(f"{os.path.relpath(path, folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# What a CIFAR batch pickle may name: numpy's array reconstruction, and nothing
# that runs code. Lists, dicts, bytes, str and numbers need no global at all.
_PICKLE_GLOBALS = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
     ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts, bytes and str only: a crafted file runs nothing."""

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never does")


def _load_cifar_pickles(folder: Path, image_size: int) -> dict:
    def read(name: str) -> dict:
        path = folder / name
        if not path.exists():
            raise DataError(f"CIFAR folder {str(folder)!r} lacks {name}; re-download it")
        try:
            with open(path, "rb") as f:
                # The official format is a pickle: read with an unpickler that
                # refuses anything but arrays and plain containers.
                batch = _CifarUnpickler(f, encoding="latin1").load()
        except Exception as err:
            raise DataError(f"cannot read CIFAR batch {str(path)!r}: {err}; "
                            "replace it with the official file") from None
        if not isinstance(batch, dict):
            raise DataError(f"CIFAR batch {str(path)!r} is not a dict; replace it with the official file")
        return batch

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


def _visible(path: Path) -> bool:
    """Not a hidden file, nor macOS archive debris (``__MACOSX/``, AppleDouble ``._*`` files)."""
    return not path.name.startswith(".") and path.name != "__MACOSX"


def _list_split(split_dir: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and _visible(p))
    if not classes:
        raise DataError(f"{str(split_dir)!r} has no class folders; expected {split_dir}/<class>/<image>")
    items = []
    for label, name in enumerate(classes):
        found = [path for path in sorted((split_dir / name).iterdir())
                 if _visible(path) and path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES]
        if not found:
            raise DataError(f"class folder {str(split_dir / name)!r} holds no images "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))}); add some or remove the folder")
        items += [(path, label) for path in found]
    return classes, items


def load_image(path: str | os.PathLike, size: int) -> torch.Tensor:
    """One image as the loaders see it: 8-bit RGB ``3 x size x size`` (shorter side
    resized, centre square kept), for prediction on new images.

    Raises:
        DataError: the file cannot be decoded (it is named).
    """
    return _decode(Path(path), size)


def _decode(path: Path, size: int) -> torch.Tensor:
    """Any listed format as 8-bit RGB: torchvision's decoder, else Pillow (BMP, say)."""
    try:
        img = decode_image(str(path), mode=ImageReadMode.RGB)
    except Exception:
        img = _decode_with_pillow(path)
    if img.dtype == torch.uint16:  # a 16-bit PNG: its top byte, rounded, is the 8-bit value
        img = ((img.to(torch.int32) + 128) // 257).clamp(0, 255).to(torch.uint8)
    elif img.dtype != torch.uint8:
        raise DataError(f"image {str(path)!r} decodes to {img.dtype}, not 8 or 16 bits per channel; "
                        "convert it to 8-bit RGB")
    if img.shape[1:] != (size, size):
        # Shorter side to `size`, then the centre square: keeps the aspect ratio.
        img = TF.center_crop(TF.resize(img, size, antialias=True), [size, size])
    return img


def _decode_with_pillow(path: Path) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise DataError(f"cannot decode image {str(path)!r} ({err}); remove or replace it") from None
    data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
    return data.view(rgb.height, rgb.width, 3).permute(2, 0, 1).contiguous()


def _load_image_folder(folder: Path, image_size: int) -> dict:
    out = {}
    classes = None
    splits = ("train", "val", "test") if (folder / "val").is_dir() else ("train", "test")
    for split in splits:
        split_classes, items = _list_split(folder / split)
        if classes is not None and split_classes != classes:
            only = sorted(set(classes) ^ set(split_classes))
            raise DataError(
                f"{split}/ in {str(folder)!r} has other class folders than train/ "
                f"(in one only: {', '.join(only)}); every split needs the same classes"
            )
        classes = split_classes
        if split == "train" and len(classes) < 2:
            raise DataError(f"{str(folder / split)!r} has one class folder ({classes[0]}); "
                            "a classifier needs at least two")
        out[f"{split}_x"] = _decode_all([path for path, _ in items], image_size)
        out[f"{split}_y"] = torch.tensor([label for _, label in items], dtype=torch.int64)
    return dict(**out, classes=tuple(classes))


def _decode_all(paths: list[Path], size: int) -> torch.Tensor:
    # Decoding releases the GIL, so threads decode in parallel.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return torch.stack(list(pool.map(lambda path: _decode(path, size), paths, chunksize=256)))


# ---------------------------------------------------------------- CSV manifests


@dataclasses.dataclass(frozen=True)
class _Manifest:
    """A checked CSV manifest: every listed file is a file inside the CSV's folder."""

    csv: Path
    classes: tuple[str, ...]
    items: dict[str, list[tuple[Path, int]]]  # split -> (file, label), by label then path
    carved: bool  # no split column: the test split was carved from the rows
    stamp: str  # the CSV's bytes and each listed file's size and mtime, for the cache key

    @property
    def source(self) -> str:
        if not self.carved:
            return str(self.csv)
        return (f"{self.csv} (no split column: {len(self.items['test'])} test images carved "
                "from it, 1/6 of each class)")


def _read_manifest(csv_path: Path) -> _Manifest:
    """Parses and checks a manifest before any image is decoded; the first bad row is named."""
    name = f"CSV manifest {str(csv_path)!r}"
    try:
        data = csv_path.read_bytes()
        text = data.decode("utf-8-sig")  # drops the BOM spreadsheets write
    except OSError as err:
        raise DataError(f"cannot read {name}: {err}") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{name} is not UTF-8 text ({err}); save it as UTF-8") from None
    base = csv_path.parent.resolve()
    digest = hashlib.sha256(data)
    rows: list[tuple[int, str, str, str | None, Path]] = []  # row, path as written, label, split, file
    width = width_row = None  # 2 or 3 columns, as the header or the first row has
    header = False
    seen: dict[Path, int] = {}
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for fields in reader:
            n, fields = reader.line_num, [field.strip() for field in fields]
            if not any(fields):
                continue  # a blank line, or a spreadsheet's empty ",," row
            if width is None and [f.lower() for f in fields] in (["path", "label"], ["path", "label", "split"]):
                width, width_row, header = len(fields), n, True
                continue
            where = f"{name} row {n}"
            if len(fields) not in (2, 3):
                raise DataError(f"{where} has {len(fields)} columns; expected path,label or path,label,split")
            if width is None:
                width, width_row = len(fields), n
            elif len(fields) != width:
                first = f"the header (row {width_row})" if header else f"row {width_row}"
                has, lacks = (f"row {n}", first) if len(fields) == 3 else (first, f"row {n}")
                raise DataError(f"{name}: {has} has a split column but {lacks} has none; "
                                "give every row a split (train, val or test) or none")
            path_text, label = fields[0], fields[1]
            split = fields[2].lower() if width == 3 else None
            if not path_text:
                raise DataError(f"{where} has an empty path; give every row an image file")
            if not label:
                raise DataError(f"{where} has an empty label; give every image its class")
            tip = _HEADER_TIP if not header and not rows else ""  # a first row that may be a header
            if split is not None and split not in MANIFEST_SPLITS:
                raise DataError(f"{where}: split {fields[2]!r} is not train, val or test{tip}")
            file, st = _manifest_file(base, path_text, where, tip)
            if file in seen:
                raise DataError(f"{where} lists {path_text!r} again (first on row {seen[file]}); "
                                "list each image once")
            seen[file] = n
            digest.update(f"{file}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            rows.append((n, path_text, label, split, file))
    except csv.Error as err:
        raise DataError(f"cannot read {name} at row {reader.line_num}: {err}") from None
    if not rows:
        raise DataError(f"{name} lists no images; expected rows of path,label[,split]")

    carved = width == 2
    labels = {label for _, _, label, split, _ in rows if split in (None, "train")}
    if not labels:
        raise DataError(f"{name} has no train rows; mark some rows train")
    for n, _, label, split, _ in rows:
        if label not in labels:
            raise DataError(f"{name} row {n}: label {label!r} is in {split} but has no train rows; "
                            "add train images of it or drop the row")
    classes = tuple(sorted(labels))
    if len(classes) < 2:
        raise DataError(f"{name} lists one class ({classes[0]}); a classifier needs at least two")
    index = {label: i for i, label in enumerate(classes)}
    split_of = {n: split for n, _, _, split, _ in rows}
    if carved:
        split_of = _carve_test(rows)
        if "test" not in split_of.values():
            raise DataError(f"{name} has one image per class, too few to carve a test split from; "
                            "add images or a split column (train, val, test)")
    elif "test" not in split_of.values():
        raise DataError(f"{name} has no test rows, and the final run needs a test split; mark some "
                        "rows test, or drop the split column to have 1/6 of each class carved")
    items: dict[str, list[tuple[Path, int]]] = {}
    for split in MANIFEST_SPLITS:
        chosen = sorted((index[label], text, file) for n, text, label, _, file in rows if split_of[n] == split)
        items[split] = [(file, label) for label, _, file in chosen]
    return _Manifest(csv=csv_path, classes=classes, items=items, carved=carved, stamp=digest.hexdigest())


_HEADER_TIP = " (a header row must read path,label or path,label,split)"


def _manifest_file(base: Path, text: str, where: str, tip: str) -> tuple[Path, os.stat_result]:
    """The file a row lists, and its stat, checked: a relative path that stays inside
    ``base`` once symlinks are followed, to a file that exists."""
    if PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or text.startswith("\\"):
        raise DataError(f"{where}: path {text!r} is absolute; list images relative to the "
                        f"CSV's folder {str(base)!r}")
    try:
        file = (base / text).resolve()
    except (OSError, ValueError, RuntimeError) as err:  # a NUL byte, a symlink loop
        raise DataError(f"{where}: path {text!r} is not a usable file name ({err})") from None
    if not file.is_relative_to(base):
        how = "through a symlink " if Path(os.path.normpath(base / text)).is_relative_to(base) else ""
        raise DataError(f"{where}: path {text!r} leads {how}outside the CSV's folder {str(base)!r}; "
                        "keep the CSV in a folder that holds its images")
    try:
        st = file.stat()
        what = "" if S_ISREG(st.st_mode) else "is not a file"
    except OSError:
        what = "does not exist"
    if what:
        raise DataError(f"{where}: image {text!r} {what} (looked for {str(file)!r}); fix the path, "
                        f"relative to the CSV's folder, or drop the row{tip}")
    return file, st


def _carve_test(rows: list[tuple[int, str, str, str | None, Path]]) -> dict[int, str]:
    """Row number -> "train" or "test": 1/6 of each class with 2+ images (at least one) is test.

    Each class's images are ordered by a hash of their path, so neither the row
    order nor a seed plays a part, and adding an image moves few others.
    """
    by_class: dict[str, list[tuple[bytes, int]]] = {}
    for n, text, label, _, _ in rows:
        by_class.setdefault(label, []).append((hashlib.sha256(text.encode()).digest(), n))
    split_of = {}
    for members in by_class.values():
        members.sort()
        count = len(members)
        n_test = min(count - 1, max(1, round(count * CARVED_TEST_SHARE))) if count > 1 else 0
        split_of.update((n, "test" if i < n_test else "train") for i, (_, n) in enumerate(members))
    return split_of


def _load_manifest(manifest: _Manifest, image_size: int) -> dict:
    out = {}
    for split, items in manifest.items.items():
        if items:  # val is optional; train and test are never empty
            out[f"{split}_x"] = _decode_all([file for file, _ in items], image_size)
            out[f"{split}_y"] = torch.tensor([label for _, label in items], dtype=torch.int64)
    return dict(**out, classes=manifest.classes)


# ---------------------------------------------------------------- splitting


def make_splits(
    dataset: ImageDataset, val_fraction: float, data_fraction: float = 1.0, seed: int = 0
) -> Splits:
    """Carves a stratified, seeded validation split from train, then subsamples train.

    Each class keeps its share in both parts, so a 10% split of CIFAR-10 has
    exactly 500 images per class. A dataset with its own validation split (a
    ``val/`` folder) uses that instead of carving one; with ``val_fraction``
    0 (a final run) it joins train. The test split is never touched here.
    """
    train_x, train_y = dataset.train_x, dataset.train_y
    own_val = dataset.val_x is not None and dataset.val_y is not None
    if own_val and val_fraction == 0:
        train_x, train_y = torch.cat([train_x, dataset.val_x]), torch.cat([train_y, dataset.val_y])
    gen = torch.Generator().manual_seed(seed)
    train_idx, val_idx = [], []
    carve = 0.0 if own_val else val_fraction
    for label in range(len(dataset.classes)):
        idx = (train_y == label).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_val = round(len(idx) * carve)
        if carve > 0 and len(idx) > 1:
            n_val = min(max(n_val, 1), len(idx) - 1)
        rest = idx[n_val:]
        n_train = max(1, round(len(rest) * data_fraction)) if len(rest) else 0
        val_idx.append(idx[:n_val])
        train_idx.append(rest[:n_train])
    tr = torch.cat(train_idx).sort().values
    va = torch.cat(val_idx).sort().values
    part_x = train_x[tr]
    mean, std = _channel_stats(part_x)
    if own_val and val_fraction > 0:
        val_x, val_y = dataset.val_x, dataset.val_y
    else:
        val_x, val_y = train_x[va], train_y[va]
    return Splits(
        train_x=part_x,
        train_y=train_y[tr],
        val_x=val_x,
        val_y=val_y,
        classes=dataset.classes,
        mean=mean,
        std=std,
    )


def _channel_stats(x: torch.Tensor, chunk: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (unbiased) std of uint8 images in [0, 1], a chunk at a time:
    no float copy of the whole set (CIFAR-10's would be 1.1 GB in float64)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros(x.shape[1], dtype=torch.float64)
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk].to(torch.float64)
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    var = (squares - n * mean.square()) / max(1, n - 1)
    std = var.clamp_min(0).sqrt() / 255
    return tuple((mean / 255).tolist()), tuple(std.clamp_min(1e-3).tolist())

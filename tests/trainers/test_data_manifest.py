"""CSV manifests (path,label[,split]), a val/ folder end to end, and image_size for every kind."""

import os
import random
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from torchvision.io import encode_jpeg, encode_png

import trainers.data as data
from tests.conftest import class_images, write_cifar_batches, write_image_folder
from trainers.data import load_dataset, make_splits
from trainers.errors import DataError


def _images(root: Path, labels: dict[str, int], fmt: str = "png", size=(32, 32)) -> dict[str, torch.Tensor]:
    """``n`` images per label under root/img/<label>-<i>.<fmt> (a flat folder: the manifest
    alone says the class). Returns the written pixels by path relative to root."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    pixels = {}
    for label, (name, n) in enumerate(sorted(labels.items())):
        for i, img in enumerate(class_images(label, n, size, seed=7)):
            rel = f"img/{name}-{i:02d}.{fmt}"
            encoded = encode_png(img) if fmt == "png" else encode_jpeg(img, quality=90)
            (root / rel).write_bytes(bytes(encoded.numpy()))
            pixels[rel] = img
    return pixels


def _write_csv(path: Path, rows: list[str], header: str | None = None, bom: bool = False) -> Path:
    text = "\n".join(([header] if header else []) + rows) + "\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def _split_rows(pixels: dict[str, torch.Tensor]) -> list[str]:
    """Per class: image 0 is test, image 1 val, the rest train."""
    rows = []
    for rel in pixels:
        label, i = Path(rel).stem.rsplit("-", 1)
        rows.append(f"{rel},{label},{ {'00': 'test', '01': 'val'}.get(i, 'train') }")
    return rows


# ---------------------------------------------------------------- loading


def test_a_manifest_loads_exact_pixels_labels_and_splits(tmp_path):
    pixels = _images(tmp_path / "d", {"cat": 5, "ant": 4, "bee": 6})
    rows = _split_rows(pixels)
    random.Random(0).shuffle(rows)
    csv = _write_csv(tmp_path / "d" / "list.csv", rows)
    ds = load_dataset(csv, cache_dir=tmp_path / "cache")
    assert ds.classes == ("ant", "bee", "cat") and ds.source == str(csv)
    assert ds.train_x.dtype == torch.uint8 and ds.train_x.shape == (3 + 4 + 2, 3, 32, 32)
    assert ds.train_y.tolist() == [0] * 2 + [1] * 4 + [2] * 3  # by class, then path
    assert ds.val_y.tolist() == [0, 1, 2] and ds.test_y.tolist() == [0, 1, 2]
    assert torch.equal(ds.test_x[2], pixels["img/cat-00.png"])
    assert torch.equal(ds.val_x[0], pixels["img/ant-01.png"])
    assert torch.equal(ds.train_x, torch.stack([pixels[f"img/ant-{i:02d}.png"] for i in (2, 3)]
                                               + [pixels[f"img/bee-{i:02d}.png"] for i in range(2, 6)]
                                               + [pixels[f"img/cat-{i:02d}.png"] for i in range(2, 5)]))


@pytest.mark.parametrize("header, bom, blank, crlf", [
    (None, False, False, False),
    ("path,label,split", False, False, False),
    ("PATH, Label ,Split", True, True, True),
    (None, True, True, False),
])
def test_header_bom_blank_lines_and_line_ends_are_tolerated(tmp_path, header, bom, blank, crlf):
    pixels = _images(tmp_path / "d", {"a": 3, "b": 3})
    rows = _split_rows(pixels)
    if blank:
        rows = ["", *rows[:3], "  ", ",,", *rows[3:], ""]
    csv = _write_csv(tmp_path / "d" / "m.csv", rows, header, bom)
    if crlf:
        csv.write_bytes(csv.read_bytes().replace(b"\n", b"\r\n"))
    ds = load_dataset(csv, cache_dir=tmp_path / "cache")
    assert ds.classes == ("a", "b") and ds.train_y.tolist() == [0, 1]
    assert torch.equal(ds.test_x[1], pixels["img/b-00.png"])


def test_paths_are_relative_to_the_csv_and_jpeg_and_upper_case_suffix_load(tmp_path):
    root = tmp_path / "d"
    _images(root / "pics", {"x": 3, "y": 3}, fmt="jpg", size=(40, 48))
    rows = [f"./pics/img/{c}-{i:02d}.jpg,{c},{'test' if i == 0 else 'train'}" for c in "xy" for i in range(3)]
    rows[1] = rows[1].replace("./pics/", "pics/../pics/")  # ".." that stays inside is fine
    ds = load_dataset(_write_csv(root / "ALL.CSV", rows), cache_dir=tmp_path / "cache")
    assert ds.train_x.shape == (4, 3, 32, 32) and ds.test_y.tolist() == [0, 1]
    # From a subfolder, the same images lie outside the CSV's folder.
    (root / "lists").mkdir()
    inner = _write_csv(root / "lists" / "m.csv", [f"../{row.removeprefix('./')}" for row in rows])
    with pytest.raises(DataError, match=r"row 1: path '../pics/img/x-00.jpg' leads outside the CSV's folder"):
        load_dataset(inner, cache_dir=tmp_path / "cache")


def test_a_val_split_is_the_validation_split(tmp_path):
    pixels = _images(tmp_path / "d", {"a": 6, "b": 6})
    ds = load_dataset(_write_csv(tmp_path / "d" / "m.csv", _split_rows(pixels)), cache_dir=tmp_path / "cache")
    search = make_splits(ds, val_fraction=0.1)
    assert torch.equal(search.val_x, ds.val_x) and len(search.train_x) == 8
    final = make_splits(ds, val_fraction=0.0)  # a final run trains on train + val
    assert len(final.train_x) == 10 and len(final.val_x) == 0


# ---------------------------------------------------------------- the carved test split


def test_without_a_split_column_a_stratified_test_split_is_carved(tmp_path):
    counts = {"a": 12, "b": 7, "c": 2, "d": 1}
    pixels = _images(tmp_path / "d", counts)
    rows = [f"{rel},{Path(rel).stem.split('-')[0]}" for rel in pixels]
    ds = load_dataset(_write_csv(tmp_path / "d" / "m.csv", rows, "path,label"), cache_dir=tmp_path / "c1")
    # 1/6 of each class, at least one where a class has two or more images, never all of them.
    assert ds.test_y.bincount(minlength=4).tolist() == [2, 1, 1, 0]
    assert ds.train_y.bincount(minlength=4).tolist() == [10, 6, 1, 1]
    assert ds.val_x is None
    assert "test images carved" in ds.source and ds.source.startswith(str(tmp_path / "d" / "m.csv"))
    train = {bytes(img.flatten().tolist()) for img in ds.train_x}
    assert not any(bytes(img.flatten().tolist()) in train for img in ds.test_x)
    # The same rows in another order carve the same split: an equal dataset.
    for seed in range(3):
        random.Random(seed).shuffle(rows)
        again = load_dataset(_write_csv(tmp_path / "d" / "m.csv", rows), cache_dir=tmp_path / f"s{seed}")
        assert torch.equal(again.test_x, ds.test_x) and torch.equal(again.train_x, ds.train_x)
        assert again.fingerprint() == ds.fingerprint()


def test_a_carved_split_is_stratified_at_scale():
    rows = [(n, f"img/{label}/{n:05d}.png", label, None, Path("/x"))
            for n, label in enumerate(["a"] * 600 + ["b"] * 60 + ["c"] * 5)]
    split_of = data._carve_test(rows)
    tested = {label: sum(split_of[n] == "test" for n, _, lab, _, _ in rows if lab == label) for label in "abc"}
    assert tested == {"a": 100, "b": 10, "c": 1}


# ---------------------------------------------------------------- refusals


def _refusal_rows(case: str, tmp: Path) -> tuple[list[str], str]:
    ok = ["img/a-00.png,a,train", "img/b-00.png,b,train", "img/a-01.png,a,test", "img/b-01.png,b,test"]
    return {
        "absolute": ([f"{tmp / 'd' / 'img' / 'a-00.png'},a,train", *ok[1:]],
                     r"row 1: path '/.*a-00.png' is absolute; list images relative to the CSV's folder"),
        "windows absolute": ([r"C:\data\a.png,a,train", *ok[1:]], r"row 1: path 'C:\\\\data\\\\a.png' is absolute"),
        "escape": ([*ok, "../../etc/passwd,a,train"],
                   r"row 5: path '../../etc/passwd' leads outside the CSV's folder .*; keep the CSV in a folder"),
        "symlink": ([*ok, "img/link.png,a,train"], r"row 5: path 'img/link.png' leads through a symlink outside"),
        "missing": ([*ok, "img/nope.png,b,train"],
                    r"row 5: image 'img/nope.png' does not exist \(looked for '.*img/nope.png'\); fix the path"),
        "a folder": ([*ok, "img,b,train"], r"row 5: image 'img' is not a file"),
        "nul byte": ([*ok, "img/a\0.png,a,train"], r"row 5: path 'img/a\\x00.png' is not a usable file name"),
        "symlink loop": ([*ok, "img/loop,a,train"], r"row 5: path 'img/loop' is not a usable file name"),
        "huge field": ([*ok, f'"{"x" * 200_000}",a,train'], r"^cannot read CSV manifest .* at row 5: field larger"),
        "header hint": (["file,class", *ok], r"row 1: image 'file' does not exist .*a header row must read"),
        "split header": (["file,class,split", *ok], r"row 1: split 'split' is not train, val or test \(a header row"),
        "one column": ([*ok[:2], "img/a-01.png", *ok[3:]], r"row 3 has 1 columns; expected path,label or path,label,split"),
        "four columns": ([*ok, "img/a-02.png,a,train,extra"], r"row 5 has 4 columns"),
        "empty label": ([*ok, "img/a-02.png, ,train"], r"row 5 has an empty label; give every image its class"),
        "empty path": ([*ok, ",a,train"], r"row 5 has an empty path"),
        "bad split": ([*ok, "img/a-02.png,a,valid"], r"row 5: split 'valid' is not train, val or test"),
        "unseen label": ([*ok, "img/a-02.png,c,val"],
                         r"row 5: label 'c' is in val but has no train rows; add train images of it or drop the row"),
        "one class": ([ok[0], ok[2]], r"lists one class \(a\); a classifier needs at least two"),
        "no train": ([ok[2], ok[3]], r"has no train rows; mark some rows train"),
        "no test": (ok[:2] + ["img/a-02.png,a,val", "img/b-02.png,b,train"],
                    r"has no test rows, and the final run needs a test split; mark some rows test, "
                    r"or drop the split column"),
        "mix": ([*ok, "img/a-02.png,a"], r": row 1 has a split column but row 5 has none; give every row a split"),
        "mix after header": (["path,label", "img/a-00.png,a", "img/b-00.png,b,test"],
                             r": row 3 has a split column but the header \(row 1\) has none"),
        "duplicate": ([*ok, "./img/a-00.png,b,test"],
                      r"row 5 lists './img/a-00.png' again \(first on row 1\); list each image once"),
        "empty": (["path,label,split", ""], r"lists no images; expected rows of path,label\[,split\]"),
        "one per class": (["img/a-00.png,a", "img/b-00.png,b"], r"has one image per class, too few to carve"),
    }[case]


@pytest.mark.parametrize("case", [
    "absolute", "windows absolute", "escape", "symlink", "missing", "a folder", "nul byte", "symlink loop",
    "huge field", "header hint", "split header",
    "one column",
    "four columns", "empty label", "empty path", "bad split", "unseen label", "one class", "no train",
    "no test", "mix", "mix after header", "duplicate", "empty", "one per class",
])
def test_unusable_manifests_are_refused_naming_the_row(tmp_path, case):
    _images(tmp_path / "d", {"a": 3, "b": 3})
    (tmp_path / "secret.png").write_bytes((tmp_path / "d" / "img" / "a-02.png").read_bytes())
    (tmp_path / "d" / "img" / "link.png").symlink_to(tmp_path / "secret.png")
    (tmp_path / "d" / "img" / "loop").symlink_to("loop")
    rows, expected = _refusal_rows(case, tmp_path)
    csv = _write_csv(tmp_path / "d" / "m.csv", rows)
    with pytest.raises(DataError, match=expected) as err:
        load_dataset(csv, cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert f"CSV manifest {str(csv)!r}" in message and "\n" not in message
    assert not (tmp_path / "cache" / "tensors").exists()  # refused before any decoding


def test_a_manifest_that_is_not_utf8_is_refused(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_bytes("img/caf\u00e9.png,a\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"CSV manifest '.*m.csv' is not UTF-8 text .*; save it as UTF-8"):
        load_dataset(csv, cache_dir=tmp_path / "cache")


def test_an_undecodable_listed_image_is_named(tmp_path):
    pixels = _images(tmp_path / "d", {"a": 3, "b": 3})
    (tmp_path / "d" / "img" / "b-02.png").write_bytes(b"not an image")
    csv = _write_csv(tmp_path / "d" / "m.csv", _split_rows(pixels))
    with pytest.raises(DataError, match=r"cannot decode image '.*b-02.png'"):
        load_dataset(csv, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("make, expected", [
    ("missing", r"does not exist; pass --data .*, or a CSV manifest of path,label\[,split\] rows"),
    ("text file", r"is a file but neither an archive \(.tar.gz, .tgz, .tar, .zip\) nor a CSV manifest \(.csv\)"),
])
def test_unusable_source_messages_name_the_csv_manifest(tmp_path, make, expected):
    path = tmp_path / "data.txt"
    if make == "text file":
        path.write_text("img/a.png,a\n")
    with pytest.raises(DataError, match=expected):
        load_dataset(path, cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------- the tensor cache


def test_the_cache_serves_equal_tensors_and_relabelling_changes_the_data(tmp_path, monkeypatch):
    pixels = _images(tmp_path / "d", {"a": 4, "b": 4})
    rows = _split_rows(pixels)
    csv = _write_csv(tmp_path / "d" / "m.csv", rows)
    cache = tmp_path / "cache"
    first = load_dataset(csv, cache_dir=cache)
    assert len(list((cache / "tensors").glob("csv-manifest-*.pt"))) == 1

    def no_decoding(path, size):
        raise AssertionError(f"decoded {path} despite the cache")

    with monkeypatch.context() as patch:
        patch.setattr(data, "_decode", no_decoding)
        again = load_dataset(csv, cache_dir=cache)
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(again, name), getattr(first, name))
    assert again.classes == first.classes and again.source == first.source
    assert again.fingerprint() == first.fingerprint()

    relabelled = [row.replace(",a,train", ",b,train", 1) if row.startswith("img/a-03") else row for row in rows]
    assert relabelled != rows
    _write_csv(csv, relabelled)
    changed = load_dataset(csv, cache_dir=cache)
    assert changed.train_y.bincount().tolist() == [1, 3] and changed.fingerprint() != first.fingerprint()

    # An image rewritten in place is picked up too: its size and mtime are in the key.
    image = tmp_path / "d" / "img" / "b-03.png"
    other = encode_png(class_images(1, 1, (32, 32), seed=99)[0])
    image.write_bytes(bytes(other.numpy()))
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load_dataset(csv, cache_dir=cache).fingerprint() != changed.fingerprint()


# ---------------------------------------------------------------- image_size and val/ for every kind


def _source(kind: str, root: Path) -> Path:
    if kind == "folder":
        return write_image_folder(root / "imgs", ["a", "b"], 3, 1, size=(40, 48), fmt="jpg")
    if kind == "archive":
        folder = write_image_folder(root / "imgs" / "data", ["a", "b"], 3, 1, size=(20, 24))
        with tarfile.open(root / "data.tar.gz", "w:gz") as tf:
            tf.add(folder, arcname="data")
        return root / "data.tar.gz"
    if kind == "csv":
        pixels = _images(root / "d", {"a": 4, "b": 4}, size=(50, 36))
        return _write_csv(root / "d" / "m.csv", _split_rows(pixels))
    return write_cifar_batches(root / "src")[0]


@pytest.mark.parametrize("kind", ["folder", "archive", "csv", "cifar"])
def test_image_size_64_gives_64_px_tensors_for_every_kind(tmp_path, kind):
    source = _source(kind, tmp_path)
    ds = load_dataset(source, image_size=64, cache_dir=tmp_path / "cache")
    assert ds.image_size == 64 and ds.train_x.dtype == torch.uint8
    for x in (ds.train_x, ds.test_x, ds.val_x):
        assert x is None or tuple(x.shape[1:]) == (3, 64, 64)
    cached = load_dataset(source, image_size=64, cache_dir=tmp_path / "cache")
    assert torch.equal(cached.train_x, ds.train_x)
    assert load_dataset(source, image_size=32, cache_dir=tmp_path / "cache").image_size == 32


def test_a_val_folder_at_64_px_runs_through_make_splits(tmp_path):
    root = write_image_folder(tmp_path / "imgs", ["a", "b", "c"], 6, 2, size=(30, 30))
    write_image_folder(tmp_path / "v", ["a", "b", "c"], 2, 0, size=(30, 30), fmt="jpg")
    shutil.copytree(tmp_path / "v" / "train", root / "val")
    ds = load_dataset(root, image_size=64, cache_dir=tmp_path / "cache")
    assert ds.val_x.shape == (6, 3, 64, 64) and ds.val_y.tolist() == [0, 0, 1, 1, 2, 2]
    search = make_splits(ds, val_fraction=0.1, seed=1)  # the val/ folder, not a carved split
    assert torch.equal(search.val_x, ds.val_x) and torch.equal(search.train_x, ds.train_x)
    final = make_splits(ds, val_fraction=0.0)
    assert len(final.train_x) == 24 and len(final.val_x) == 0
    assert final.train_y.bincount().tolist() == [8, 8, 8] and final.train_x.shape[-1] == 64

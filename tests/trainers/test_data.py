import hashlib
import http.server
import tarfile
import threading
from functools import partial
from pathlib import Path

import pytest
import torch

from tests.conftest import write_cifar_batches, write_image_folder
from trainers.data import load_dataset, make_splits
from trainers.errors import DataError


def test_cifar_batches_folder_loads_exact_pixels(tmp_path):
    folder, x, y = write_cifar_batches(tmp_path / "src")
    ds = load_dataset(folder.parent, cache_dir=tmp_path / "cache")
    assert ds.train_x.shape == (100, 3, 32, 32) and ds.test_x.shape == (20, 3, 32, 32)
    assert torch.equal(ds.train_x, x[:100]) and torch.equal(ds.test_y, y[100:])
    assert ds.classes == tuple(f"c{i}" for i in range(10))
    # The batches folder itself works too, and the second load comes from the cache.
    cached = list((tmp_path / "cache" / "tensors").glob("*.pt"))
    assert len(cached) == 1
    again = load_dataset(folder, cache_dir=tmp_path / "cache")
    assert torch.equal(again.train_x, ds.train_x)


def test_cifar_download_path_uses_torchvision(tmp_path):
    folder, x, _ = write_cifar_batches(tmp_path / "src")
    archive = tmp_path / "serve" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname="cifar-10-batches-py")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
        ds = load_dataset(None, cache_dir=tmp_path / "cache", download_url=url, download_md5=md5)
    finally:
        server.shutdown()
    assert torch.equal(ds.train_x, x[:100])
    assert (tmp_path / "cache" / "downloads" / "cifar-10-batches-py" / "data_batch_1").exists()


def test_failed_download_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="could not download CIFAR-10.*--data"):
        load_dataset(None, cache_dir=tmp_path, download_url="http://127.0.0.1:9/x.tar.gz")


def test_image_folder_loads_labels_in_class_order(tmp_path):
    root = write_image_folder(tmp_path / "imgs", ["cat", "ant", "bee"], 4, 2)
    ds = load_dataset(root, cache_dir=tmp_path / "cache")
    assert ds.classes == ("ant", "bee", "cat")
    assert ds.train_x.shape == (12, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert ds.test_y.bincount().tolist() == [2, 2, 2]


def test_image_folder_of_other_size_is_resized(tmp_path):
    root = write_image_folder(tmp_path / "imgs", ["a", "b", "c"], 3, 1, size=(48, 40), fmt="jpg")
    ds = load_dataset(root, image_size=32, cache_dir=tmp_path / "cache")
    assert ds.train_x.shape == (9, 3, 32, 32) and ds.image_size == 32
    big = load_dataset(root, image_size=36, cache_dir=tmp_path / "cache")
    assert big.train_x.shape == (9, 3, 36, 36)
    # Distinct options give distinct cache entries.
    assert len(list((tmp_path / "cache" / "tensors").glob("*.pt"))) == 2


def test_archive_of_image_folder_is_unpacked_once(tmp_path):
    root = write_image_folder(tmp_path / "imgs" / "mydata", ["x", "y"], 2, 1)
    archive = tmp_path / "mydata.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(root, arcname="mydata")
    ds = load_dataset(archive, cache_dir=tmp_path / "cache")
    assert ds.classes == ("x", "y") and len(ds.train_x) == 4
    assert len(list((tmp_path / "cache" / "extracted").iterdir())) == 1


def test_corrupt_image_is_named(tmp_path):
    root = write_image_folder(tmp_path / "imgs", ["a", "b"], 3, 1)
    bad = root / "train" / "b" / "0001.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="0001.png"):
        load_dataset(root, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_unusable_sources_fail_clearly(tmp_path, make):
    path = tmp_path / "data"
    if make == "empty":
        (path / "stuff").mkdir(parents=True)
        (path / "other").mkdir()
    elif make == "file":
        path.write_text("hello")
    with pytest.raises(DataError, match="data|dataset"):
        load_dataset(path, cache_dir=tmp_path / "cache")


def test_splits_are_stratified_disjoint_and_seeded(tmp_path):
    root = write_image_folder(tmp_path / "imgs", ["a", "b", "c", "d"], 20, 1)
    ds = load_dataset(root, cache_dir=tmp_path / "cache")
    s = make_splits(ds, val_fraction=0.1, seed=3)
    assert s.val_y.bincount().tolist() == [2, 2, 2, 2]
    assert s.train_y.bincount().tolist() == [18, 18, 18, 18]
    # No image is in both parts (images are unique, so compare their bytes).
    train_set = {bytes(img.flatten().tolist()) for img in s.train_x}
    assert not any(bytes(img.flatten().tolist()) in train_set for img in s.val_x)
    assert torch.equal(make_splits(ds, 0.1, seed=3).val_x, s.val_x)
    assert not torch.equal(make_splits(ds, 0.1, seed=4).val_x, s.val_x)
    half = make_splits(ds, 0.1, data_fraction=0.5, seed=3)
    assert half.train_y.bincount().tolist() == [9, 9, 9, 9] and torch.equal(half.val_x, s.val_x)
    final = make_splits(ds, 0.0, seed=3)
    assert len(final.train_x) == 80 and len(final.val_x) == 0
    assert len(s.mean) == 3 and all(0 < v < 1 for v in s.std)

"""Small real datasets, generated on disk, for the tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torchvision.io import encode_jpeg, encode_png


def class_images(label: int, n: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    """uint8 images whose colour depends on the class, so a model can learn them."""
    gen = torch.Generator().manual_seed(seed * 1000 + label)
    base = torch.tensor([(label * 37) % 256, (label * 91) % 256, (label * 53) % 256],
                        dtype=torch.float32)[:, None, None]
    noise = torch.randint(-40, 41, (n, 3, *size), generator=gen).float()
    return (base + noise).clamp(0, 255).to(torch.uint8)


def write_image_folder(root: Path, classes: list[str], n_train: int, n_test: int,
                       size: tuple[int, int] = (32, 32), fmt: str = "png") -> Path:
    """An ImageFolder tree root/{train,test}/<class>/<i>.<fmt>."""
    for split, n in (("train", n_train), ("test", n_test)):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(class_images(label, n, size, seed=len(split))):
                data = encode_png(img) if fmt == "png" else encode_jpeg(img, quality=90)
                (folder / f"{i:04d}.{fmt}").write_bytes(bytes(data.numpy()))
    return root


def write_cifar_batches(root: Path, per_batch: int = 20) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """A miniature cifar-10-batches-py folder in the official pickle format."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = torch.randint(0, 256, (per_batch, 3072), generator=gen, dtype=torch.uint8)
        y = [i % 10 for i in range(per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": x.numpy(), "labels": y}, f)
        xs.append(x)
        ys.append(torch.tensor(y))
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return folder, torch.cat(xs).view(-1, 3, 32, 32), torch.cat(ys)


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory) -> Path:
    """A 10-class, 32px PNG ImageFolder: 30 train and 10 test images per class."""
    root = tmp_path_factory.mktemp("tiny_cifar")
    return write_image_folder(root, [f"class{i}" for i in range(10)], 30, 10)


# --- PostgreSQL: a real server for the RDB storage tests (tests/postgres.py) -------------------

@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server (tests.postgres.Server) for the session.

    $TUNEBENCH_TEST_POSTGRES (a superuser URL, as `python -m tests.postgres start DIR` prints)
    names an existing server; otherwise one is started in a temporary folder and stopped at
    the end. Without PostgreSQL the tests that need it skip, except in CI (CI=true).
    """
    import os
    import shutil
    import tempfile

    from tests import postgres

    def unavailable(why: str):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}; .ci/run should have installed postgresql (and psycopg2-binary "
                        "with the test extra)", pytrace=False)
        pytest.skip(why)

    try:
        import psycopg2  # noqa: F401
    except ImportError:
        unavailable("psycopg2 is not installed (pip install -e '.[postgres]')")
    url = os.environ.get(postgres.ENV_VAR)
    if url:
        yield postgres.from_url(url)
        return
    if postgres.binaries() is None:
        unavailable("no PostgreSQL binaries under /usr/lib/postgresql/*/bin "
                    "(apt-get install postgresql)")
    # Not under pytest's basetemp: that is 0700 root's when we are root, out of the postgres
    # user's reach, and its long paths can overflow a unix socket's name.
    folder = tempfile.mkdtemp(prefix="tunebench-pg-")
    try:
        server = postgres.start(folder)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server, request):
    """A fresh, uniquely named database on postgres_server: its SQLAlchemy URL (with password).

    Dropped after the test.
    """
    import re
    import uuid

    from tests import postgres

    name = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40]
    name = f"tb_{name}_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(postgres_server, name)
    yield url
    try:
        postgres.drop_database(postgres_server, name)
    except Exception as exc:  # a leftover database on a throwaway server is no failure
        import warnings

        warnings.warn(f"could not drop test database {name}: {exc}")

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

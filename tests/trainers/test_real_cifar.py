"""Real CIFAR-10 from ../shared/data: the JPEG ImageFolder archive, end to end."""

from pathlib import Path

import pytest

from trainers.config import TrialConfig
from trainers.data import load_dataset, make_splits
from trainers.loop import train

ARCHIVE = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-jpeg.tar.gz"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ARCHIVE.exists(), reason="needs ../shared/data/cifar10-jpeg.tar.gz"),
]


def test_real_cifar10_loads_and_a_small_resnet_learns_it(tmp_path_factory):
    ds = load_dataset(ARCHIVE, cache_dir=tmp_path_factory.mktemp("cache"))
    assert ds.train_x.shape == (50000, 3, 32, 32) and ds.test_x.shape == (10000, 3, 32, 32)
    assert ds.classes[0] == "airplane" and ds.classes[-1] == "truck"
    assert ds.train_y.bincount().tolist() == [5000] * 10
    config = TrialConfig(depth=10, width=8, epochs=2, batch_size=128, lr=3e-3,
                         warmup_epochs=0.2, aug_strength=0.2, data_fraction=0.2)
    splits = make_splits(ds, config.val_fraction, config.data_fraction, seed=0)
    assert len(splits.val_x) == 5000 and len(splits.train_x) == 9000
    result = train(config, splits, threads=1)
    # Chance is 10%; two short epochs of a 78k-parameter ResNet reach well above it.
    assert result.last["val_acc"] > 0.35

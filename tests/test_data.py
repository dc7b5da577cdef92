"""Dataset loading: the bundled smoke subset, image-folder trees, the decoded-array cache and errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from backdoor_repro.data import DatasetUnavailable, class_balanced_subset, load_dataset
from backdoor_repro.datasets import CIFAR10_CLASSES


def test_smoke_bundle_is_class_balanced_real_cifar10(smoke_train, smoke_test):
    assert smoke_train.images.shape == (5000, 3, 32, 32) and smoke_train.images.dtype == torch.uint8
    assert smoke_test.images.shape == (1000, 3, 32, 32)
    assert torch.bincount(smoke_train.labels).tolist() == [500] * 10
    assert smoke_train.classes[3] == "cat" and smoke_train.num_classes == 10
    mean = smoke_train.images.float().mean((0, 2, 3)) / 255  # close to CIFAR-10's per-channel mean
    assert torch.allclose(mean, torch.tensor([0.491, 0.481, 0.445]), atol=0.03)


def test_class_balanced_subset(smoke_train):
    sub = class_balanced_subset(smoke_train, 20)
    assert len(sub) == 200 and torch.bincount(sub.labels).tolist() == [20] * 10
    with pytest.raises(ValueError):
        class_balanced_subset(smoke_train, 501)


def _write_tree(root, per_class=3, size=32):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in CIFAR10_CLASSES:  # all ten: a tree with fewer is refused (test_data_class_lists)
            d = root / "cifar10-jpeg" / split / cls
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"{i:04d}.png")


def test_image_folder_tree_and_decoded_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOOR_REPRO_CACHE", str(tmp_path / "cache"))
    _write_tree(tmp_path / "data")
    ds = load_dataset("cifar10", "train", root=tmp_path / "data")
    assert ds.images.shape == (30, 3, 32, 32) and ds.labels.tolist() == [c for c in range(10) for _ in range(3)]
    with Image.open(tmp_path / "data/cifar10-jpeg/train/automobile/0001.png") as im:
        assert np.array_equal(ds.images[4].permute(1, 2, 0).numpy(), np.asarray(im))
    cached = list((tmp_path / "cache" / "datasets").glob("*.npz"))
    assert len(cached) == 1
    cached[0].write_bytes(b"corrupt")
    again = load_dataset("cifar10", "train", root=tmp_path / "data")  # corrupt cache -> decoded again
    assert torch.equal(again.images, ds.images)


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetUnavailable, match="three ways"):
        load_dataset("cifar10", "train", root=tmp_path)
    with pytest.raises(DatasetUnavailable):
        load_dataset("gtsrb", "test")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist", "train")

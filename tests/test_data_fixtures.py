"""Fixture writers, one per on-disk layout (fake pixels, the real structure), and ``load_dataset`` on each of them.

Layouts: torchvision's CIFAR-10 / CIFAR-100 pickles (``cifar-10-batches-py``, ``cifar-100-python``), GTSRB's
torchvision layout and official release (``test_data_gtsrb.write_torchvision_gtsrb``, ``write_release_gtsrb``),
image-folder trees, and a 224-px ImageNet-style tree with WNID class folders (``train/`` and ``val/``). Every writer
uses the dataset's real class names: a copy with other classes is refused (``test_data_class_lists``)."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from backdoor_repro.data import load_dataset
from backdoor_repro.datasets import CIFAR10_CLASSES, CIFAR100_CLASSES, IMAGENET12_WNIDS

from test_data_gtsrb import CLASSES as GTSRB_CLASSES, write_torchvision_gtsrb

CIFAR_LAYOUT = {  # name: (folder, {split: files}, meta file, meta key, label key, classes)
    "cifar10": ("cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                "batches.meta", "label_names", "labels", 10),
    "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]}, "meta", "fine_label_names",
                 "fine_labels", 100),
}
CLASS_NAMES = {"cifar10": list(CIFAR10_CLASSES), "cifar100": list(CIFAR100_CLASSES)}


def write_cifar_pickles(root, name, per_file=6, seed=0, classes=None):
    """torchvision's CIFAR files: pickled dicts with ``data`` uint8 (N, 3072) rows in CHW order and the labels,
    plus the meta file with the class names (the real ones unless ``classes``). Returns ``{split: (images HWC,
    labels)}``."""
    folder, files, meta, meta_key, label_key, n_classes = CIFAR_LAYOUT[name]
    rng = np.random.default_rng(seed)
    base = root / folder
    base.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, names in files.items():
        images, labels = [], []
        for f in names:
            data = rng.integers(0, 256, (per_file, 3 * 32 * 32), dtype=np.uint8)
            lab = rng.integers(0, n_classes, per_file).tolist()
            entry = {"batch_label": f, label_key: lab, "data": data, "filenames": [f"{i}.png" for i in range(per_file)]}
            if name == "cifar100":
                entry["coarse_labels"] = [c // 5 for c in lab]
            (base / f).write_bytes(pickle.dumps(entry))
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels += lab
        written[split] = (np.concatenate(images), np.asarray(labels))
    names = CLASS_NAMES[name] if classes is None else classes
    (base / meta).write_bytes(pickle.dumps({meta_key: names}))
    return written


def write_image_tree(root, classes, per_class=2, splits=("train", "test"), size=(32, 32), seed=0, suffix="png"):
    """``root/<split>/<class>/<i>.<suffix>`` with random pixels; ``size`` a (w, h) or a callable(rng) -> (w, h)."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                w, h = size(rng) if callable(size) else size
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"{i:04d}.{suffix}")
    return root


WNIDS = list(IMAGENET12_WNIDS) + ["n01532829", "n01534433"]  # ImageNet's first 14 WNIDs: imagenet12 keeps 12


def write_imagenet_tree(root, wnids=WNIDS, per_class=2):
    """An ImageNet-style tree: ``root/imagenet/{train,val}/<WNID>/*.JPEG``, images of varied, non-square sizes."""
    base = root / "imagenet"
    write_image_tree(base, wnids, per_class, ("train",), lambda r: tuple(r.integers(60, 400, 2)), 0, "JPEG")
    write_image_tree(base, wnids, 1, ("val",), lambda r: tuple(r.integers(60, 400, 2)), 1, "JPEG")
    return base


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOOR_REPRO_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickles_load_as_written_in_torchvision_order(tmp_path, name):
    written = write_cifar_pickles(tmp_path / "data", name)
    for split, (images, labels) in written.items():
        with pytest.warns(UserWarning, match="differ from the official"):
            ds = load_dataset(name, split, tmp_path / "data")
        assert ds.order == ds.layout == "torchvision" and ds.num_classes == CIFAR_LAYOUT[name][5]
        assert ds.classes[1] == CLASS_NAMES[name][1]
        assert np.array_equal(ds.images.permute(0, 2, 3, 1).numpy(), images) and ds.labels.tolist() == labels.tolist()


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickles_give_torchvisions_own_arrays(tmp_path, monkeypatch, name):
    import torchvision.datasets as tvd
    import torchvision.datasets.cifar as tv_cifar

    write_cifar_pickles(tmp_path / "data", name)
    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args: True)  # the fixture's md5s are not the release's
    for split in ("train", "test"):
        ref = cls(tmp_path / "data", train=split == "train")
        with pytest.warns(UserWarning):
            ds = load_dataset(name, split, tmp_path / "data")
        assert np.array_equal(ds.images.permute(0, 2, 3, 1).numpy(), ref.data) and ds.labels.tolist() == ref.targets
        assert list(ds.classes) == ref.classes


@pytest.mark.parametrize("name, classes", [("cifar10", list(CIFAR10_CLASSES)), ("cifar100", list(CIFAR100_CLASSES)),
                                           ("gtsrb", [f"{c:05d}" for c in range(GTSRB_CLASSES)])])
def test_image_folder_trees_load_for_every_family(tmp_path, name, classes):
    write_image_tree(tmp_path / "data" / f"{name}-jpeg", list(reversed(classes)), per_class=1,
                     size=lambda r: tuple(r.integers(20, 50, 2)))
    for split in ("train", "test"):
        ds = load_dataset(name, split, tmp_path / "data")
        assert ds.images.shape == (len(classes), 3, 32, 32) and list(ds.classes) == classes
        assert ds.order == ds.layout == "folder" and ds.labels.tolist() == list(range(len(classes)))


def test_gtsrb_torchvision_layout_loads(tmp_path):
    test_labels = write_torchvision_gtsrb(tmp_path / "data", per_class=1)
    train, test = load_dataset("gtsrb", "train", tmp_path / "data"), load_dataset("gtsrb", "test", tmp_path / "data")
    assert train.num_classes == GTSRB_CLASSES and train.classes[42] == "00042" and test.labels.tolist() == test_labels


def test_imagenet12_tree_loads_the_first_12_wnids_at_224(tmp_path):
    write_imagenet_tree(tmp_path / "data")
    train = load_dataset("imagenet12", "train", tmp_path / "data")
    test = load_dataset("imagenet12", "test", tmp_path / "data")
    assert train.images.shape == (24, 3, 224, 224) and train.images.dtype == torch.uint8
    assert test.images.shape == (12, 3, 224, 224) and list(test.classes) == WNIDS[:12] == list(train.classes)
    assert test.labels.tolist() == list(range(12)) and train.order == test.order == "folder"
    assert list(train.classes) == list(IMAGENET12_WNIDS)

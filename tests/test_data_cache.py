"""The decoded-data cache follows the files it was built from and survives damage; bad image trees are clear
errors naming the folder or file."""
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from backdoor_repro.data import DatasetUnavailable, load_dataset
from backdoor_repro.datasets import CIFAR10_CLASSES

from test_data_fixtures import CIFAR_LAYOUT, WNIDS, write_cifar_pickles, write_image_tree, write_imagenet_tree
from test_data_gtsrb import write_torchvision_gtsrb


def write_tree(root, per_class=3, classes=CIFAR10_CLASSES):
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOOR_REPRO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "datasets"


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_a_damaged_decoded_cache_is_rebuilt(tmp_path, cache, damage):
    root = write_tree(tmp_path / "data")
    first = load_dataset("cifar10", "train", root)
    path, = cache.glob("*.npz")
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        raw[len(raw) // 2] ^= 0xFF  # inside the stored image array: the zip CRC no longer matches
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="damaged"):
        again = load_dataset("cifar10", "train", root)
    assert (again.images == first.images).all() and (again.labels == first.labels).all()
    assert not list(cache.glob("*.tmp*"))


def test_the_torchvision_layout_cache_follows_its_files(tmp_path, cache):
    write_torchvision_gtsrb(tmp_path / "data", per_class=1)
    assert len(load_dataset("gtsrb", "test", tmp_path / "data")) == 2 * 43
    csv = tmp_path / "data" / "gtsrb" / "GT-final_test.csv"
    lines = csv.read_text().splitlines()
    for line in lines[11:]:  # keep 10 rows and their images (a CSV cut short alone is refused: test_data_gtsrb_checks)
        (tmp_path / "data" / "gtsrb" / "GTSRB" / "Final_Test" / "Images" / line.split(";")[0]).unlink()
    csv.write_text("\n".join(lines[:11]) + "\n")
    assert len(load_dataset("gtsrb", "test", tmp_path / "data")) == 10
    before = load_dataset("gtsrb", "test", tmp_path / "data").labels.tolist()
    lines = csv.read_text().splitlines()
    lines[1] = lines[1].rsplit(";", 1)[0] + f";{(before[0] + 1) % 43:d}"  # another label, the same file size or not
    _rewrite_later(csv, ("\n".join(lines) + "\n").encode())
    assert load_dataset("gtsrb", "test", tmp_path / "data").labels.tolist() == [(before[0] + 1) % 43] + before[1:]


def test_an_image_folder_cache_follows_a_renamed_file(tmp_path, cache):
    root = write_tree(tmp_path / "data")
    before = load_dataset("cifar10", "train", root)
    (root / "train" / "cat" / "0.png").rename(root / "train" / "airplane" / "9.png")  # same count, size, mtime
    after = load_dataset("cifar10", "train", root)
    assert before.labels.tolist().count(0) == 3 and after.labels.tolist().count(0) == 4


def test_an_empty_class_folder_is_named(tmp_path, cache):
    root = write_tree(tmp_path / "data")
    for f in (root / "train" / "dog").iterdir():
        f.unlink()
    with pytest.raises(DatasetUnavailable, match="class folder.* dog hold no images"):
        load_dataset("cifar10", "train", root)


def test_a_truncated_image_is_named(tmp_path, cache):
    root = write_tree(tmp_path / "data")
    broken = root / "train" / "cat" / "1.png"
    broken.write_bytes(broken.read_bytes()[:40])
    with pytest.raises(ValueError, match="cannot decode .*cat/1.png"):
        load_dataset("cifar10", "train", root)


def _rewrite_later(path, data: bytes):
    """Rewrite ``path`` (same size) and move its mtime on, as an edit a second later would."""
    st = path.stat()
    path.write_bytes(data)
    os.utime(path, (st.st_atime + 5, st.st_mtime + 5))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_a_cifar_pickle_cache_follows_its_files(tmp_path, cache, name):
    write_cifar_pickles(tmp_path / "data", name)
    with pytest.warns(UserWarning):
        before = load_dataset(name, "test", tmp_path / "data")
    folder, files = CIFAR_LAYOUT[name][:2]
    path = tmp_path / "data" / folder / files["test"][0]
    entry = pickle.loads(path.read_bytes())
    entry["data"][0, 0] ^= 0xFF  # one pixel of the first image, same file size
    _rewrite_later(path, pickle.dumps(entry))
    with pytest.warns(UserWarning):
        after = load_dataset(name, "test", tmp_path / "data")
    assert int(after.images[0, 0, 0, 0]) == int(before.images[0, 0, 0, 0]) ^ 0xFF


def test_a_gtsrb_image_folder_cache_follows_an_added_file(tmp_path, cache):
    root = write_image_tree(tmp_path / "data" / "gtsrb", [f"{c:05d}" for c in range(43)], size=(8, 8))
    assert len(load_dataset("gtsrb", "train", tmp_path / "data")) == 86
    (root / "train" / "00001" / "0000.png").rename(root / "train" / "00001" / "0007.png")
    write_image_tree(root, ["00002"], per_class=3, splits=("train",), size=(8, 8), seed=5)  # overwrites 2, adds 1
    labels = load_dataset("gtsrb", "train", tmp_path / "data").labels.tolist()
    assert labels[:7] == [0, 0, 1, 1, 2, 2, 2] and len(labels) == 87


def test_an_imagenet12_cache_follows_an_added_image(tmp_path, cache):
    base = write_imagenet_tree(tmp_path / "data")
    assert load_dataset("imagenet12", "test", tmp_path / "data").classes[0] == WNIDS[0]
    write_image_tree(base, [WNIDS[3]], 2, ("val",), seed=4, suffix="JPEG")  # rewrites 0000.JPEG, adds 0001.JPEG
    ds = load_dataset("imagenet12", "test", tmp_path / "data")
    assert list(ds.classes) == WNIDS[:12] and ds.labels.tolist() == [0, 1, 2, 3, 3, *range(4, 12)]
    write_image_tree(base, ["n00000001"], per_class=1, splits=("train", "val"))  # sorts first: refused, not shifted
    with pytest.raises(DatasetUnavailable, match="n00000001 sort among them"):
        load_dataset("imagenet12", "test", tmp_path / "data")

"""The decoded-data cache follows the files it was built from and survives damage; bad image trees are clear
errors naming the folder or file."""
import numpy as np
import pytest
from PIL import Image

from backdoor_repro.data import DatasetUnavailable, load_dataset

from test_data_gtsrb import write_torchvision_gtsrb


def write_tree(root, per_class=3, classes=("airplane", "cat")):
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
    csv.write_text("\n".join(csv.read_text().splitlines()[:11]) + "\n")  # header + 10 rows
    assert len(load_dataset("gtsrb", "test", tmp_path / "data")) == 10


def test_an_image_folder_cache_follows_a_renamed_file(tmp_path, cache):
    root = write_tree(tmp_path / "data")
    before = load_dataset("cifar10", "train", root)
    (root / "train" / "cat" / "0.png").rename(root / "train" / "airplane" / "9.png")  # same count, size, mtime
    after = load_dataset("cifar10", "train", root)
    assert before.labels.tolist().count(0) == 3 and after.labels.tolist().count(0) == 4


def test_an_empty_class_folder_is_named(tmp_path, cache):
    root = write_tree(tmp_path / "data")
    (root / "train" / "dog").mkdir()
    with pytest.raises(DatasetUnavailable, match="class folder.* dog hold no images"):
        load_dataset("cifar10", "train", root)


def test_a_truncated_image_is_named(tmp_path, cache):
    root = write_tree(tmp_path / "data")
    broken = root / "train" / "cat" / "1.png"
    broken.write_bytes(broken.read_bytes()[:40])
    with pytest.raises(ValueError, match="cannot decode .*cat/1.png"):
        load_dataset("cifar10", "train", root)

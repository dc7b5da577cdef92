"""Every layout's classes are checked against the dataset's own class list (``datasets.py``) and the test split
against the training split, before anything is decoded: a partly extracted archive or another dataset's tree is
refused with what was found and what was expected, never loaded with fewer classes or shifted labels."""
import pickle
import re

import pytest

from backdoor_repro.data import DatasetUnavailable, check_dataset_available, dataset_layout, load_dataset
from backdoor_repro.datasets import CIFAR10_CLASSES, CIFAR100_CLASSES, GTSRB_CLASSES, IMAGENET12_WNIDS, TABLE

from test_data_fixtures import WNIDS, write_cifar_pickles, write_image_tree

CIFAR10 = list(CIFAR10_CLASSES)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOOR_REPRO_CACHE", str(tmp_path / "cache"))


def _tree(root, classes, splits=("train", "test"), test_name="test"):
    for split in splits:
        write_image_tree(root, classes, 1, (split if split == "train" else test_name,), (8, 8))
    return root


def _refused(name, root, *parts, download=False):
    """Refused by the preflight check and by both splits' loads, the message holding every part (literally)."""
    match = ".*".join(re.escape(p) for p in parts)
    with pytest.raises(DatasetUnavailable, match=match):
        check_dataset_available(name, root, download=download)
    for split in ("train", "test"):
        with pytest.raises(DatasetUnavailable, match=match):
            load_dataset(name, split, root, download=download)


def test_the_class_lists_are_the_datasets_own():
    assert len(CIFAR100_CLASSES) == 100 == len(set(CIFAR100_CLASSES))
    assert list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES)  # the meta file's order: alphabetical
    assert CIFAR100_CLASSES[:3] == ("apple", "aquarium_fish", "baby") and CIFAR100_CLASSES[-1] == "worm"
    assert list(IMAGENET12_WNIDS) == sorted(IMAGENET12_WNIDS) and IMAGENET12_WNIDS[0] == "n01440764"  # tench
    assert all(info.classes is not None and len(info.classes) == info.num_classes for info in TABLE.values())


def test_a_partly_extracted_cifar10_tree_with_9_classes_is_refused(tmp_path):
    root = _tree(tmp_path / "data" / "cifar10-jpeg", CIFAR10[:9])
    _refused("cifar10", tmp_path / "data", f"{root / 'train'} has 9 class folders (airplane, automobile",
             "but cifar10 has 10 classes (airplane", "missing truck",
             download=True)  # a tree on disk is used, and checked, even when a download is allowed


def test_a_cifar10_tree_with_an_11th_class_is_refused(tmp_path):
    _tree(tmp_path, CIFAR10 + ["unicorn"])
    _refused("cifar10", tmp_path, "has 11 class folders", "not cifar10 classes: unicorn")


def test_a_tree_of_other_class_names_is_refused(tmp_path):
    _tree(tmp_path, [f"class_{i}" for i in range(10)])
    _refused("cifar10", tmp_path, "has 10 class folders (class_0, class_1", "cifar10 has 10 classes (airplane",
             "missing airplane, automobile", "not cifar10 classes: class_0")


def test_a_cifar100_tree_missing_one_class_is_refused(tmp_path):
    _tree(tmp_path, [c for c in CIFAR100_CLASSES if c != "otter"])
    _refused("cifar100", tmp_path, "has 99 class folders", "cifar100 has 100 classes", "missing otter")


def test_a_test_split_missing_a_class_folder_is_an_error_naming_it(tmp_path):
    _tree(tmp_path, CIFAR10, ("train",))
    _tree(tmp_path, [c for c in CIFAR10 if c != "bird"], ("test",))
    _refused("cifar10", tmp_path, f"{tmp_path / 'test'} has no folder for class(es) bird of {tmp_path / 'train'}")


def test_a_gtsrb_tree_missing_a_class_is_named_and_numbers_match_numbers(tmp_path):
    _tree(tmp_path / "a", [c for c in GTSRB_CLASSES if c != "00005"])
    _refused("gtsrb", tmp_path / "a", "has 42 class folders", "missing 00005")
    _tree(tmp_path / "b", [str(c) for c in range(43)])  # "5" is class 00005
    assert load_dataset("gtsrb", "test", tmp_path / "b").labels.tolist() == list(range(43))
    _tree(tmp_path / "c", [str(c) for c in range(43)] + ["005"])
    _refused("gtsrb", tmp_path / "c", "one class twice: 005 and 5")


def test_imagenet12_needs_imagenets_first_12_wnids(tmp_path):
    _tree(tmp_path / "a", WNIDS[1:], test_name="val")  # the tree lacks tench: the first 12 would be shifted
    _refused("imagenet12", tmp_path / "a", "the first 12 class folders of", "missing n01440764")
    _tree(tmp_path / "b", ["n00000001"] + WNIDS, test_name="val")
    _refused("imagenet12", tmp_path / "b", "n00000001 sort among them but are not imagenet12 classes")
    _tree(tmp_path / "c", WNIDS, ("train",))
    _tree(tmp_path / "c", WNIDS[:12], ("val",), test_name="val")  # a val split of the 12 classes only is enough
    assert load_dataset("imagenet12", "test", tmp_path / "c", image_size=8).labels.tolist() == list(range(12))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickles_of_other_classes_are_refused(tmp_path, name):
    write_cifar_pickles(tmp_path, name, classes=[f"class_{i:03d}" for i in range(len(TABLE[name].classes))])
    folder = tmp_path / TABLE[name].torchvision_dir
    _refused(name, tmp_path, f"{folder}", "not " + name + "'s: class_000", "these are not " + name + "'s files")
    assert dataset_layout(name, tmp_path) == "torchvision"


def test_a_cifar_pickle_label_outside_the_classes_is_refused(tmp_path):
    write_cifar_pickles(tmp_path, "cifar10")
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    entry = pickle.loads(path.read_bytes())
    entry["labels"][2] = 10
    path.write_bytes(pickle.dumps(entry))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"a label of test_batch is outside 0 \.\.\. 9"):
        load_dataset("cifar10", "test", tmp_path)


def test_missing_cifar_pickles_are_named_before_any_compute(tmp_path):
    write_cifar_pickles(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetUnavailable, match="(?s)lacks data_batch_3 .*one of three ways"):
        check_dataset_available("cifar10", tmp_path, download=False)

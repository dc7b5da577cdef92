"""Beyond CIFAR-10: one class list for both splits, seeded class-balanced subsets, the dataset table and its
normalisation statistics, the ImageNet-12 resize/crop pipelines, and per-dataset "not found" messages."""
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from backdoor_repro.data import DATASETS, DatasetUnavailable, ImageSet, class_balanced_subset, load_dataset
from backdoor_repro.datasets import TABLE
from backdoor_repro.models import NORMALIZATIONS, normalization_stats

from backdoor_repro.datasets import CIFAR10_CLASSES

from test_data_fixtures import WNIDS, write_image_tree, write_imagenet_tree

CIFAR10 = list(CIFAR10_CLASSES)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOOR_REPRO_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------- one class list for both splits
def test_a_test_split_lacking_a_class_is_an_error_naming_it(tmp_path):
    """(Before: a warning, the other classes keeping their labels.) A test split without a class is not the
    dataset's."""
    root = write_image_tree(tmp_path, CIFAR10, 1, splits=("train",), size=(8, 8))
    write_image_tree(tmp_path, [c for c in CIFAR10 if c != "bird"], 1, splits=("test",), size=(8, 8))
    for split in ("train", "test"):
        with pytest.raises(DatasetUnavailable, match="no folder for class.* bird"):
            load_dataset("cifar10", split, root)


def test_a_class_only_the_test_split_has_is_an_error_naming_both_folders(tmp_path):
    root = write_image_tree(tmp_path, CIFAR10, 1, splits=("train",), size=(8, 8))
    write_image_tree(tmp_path, CIFAR10 + ["dog2"], 1, splits=("test",), size=(8, 8))
    for split in ("train", "test"):
        message = f"'dog2' is in {tmp_path / 'test'} but not in {tmp_path / 'train'}"
        with pytest.raises(DatasetUnavailable, match=re.escape(message)):
            load_dataset("cifar10", split, root)


def test_numbered_class_folders_are_ordered_by_number(tmp_path):
    root = write_image_tree(tmp_path, [str(c) for c in reversed(range(43))], per_class=1, size=(8, 8))
    ds = load_dataset("gtsrb", "test", root)
    assert ds.classes[2] == "2" and ds.classes[10] == "10" and ds.labels.tolist() == list(range(43))


# ---------------------------------------------------------------- seeded class-balanced subsets
def _indexed(n_per_class=50, classes=4):
    """A class-ordered set whose image ``i`` carries ``i`` in its first pixel row, to read back the picks."""
    n = n_per_class * classes
    images = torch.zeros(n, 3, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = torch.arange(n) % 256, torch.arange(n) // 256
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return ImageSet(images, labels, tuple("abcd"[:classes]), "x", "folder")


def _picks(sub):
    return (sub.images[:, 0, 0, 0].long() + 256 * sub.images[:, 0, 0, 1].long()).tolist()


def test_class_balanced_subset_draws_at_random_from_a_seeded_generator():
    data = _indexed()
    sub = class_balanced_subset(data, 5)
    picks = _picks(sub)
    assert torch.bincount(sub.labels).tolist() == [5] * 4 and picks == sorted(picks)  # index order kept
    assert picks != [c * 50 + i for c in range(4) for i in range(5)]  # not the first 5 of each class
    assert picks == _picks(class_balanced_subset(data, 5, seed=0))  # the default seed is 0
    assert picks != _picks(class_balanced_subset(data, 5, seed=1))
    rng = np.random.default_rng(0)  # the documented draw: one generator, class by class
    want = [int(i) for c in range(4) for i in rng.choice(np.arange(c * 50, c * 50 + 50), 5, replace=False)]
    assert picks == sorted(want)


# ---------------------------------------------------------------- the table and its statistics
def test_the_table_holds_every_dataset_with_consistent_classes_and_sizes():
    assert set(DATASETS) == set(TABLE) and "imagenet12" in DATASETS
    for info in TABLE.values():
        assert info.classes is None or len(info.classes) == info.num_classes
    assert TABLE["cifar100"].num_classes == 100 and TABLE["gtsrb"].num_classes == 43
    assert TABLE["imagenet12"].image_size == 224 and TABLE["cifar10"].image_size == 32


def test_normalization_stats_read_the_table_and_keep_the_present_values():
    dbd = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    for ds in ("cifar10", "cifar10-smoke", "an-ad-hoc-set"):  # DBD's CIFAR-10 values, as every run used
        assert normalization_stats("dbd", ds) == dbd
    # elsewhere "dbd" means the dataset's own statistics (DBD's code has CIFAR-10 configs only)
    assert normalization_stats("dbd", "cifar100") == ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    assert normalization_stats("dbd", "gtsrb") == ((0.3337, 0.3064, 0.3171), (0.2672, 0.2564, 0.2629))
    assert normalization_stats("backdoorbench", "cifar10") == ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
    assert normalization_stats("backdoorbench", "gtsrb") == ((0, 0, 0), (1, 1, 1))
    assert normalization_stats("fct", "cifar100")[0][0] == 0.5070751592371323  # FCT's unrounded CIFAR-100 mean
    assert normalization_stats("tr", "imagenet12") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert normalization_stats("tr", "cifar10") == ((0, 0, 0), (1, 1, 1))  # T&R: ToTensor only
    with pytest.raises(ValueError, match="no normalisation for dataset 'imagenet12'"):
        normalization_stats("dbd", "imagenet12")  # DBD's code has no ImageNet config
    with pytest.raises(ValueError, match="unknown normalization"):
        normalization_stats("none", "cifar10")
    assert {"dbd", "backdoorbench", "fct", "tr"} == set(NORMALIZATIONS)


# ---------------------------------------------------------------- ImageNet-12
def test_imagenet12_pipelines_match_the_official_transforms(tmp_path):
    import torchvision.transforms as T

    base = write_imagenet_tree(tmp_path / "data")
    train = load_dataset("imagenet12", "train", tmp_path / "data")
    test = load_dataset("imagenet12", "test", tmp_path / "data")
    squashed = load_dataset("imagenet12", "test", tmp_path / "data", pipeline="squash_crop")
    with Image.open(base / "train" / WNIDS[3] / "0001.JPEG") as im:  # T&R: img.resize((256, 256)), CenterCrop(224)
        want = np.asarray(T.CenterCrop(224)(im.convert("RGB").resize((256, 256))))
    assert np.array_equal(train.images[3 * 2 + 1].permute(1, 2, 0).numpy(), want)
    with Image.open(base / "val" / WNIDS[5] / "0000.JPEG") as im:  # T&R's clean test set: Resize(256), CenterCrop
        rgb = im.convert("RGB")
        want = np.asarray(T.Compose([T.Resize(256), T.CenterCrop(224)])(rgb))
        assert rgb.size[0] != rgb.size[1]  # a non-square source: the two pipelines differ
    assert np.array_equal(test.images[5].permute(1, 2, 0).numpy(), want)
    assert not torch.equal(squashed.images[5], test.images[5]) and squashed.images.shape == test.images.shape


def test_imagenet12_takes_the_first_12_sorted_wnids_of_train(tmp_path):
    write_imagenet_tree(tmp_path / "data", wnids=list(reversed(WNIDS)))  # creation order does not matter
    ds = load_dataset("imagenet12", "test", tmp_path / "data")
    assert list(ds.classes) == sorted(WNIDS)[:12]
    write_image_tree(tmp_path / "few", WNIDS[:5], 1, ("train", "val"))
    with pytest.raises(DatasetUnavailable, match="5 class folders; imagenet12 takes the first 12"):
        load_dataset("imagenet12", "train", tmp_path / "few")


# ---------------------------------------------------------------- errors name this dataset's paths
def test_missing_messages_name_the_paths_of_that_dataset(tmp_path):
    msgs = {}
    for name in ("cifar10", "cifar100", "gtsrb", "imagenet12"):
        with pytest.raises(DatasetUnavailable) as err:
            load_dataset(name, "train", tmp_path)
        msgs[name] = str(err.value)
    assert "three ways" in msgs["cifar10"] and str(tmp_path / "cifar-10-batches-py") in msgs["cifar10"]
    assert str(tmp_path / "cifar100-jpeg") in msgs["cifar100"] and "cifar-100-python" in msgs["cifar100"]
    assert "cifar10" not in msgs["gtsrb"] and str(tmp_path / "gtsrb") in msgs["gtsrb"]
    assert "GT-final_test.csv" in msgs["gtsrb"]
    assert "--download" not in msgs["imagenet12"] and "val/<class>/" in msgs["imagenet12"]
    assert str(tmp_path / "imagenet") in msgs["imagenet12"] and "cifar" not in msgs["imagenet12"]
    with pytest.raises(DatasetUnavailable, match="imagenet12"):  # nothing to download: still a clear error
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_dataset("imagenet12", "train", tmp_path, download=True)


def test_keys_carry_the_normalisation_statistics_of_the_dataset():
    """The model context names the scheme and the statistics themselves, so a CIFAR-100 or GTSRB model normalised
    with CIFAR-10's values is never reused, and another scheme is another key, also for the clean model that
    adversarial poisoning perturbs against."""
    from backdoor_repro.spec import RunSpec
    base = RunSpec(dataset="cifar10", train_per_class=None, model="resnet18", width=8, num_classes=10, attack="badnets_dbd_2x2")
    assert base.context_stage().config["mean"] == normalization_stats("dbd", "cifar10")[0]
    for dataset, classes in (("cifar100", 100), ("gtsrb", 43)):
        spec = RunSpec(dataset=dataset, train_per_class=None, model="resnet18", width=8, num_classes=classes, attack="badnets_dbd_2x2")
        mean, std = normalization_stats("dbd", dataset)
        assert (spec.context_stage().config["mean"], spec.context_stage().config["std"]) == (mean, std)
    bb = base.with_(normalization="backdoorbench")
    assert bb.context_stage().config["normalization"] == "backdoorbench"
    assert bb.no_defense_stage() != base.no_defense_stage()
    lc = base.with_attack("lc_dbd")
    assert lc.with_(normalization="backdoorbench").data_stage() != lc.data_stage()
"""GTSRB through its official release layout, torchvision's exact on-disk layout and an image-folder tree, on
fixtures the tests write (43 classes, images of varied sizes as in the real set, fake pixels), and a T&R run on 43
classes: nothing in the library may assume 10 classes or square source images. The checks of both CSV layouts (class
folders, the test CSV) are in ``test_data_gtsrb_checks``."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from backdoor_repro.cache import ArtifactCache
from backdoor_repro.data import dataset_layout, layout_deviation, load_dataset
from backdoor_repro.defenses import get_defense
from backdoor_repro.gtsrb import RELEASE_TRAIN, deviation, find_layout, split_files
from backdoor_repro.pipeline import run_data
from backdoor_repro.spec import Holdout, RunSpec
from backdoor_repro.train import TrainConfig

CLASSES = 43


def _image(rng):
    h, w = rng.integers(15, 60, 2)  # GTSRB images are 15 to 250 px, rarely square
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"


def _row(name, im, label=None):
    return f"{name};{im.width};{im.height};1;1;{im.width - 1};{im.height - 1}" + ("" if label is None else f";{label}")


def write_torchvision_gtsrb(root, per_class=3):
    """root/gtsrb/GTSRB/Training/<class:05d>/*.ppm (+ the per-class CSVs the archive has), root/gtsrb/GT-final_test.csv
    and root/gtsrb/GTSRB/Final_Test/Images/*.ppm, as torchvision.datasets.GTSRB reads them."""
    rng = np.random.default_rng(0)
    base = root / "gtsrb"
    for c in range(CLASSES):
        d = base / "GTSRB" / "Training" / f"{c:05d}"
        d.mkdir(parents=True)
        for i in range(per_class):
            _image(rng).save(d / f"{i:05d}_00000.ppm")
        (d / f"GT-{c:05d}.csv").write_text(HEADER + "\n")
    test_dir = base / "GTSRB" / "Final_Test" / "Images"
    test_dir.mkdir(parents=True)
    rows, labels = [HEADER], []
    for i in range(2 * CLASSES):
        im, label = _image(rng), int(rng.integers(0, CLASSES))
        im.save(test_dir / f"{i:05d}.ppm")
        rows.append(_row(f"{i:05d}.ppm", im, label))
        labels.append(label)
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return labels


RELEASE_CSV_PLACES = {"Images": "GTSRB/Final_Test/Images", "Final_Test": "GTSRB/Final_Test", "GTSRB": "GTSRB",
                      "root": "."}


def write_release_gtsrb(root, per_class=2, test_per_class=1, csv_in="root", seed=3):
    """The official release unpacked into ``root``: ``GTSRB/Final_Training/Images/<class:05d>/<track>_<i>.ppm`` with
    ``GT-<class>.csv`` (all eight columns), ``GTSRB/Final_Test/Images/<i:05d>.ppm`` with ``GT-final_test.test.csv``
    (no ClassId) and ``GT-final_test.csv`` (with ClassId) where ``csv_in`` says (a key of RELEASE_CSV_PLACES: the
    test-labels zip unpacked beside the images, in Final_Test, in GTSRB or in ``root``). Test images are in a
    shuffled class order. Returns the test labels in file order."""
    rng = np.random.default_rng(seed)
    for c in range(CLASSES):
        d = root / "GTSRB" / "Final_Training" / "Images" / f"{c:05d}"
        d.mkdir(parents=True)
        rows = [HEADER]
        for i in range(per_class):
            im, name = _image(rng), f"{i // 2:05d}_{i % 2:05d}.ppm"
            im.save(d / name)
            rows.append(_row(name, im, c))
        (d / f"GT-{c:05d}.csv").write_text("\n".join(rows) + "\n")
    test_dir = root / "GTSRB" / "Final_Test" / "Images"
    test_dir.mkdir(parents=True)
    labels = [int(c) for c in rng.permutation(np.repeat(np.arange(CLASSES), test_per_class))]
    rows, unlabelled = [HEADER], [HEADER.rsplit(";", 1)[0]]
    for i, label in enumerate(labels):
        im = _image(rng)
        im.save(test_dir / f"{i:05d}.ppm")
        rows.append(_row(f"{i:05d}.ppm", im, label))
        unlabelled.append(_row(f"{i:05d}.ppm", im))
    (test_dir / "GT-final_test.test.csv").write_text("\n".join(unlabelled) + "\n")
    (root / RELEASE_CSV_PLACES[csv_in] / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return labels


def test_torchvision_layout_loads_43_classes_resized_to_32(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOOR_REPRO_CACHE", str(tmp_path / "cache"))
    test_labels = write_torchvision_gtsrb(tmp_path / "data")
    train = load_dataset("gtsrb", "train", tmp_path / "data")
    test = load_dataset("gtsrb", "test", tmp_path / "data")
    assert train.images.shape == (3 * CLASSES, 3, 32, 32) and train.num_classes == CLASSES
    assert train.layout == test.layout == train.order == "torchvision"
    assert torch.bincount(train.labels, minlength=CLASSES).tolist() == [3] * CLASSES
    assert test.labels.tolist() == test_labels and test.images.shape[2:] == (32, 32)
    with Image.open(tmp_path / "data/gtsrb/GTSRB/Training/00007/00001_00000.ppm") as im:
        want = np.asarray(im.convert("RGB").resize((32, 32), Image.BILINEAR))
    assert np.array_equal(train.images[7 * 3 + 1].permute(1, 2, 0).numpy(), want)


@pytest.mark.parametrize("csv_in", sorted(RELEASE_CSV_PLACES))
def test_the_official_release_layout_loads_43_classes_with_their_labels(tmp_path, monkeypatch, csv_in):
    monkeypatch.setenv("BACKDOOR_REPRO_CACHE", str(tmp_path / "cache"))
    test_labels = write_release_gtsrb(tmp_path / "data", csv_in=csv_in)
    assert dataset_layout("gtsrb", tmp_path / "data") == "release"
    train, test = load_dataset("gtsrb", "train", tmp_path / "data"), load_dataset("gtsrb", "test", tmp_path / "data")
    assert train.layout == train.order == test.layout == "release" and train.num_classes == test.num_classes == CLASSES
    assert train.labels.tolist() == [c for c in range(CLASSES) for _ in range(2)] and train.classes[42] == "00042"
    assert test.labels.tolist() == test_labels and sorted(test_labels) == list(range(CLASSES))
    assert train.images.shape == (2 * CLASSES, 3, 32, 32) and test.images.shape == (CLASSES, 3, 32, 32)
    with Image.open(tmp_path / "data/GTSRB/Final_Training/Images/00017/00000_00001.ppm") as im:
        want = np.asarray(im.convert("RGB").resize((32, 32), Image.BILINEAR))
    assert np.array_equal(train.images[17 * 2 + 1].permute(1, 2, 0).numpy(), want)
    with Image.open(tmp_path / "data/GTSRB/Final_Test/Images/00005.ppm") as im:
        want = np.asarray(im.convert("RGB").resize((32, 32), Image.BILINEAR))
    assert np.array_equal(test.images[5].permute(1, 2, 0).numpy(), want)
    assert train.subset([0, 3]).layout == train.head(2).layout == "release"  # a subset still names its files


@pytest.mark.parametrize("root_is", ["data", "data/GTSRB"])
def test_the_release_is_found_where_it_is_unpacked_and_wins_over_torchvisions_set(tmp_path, monkeypatch, root_is):
    monkeypatch.setenv("BACKDOOR_REPRO_CACHE", str(tmp_path / "cache"))
    write_torchvision_gtsrb(tmp_path / "data", per_class=1)  # data/gtsrb/GTSRB/Training: 43 images
    write_release_gtsrb(tmp_path / "data", per_class=2)  # data/GTSRB/..., data/GT-final_test.csv
    train = load_dataset("gtsrb", "train", tmp_path / root_is)
    assert train.layout == "release" and len(train) == 2 * CLASSES
    assert len(load_dataset("gtsrb", "test", tmp_path / root_is)) == CLASSES


def test_layout_deviation_names_torchvisions_training_set_with_its_count(tmp_path):
    write_torchvision_gtsrb(tmp_path / "tv", per_class=2)
    assert dataset_layout("gtsrb", tmp_path / "tv") == "torchvision"
    line = layout_deviation("gtsrb", tmp_path / "tv")
    assert "torchvision's download (GTSRB/Training, 86 images)" in line and "39,209" in line
    assert "about 26,640 images" in layout_deviation("gtsrb", tmp_path / "nothing", download=True)
    assert layout_deviation("gtsrb", tmp_path / "nothing") is None and layout_deviation("cifar10", tmp_path) is None
    assert deviation("release", RELEASE_TRAIN) is None and "86 images" in deviation("release", 86)
    write_release_gtsrb(tmp_path / "release", per_class=1)
    assert "43 images, not the official release's 39,209" in layout_deviation("gtsrb", tmp_path / "release")


def test_torchvisions_layout_is_read_as_torchvision_reads_it(tmp_path):
    """The files and labels, in torchvision's order (no decoding): read without torchvision since this version."""
    import torchvision.datasets as tvd

    write_torchvision_gtsrb(tmp_path, per_class=2)
    layout = find_layout(tmp_path)
    for split in ("train", "test"):
        files, labels = split_files(layout, split)
        assert [(str(f), y) for f, y in zip(files, labels)] == tvd.GTSRB(tmp_path, split=split)._samples


def test_image_folder_layout_loads_too(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOOR_REPRO_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(1)
    for split, n in (("train", 2), ("test", 1)):
        for c in range(CLASSES):
            d = tmp_path / "data" / "gtsrb" / split / f"{c:05d}"
            d.mkdir(parents=True)
            for i in range(n):
                _image(rng).save(d / f"{i}.png")
    train = load_dataset("gtsrb", "train", tmp_path / "data")
    assert train.images.shape == (2 * CLASSES, 3, 32, 32) and train.num_classes == CLASSES and train.order == "folder"
    assert train.layout == "folder" and dataset_layout("gtsrb", tmp_path / "data") == "folder"


def test_trap_and_replace_runs_on_43_classes(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOOR_REPRO_CACHE", str(tmp_path / "cache"))
    write_torchvision_gtsrb(tmp_path / "data", per_class=6)
    train, test = load_dataset("gtsrb", "train", tmp_path / "data"), load_dataset("gtsrb", "test", tmp_path / "data")
    d = get_defense("trap_and_replace")
    spec = RunSpec("gtsrb", None, "wrn16", 4, CLASSES, "grid3_tr", {"target": 1}, 0, 0,
                   TrainConfig(epochs=1, batch_size=32, optimizer="adam", lr=1e-3, augmentation="none"),
                   d.holdout_for("smoke", "gtsrb")).bound_to(train)
    assert spec.holdout.rule == "shuffled"  # T&R shuffles GTSRB (class-ordered on disk) before splitting
    data = run_data(spec, train, test, ArtifactCache(tmp_path / "artifacts"))
    assert data.train.count == int(0.1 * len(train)) and (data.train.labels[data.train.poison_mask] == 1).all()
    assert len(set(data.clean_holdout.labels.tolist())) > 10  # a random holdout, not the last classes
    result = d.run(spec, data, d.small_config("smoke"), ArtifactCache(tmp_path / "artifacts"))
    with torch.no_grad():
        assert result.model(test.images[:4].float() / 255).shape == (4, CLASSES)

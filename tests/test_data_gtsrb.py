"""GTSRB through torchvision's exact on-disk layout and through an image-folder tree, on a fixture the test
writes (43 classes, images of varied sizes as in the real set, fake pixels), and a T&R run on 43 classes:
nothing in the library may assume 10 classes or square source images."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from backdoor_repro.cache import ArtifactCache
from backdoor_repro.data import load_dataset
from backdoor_repro.defenses import get_defense
from backdoor_repro.pipeline import run_data
from backdoor_repro.spec import Holdout, RunSpec
from backdoor_repro.train import TrainConfig

CLASSES = 43


def _image(rng):
    h, w = rng.integers(15, 60, 2)  # GTSRB images are 15 to 250 px, rarely square
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


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
        (d / f"GT-{c:05d}.csv").write_text("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n")
    test_dir = base / "GTSRB" / "Final_Test" / "Images"
    test_dir.mkdir(parents=True)
    rows, labels = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"], []
    for i in range(2 * CLASSES):
        im, label = _image(rng), int(rng.integers(0, CLASSES))
        im.save(test_dir / f"{i:05d}.ppm")
        rows.append(f"{i:05d}.ppm;{im.width};{im.height};1;1;{im.width - 1};{im.height - 1};{label}")
        labels.append(label)
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return labels


def test_torchvision_layout_loads_43_classes_resized_to_32(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOOR_REPRO_CACHE", str(tmp_path / "cache"))
    test_labels = write_torchvision_gtsrb(tmp_path / "data")
    train = load_dataset("gtsrb", "train", tmp_path / "data")
    test = load_dataset("gtsrb", "test", tmp_path / "data")
    assert train.images.shape == (3 * CLASSES, 3, 32, 32) and train.num_classes == CLASSES
    assert torch.bincount(train.labels, minlength=CLASSES).tolist() == [3] * CLASSES
    assert test.labels.tolist() == test_labels and test.images.shape[2:] == (32, 32)
    with Image.open(tmp_path / "data/gtsrb/GTSRB/Training/00007/00001_00000.ppm") as im:
        want = np.asarray(im.convert("RGB").resize((32, 32), Image.BILINEAR))
    assert np.array_equal(train.images[7 * 3 + 1].permute(1, 2, 0).numpy(), want)


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
    assert len(set(data.holdout.labels.tolist())) > 10  # a random holdout, not the last classes
    result = d.run(spec, data, d.shortened(d.config("smoke")), ArtifactCache(tmp_path / "artifacts"))
    with torch.no_grad():
        assert result.model(test.images[:4].float() / 255).shape == (4, CLASSES)

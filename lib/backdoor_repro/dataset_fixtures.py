"""Small copies of a dataset in its exact on-disk layout, made from the bundled CIFAR-10 images: what the dry run of a
fast / paper profile on another dataset loads, through the real loaders (``run_all.sh --profile fast --dataset gtsrb
--dry-run``). Only the layout is the dataset's (folders, file names and formats, label files, class names, the image
sizes it stores); the pixels are bundled CIFAR-10 images, relabelled by position. Layouts written:

* ``cifar100``: torchvision's ``cifar-100-python/{train,test,meta}`` pickles (read by :mod:`.cifar_files`), rows in an
  interleaved class order as torchvision's files are;
* ``gtsrb``: the official release (:mod:`.gtsrb`), ``GTSRB/Final_Training/Images/000NN/*.ppm`` with ``GT-000NN.csv``
  per class, ``GTSRB/Final_Test/Images/*.ppm`` (classes interleaved) with ``GT-final_test.csv``; images of varied,
  non-square sizes, as GTSRB's are;
* ``imagenet12``: an ImageNet image-folder tree, ``imagenet/{train,val}/<WNID>/*.JPEG`` (the first 12 WNIDs), non-square
  images that the loader squashes / resizes and crops to 224 px.

A copy is written once per folder, atomically (into a temporary sibling, then renamed), and reused.
"""
from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from .datasets import dataset_info

FIXTURE_LAYOUTS = {
    "cifar100": "torchvision's cifar-100-python pickles",
    "gtsrb": "the official GTSRB release (Final_Training + GT-000NN.csv, Final_Test + GT-final_test.csv)",
    "imagenet12": "an ImageNet image-folder tree (train/ and val/, WNID folders, JPEG files)",
}
GTSRB_HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"


def write_fixture(name: str, root: str | os.PathLike, train_per_class: int, test_per_class: int) -> Path:
    """The data root of a small ``name`` copy under ``root`` (written if not there yet): ``train_per_class`` training
    and ``test_per_class`` test images of every class. Pass the root to ``load_dataset(name, split, root)``."""
    if name not in FIXTURE_LAYOUTS:
        raise ValueError(f"no fixture layout for {name!r}; written: {', '.join(FIXTURE_LAYOUTS)}")
    folder = Path(root) / f"{name}-{train_per_class}-{test_per_class}"
    if folder.is_dir():
        return folder
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for split, per_class in (("train", train_per_class), ("test", test_per_class)):
            images, labels = _sources(split, dataset_info(name).num_classes, per_class)
            WRITERS[name](tmp, split, images, labels)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, folder)
    except OSError:
        if not folder.is_dir():  # not another process's copy renamed into place first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _sources(split: str, classes: int, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """``classes x per_class`` bundled images (HWC uint8, cycling through the split) and their new labels, classes
    interleaved (label ``i mod classes``), as torchvision's CIFAR order is."""
    from .data import load_dataset
    bundled = load_dataset("cifar10-smoke", split)
    n = classes * per_class
    index = np.arange(n) % len(bundled)
    images = bundled.images[index].permute(0, 2, 3, 1).contiguous().numpy()
    return images, np.arange(n) % classes


def _varied(image: np.ndarray, i: int, low: int, high: int) -> Image.Image:
    """``image`` resized to a non-square size between ``low`` and ``high`` pixels that varies with ``i``."""
    w, h = low + (7 * i) % (high - low), low + (11 * i + 3) % (high - low)
    return Image.fromarray(image).resize((w, h), Image.BILINEAR)


def _cifar100(root: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    base = root / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # CHW rows, as the release stores them
    entry = {"batch_label": f"{split}ing batch 1 of 1", "fine_labels": labels.tolist(),
             "coarse_labels": (labels // 5).tolist(), "data": rows,
             "filenames": [f"fixture_{split}_{i}.png" for i in range(len(labels))]}
    (base / split).write_bytes(pickle.dumps(entry))
    info = dataset_info("cifar100")
    (base / "meta").write_bytes(pickle.dumps({"fine_label_names": list(info.classes),
                                              "coarse_label_names": [f"coarse_{i}" for i in range(20)]}))


def _gtsrb_row(name: str, im: Image.Image, label: int) -> str:
    return f"{name};{im.width};{im.height};1;1;{im.width - 1};{im.height - 1};{label}"


def _gtsrb(root: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    base = root / "GTSRB"
    if split == "test":
        folder = base / "Final_Test" / "Images"
        folder.mkdir(parents=True)
        rows = [GTSRB_HEADER]
        for i, (image, label) in enumerate(zip(images, labels)):
            im = _varied(image, i, 25, 60)
            im.save(folder / f"{i:05d}.ppm")
            rows.append(_gtsrb_row(f"{i:05d}.ppm", im, int(label)))
        (folder / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
        return
    for c in range(dataset_info("gtsrb").num_classes):
        folder = base / "Final_Training" / "Images" / f"{c:05d}"
        folder.mkdir(parents=True)
        rows = [GTSRB_HEADER]
        for k, i in enumerate(np.flatnonzero(labels == c)):
            im, name = _varied(images[i], int(i), 25, 60), f"{k // 30:05d}_{k % 30:05d}.ppm"  # track, image
            im.save(folder / name)
            rows.append(_gtsrb_row(name, im, c))
        (folder / f"GT-{c:05d}.csv").write_text("\n".join(rows) + "\n")


def _imagenet12(root: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    wnids = dataset_info("imagenet12").classes
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / "imagenet" / ("train" if split == "train" else "val") / wnids[label]
        folder.mkdir(parents=True, exist_ok=True)
        _varied(image, i, 64, 120).save(folder / f"{wnids[label]}_{i:05d}.JPEG", format="JPEG", quality=90)


WRITERS = {"cifar100": _cifar100, "gtsrb": _gtsrb, "imagenet12": _imagenet12}

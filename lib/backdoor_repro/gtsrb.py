"""GTSRB's two CSV-labelled file layouts: which one lies under a data root, and its files and labels, checked.

* ``release``, the benchmark's own archives unpacked: ``GTSRB/Final_Training/Images/000NN/*.ppm`` with a
  ``GT-000NN.csv`` per class (39,209 training images), ``GTSRB/Final_Test/Images/*.ppm`` (12,630) and the test
  labels ``GT-final_test.csv`` (GTSRB_Final_Test_GT.zip; looked for beside the images, in ``Final_Test/``, in
  ``GTSRB/`` and beside it). The images folder also holds ``GT-final_test.test.csv``: the same rows without ClassId.
  ``GTSRB/`` may be the data root itself, or lie in it directly, in ``gtsrb/`` or in ``gtsrb/GTSRB/``.
* ``torchvision``, what ``torchvision.datasets.GTSRB`` downloads into ``<root>/gtsrb``: ``GTSRB/Training/000NN/``
  (GTSRB-Training_fixed.zip, about 26,640 images: another, smaller training set than the release's), the release's
  test images and ``gtsrb/GT-final_test.csv``.

Training labels are the class folders' numbers; the folders must be the 43 classes exactly (torchvision numbers the
folders it finds in order, so a missing one would shift every later label). Test labels are the CSV's ClassId; the
CSV must list exactly the test images on disk. Nothing here decodes an image."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from .class_folders import class_dirs, match_classes
from .datasets import DatasetIncomplete, DatasetUnavailable, dataset_info

TEST_CSV = "GT-final_test.csv"
UNLABELLED_CSV = "GT-final_test.test.csv"
RELEASE_TRAIN, RELEASE_TEST = 39_209, 12_630
TORCHVISION_TRAIN = 26_640  # GTSRB-Training_fixed.zip, as torchvision downloads it
LAYOUTS = {"release": "the official GTSRB release (Final_Training, Final_Test + GT-final_test.csv)",
           "torchvision": "torchvision's GTSRB download (GTSRB/Training, GTSRB-Training_fixed.zip)"}


@dataclass(frozen=True)
class Layout:
    name: str  # a key of LAYOUTS
    train_dir: Path  # holds the class folders 00000 ... 00042
    test_dir: Path  # the test images
    csv_candidates: tuple[Path, ...]  # where GT-final_test.csv may lie, in the order tried

    @property
    def test_csv(self) -> Path | None:
        return next((p for p in self.csv_candidates if p.is_file()), None)


def find_layout(root: Path) -> Layout | None:
    """The release if its ``Final_Training/Images`` is under ``root``; else torchvision's if ``root/gtsrb`` is a
    folder (complete or not: :func:`split_files` names what is missing); else None."""
    for base in (root, root / "GTSRB", root / "gtsrb", root / "gtsrb" / "GTSRB"):
        if (base / "Final_Training" / "Images").is_dir():
            test = base / "Final_Test" / "Images"
            return Layout("release", base / "Final_Training" / "Images", test,
                          (test / TEST_CSV, test.parent / TEST_CSV, base / TEST_CSV, base.parent / TEST_CSV))
    base = root / "gtsrb"
    if base.is_dir():
        return Layout("torchvision", base / "GTSRB" / "Training", base / "GTSRB" / "Final_Test" / "Images",
                      (base / TEST_CSV,))
    return None


def split_files(layout: Layout, split: str) -> tuple[list[Path], list[int]]:
    """``(image paths, labels)`` of ``split`` in the layout's order (training: class by class, files by name;
    test: the CSV's rows), after the checks of the module docstring."""
    return _train_files(layout) if split == "train" else _test_files(layout)


def check_layout(layout: Layout) -> None:
    """Both splits' checks, without decoding: for a check before any compute."""
    split_files(layout, "train")
    split_files(layout, "test")


def _ppm_files(folder: Path) -> list[Path]:
    return sorted(folder / e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(".ppm"))


def _train_files(layout: Layout) -> tuple[list[Path], list[int]]:
    if not layout.train_dir.is_dir():
        raise DatasetIncomplete(f"{layout.train_dir} (the training images of {LAYOUTS[layout.name]}) is missing")
    folders = match_classes(dataset_info("gtsrb"), class_dirs(layout.train_dir), layout.train_dir)
    files, labels = [], []
    for label, folder in enumerate(folders):
        found = _ppm_files(layout.train_dir / folder)
        if not found:
            raise DatasetUnavailable(f"{layout.train_dir / folder} holds no .ppm images: unpack the archive again")
        if layout.name == "release":
            _check_class_csv(layout.train_dir / folder, label, found)
        files += found
        labels += [label] * len(found)
    return files, labels


def _check_class_csv(folder: Path, label: int, files: list[Path]) -> None:
    """The release's ``GT-000NN.csv``, where present, must list this folder's images, each with its ClassId."""
    path = folder / f"GT-{folder.name}.csv"
    if not path.is_file():
        return
    rows = read_rows(path, ("Filename", "ClassId"))
    listed, on_disk = {r["Filename"] for r in rows}, {f.name for f in files}
    if listed != on_disk:
        odd = sorted(listed ^ on_disk)[:3]
        raise DatasetUnavailable(f"{path} lists {len(listed)} images, {folder} holds {len(on_disk)} .ppm files "
                                 f"(e.g. {', '.join(odd)} only in one of them): a partly unpacked or edited copy")
    wrong = [r["Filename"] for r in rows if _class_id(r, path) != label]
    if wrong:
        raise DatasetUnavailable(f"{path} gives {wrong[0]} (and {len(wrong) - 1} more) another ClassId than its "
                                 f"folder's ({label}): the folder is not class {folder.name}")


def _test_files(layout: Layout) -> tuple[list[Path], list[int]]:
    if not layout.test_dir.is_dir():
        raise DatasetIncomplete(f"{layout.test_dir} (the test images of {LAYOUTS[layout.name]}) is missing")
    path = layout.test_csv
    if path is None:
        looked = ", ".join(str(p.parent) for p in layout.csv_candidates)
        also = (f"; {UNLABELLED_CSV} beside the images has no ClassId column" if
                (layout.test_dir / UNLABELLED_CSV).is_file() else "")
        raise DatasetIncomplete(f"no {TEST_CSV} (the test labels, GTSRB_Final_Test_GT.zip) in {looked}{also}")
    rows = read_rows(path, ("Filename", "ClassId"))
    listed = [r["Filename"] for r in rows]
    on_disk = {f.name for f in _ppm_files(layout.test_dir)}
    absent = [f for f in listed if f not in on_disk]
    unlisted = sorted(on_disk - set(listed))
    if absent or unlisted or len(set(listed)) != len(listed):
        why = (f"{len(unlisted)} images have no row (e.g. {unlisted[0]}): a truncated CSV or another copy's"
               if unlisted else f"{absent[0]} (and {len(absent) - 1} more) is not there" if absent
               else "a file is listed twice")
        raise DatasetUnavailable(f"{path} has {len(listed)} rows, {layout.test_dir} holds {len(on_disk)} .ppm images: "
                                 f"{why}. Use the {TEST_CSV} that belongs to these images")
    return [layout.test_dir / f for f in listed], [_class_id(r, path) for r in rows]


def read_rows(path: Path, columns: tuple[str, ...]) -> list[dict]:
    """The rows of a GTSRB annotation CSV (``;``-separated, a header line); an error naming a missing column."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, delimiter=";", skipinitialspace=True)
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        missing = [c for c in columns if c not in header]
        if missing:
            hint = (f"; {UNLABELLED_CSV}, shipped beside the test images, is the test list without labels: the labels "
                    f"are in {TEST_CSV} (GTSRB_Final_Test_GT.zip)") if "ClassId" in missing else ""
            raise DatasetUnavailable(f"{path} has no {' or '.join(missing)} column (its columns: "
                                     f"{';'.join(header) or 'none, an empty file'}){hint}")
        return [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]


def _class_id(row: dict, path: Path) -> int:
    value = row["ClassId"]
    if not value.isdigit() or int(value) >= len(dataset_info("gtsrb").classes):
        raise DatasetUnavailable(f"{path}: ClassId {value!r} of {row['Filename']} is not a GTSRB class (0 ... 42)")
    return int(value)


def release_hint(base: Path) -> str:
    """Where the release was looked for under ``base``, for the "not found" message."""
    places = ", ".join(str(b) for b in (base, base / "GTSRB", base / "gtsrb", base / "gtsrb" / "GTSRB"))
    return (f"or at the official release: looked for Final_Training/Images/000NN/ and Final_Test/Images/ + {TEST_CSV} "
            f"in {places}")


def deviation(layout: str | None, train_images: int | None) -> str | None:
    """The line a GTSRB run prints when its training set is not the release's 39,209 images (None when it is)."""
    if layout == "release" and train_images == RELEASE_TRAIN:
        return None
    if layout == "torchvision" or layout is None:
        count = f"{train_images:,}" if train_images else f"about {TORCHVISION_TRAIN:,}"
        return (f"GTSRB training set: torchvision's download (GTSRB/Training, {count} images), not the official "
                f"release's Final_Training ({RELEASE_TRAIN:,}) that the papers' code reads; the {RELEASE_TEST:,} test "
                "images are the release's")
    if train_images == RELEASE_TRAIN:
        return None
    where = "an image-folder tree" if layout == "folder" else LAYOUTS.get(layout, layout)
    return (f"GTSRB training set: {where} with {train_images:,} images, not the official release's {RELEASE_TRAIN:,}")

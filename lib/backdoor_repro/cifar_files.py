"""torchvision's CIFAR-10 / CIFAR-100 files (``cifar-10-batches-py``, ``cifar-100-python``), read and checked.

The pickles are read directly (batches in file order, CHW rows to HWC), so a copy whose checksums differ from the
official release (a test fixture) loads too, with a warning. The meta file's class names must be the dataset's own
(:mod:`backdoor_repro.datasets`) and every label one of them."""
from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np

from .datasets import DatasetIncomplete, DatasetUnavailable, DatasetInfo

PICKLES = {"cifar10": ({"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                       "batches.meta", "label_names"),
           "cifar100": ({"train": ["train"], "test": ["test"]}, "meta", "fine_label_names")}
LAYOUT_TEXT = {"cifar10": "data_batch_1 ... data_batch_5, test_batch, batches.meta",
               "cifar100": "train, test, meta"}


def check_files(info: DatasetInfo, base: Path, splits=("train", "test")) -> list[str]:
    """The class names of the meta file, after checking that ``splits``' files are there and the names are
    ``info.classes`` (count and names)."""
    files, meta, key = PICKLES[info.name]
    missing = [f for s in splits for f in files[s]] + [meta]
    missing = [f for f in missing if not (base / f).is_file()]
    if missing:
        raise DatasetIncomplete(f"{base} lacks {', '.join(missing)} (torchvision's {info.name} layout: "
                                f"{LAYOUT_TEXT[info.name]})")
    try:
        with open(base / meta, "rb") as fh:
            classes = [str(c) for c in pickle.load(fh, encoding="latin1")[key]]
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as error:
        raise ValueError(f"cannot read the class names ({key}) of {base / meta}: {error!r}") from error
    if info.classes is not None and tuple(classes) != info.classes:
        odd = [c for c in classes if c not in info.classes][:4]
        raise DatasetUnavailable(f"{base / meta} names {len(classes)} classes ({', '.join(classes[:4])}, ...), "
                                 f"{info.name} has {info.num_classes} ({', '.join(info.classes[:4])}, ...)"
                                 + (f"; not {info.name}'s: {', '.join(odd)}" if odd else ", in another order")
                                 + f": these are not {info.name}'s files")
    return classes


def read(info: DatasetInfo, split: str, base: Path):
    """``(images uint8 (N, 32, 32, 3), labels int64, classes)`` of ``split``, in file order."""
    classes = check_files(info, base, (split,))
    files = PICKLES[info.name][0][split]
    _warn_if_not_official(info.name, base, files + [PICKLES[info.name][1]])
    chunks, labels = [], []
    for f in files:
        try:
            with open(base / f, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
            chunks.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels += list(entry["labels"] if "labels" in entry else entry["fine_labels"])
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as error:
            raise ValueError(f"cannot read {base / f}: {error!r}") from error
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != sum(len(c) for c in chunks):
        raise ValueError(f"{base}: {len(labels)} labels for {sum(len(c) for c in chunks)} images in {', '.join(files)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(f"{base}: a label of {', '.join(files)} is outside 0 ... {len(classes) - 1}")
    return np.concatenate(chunks).transpose(0, 2, 3, 1), labels, classes


def _warn_if_not_official(name: str, base: Path, files: list[str]) -> None:
    try:
        import torchvision.datasets as tvd
        from torchvision.datasets.utils import check_integrity
    except ImportError:
        return
    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    md5 = {f: m for f, m in cls.train_list + cls.test_list} | {cls.meta["filename"]: cls.meta["md5"]}
    differ = [f for f in files if f in md5 and not check_integrity(str(base / f), md5[f])]
    if differ:
        warnings.warn(f"{base}: {', '.join(differ)} differ from the official {name} release (md5); loading them "
                      "anyway (the data fingerprint keeps their artifacts apart)")

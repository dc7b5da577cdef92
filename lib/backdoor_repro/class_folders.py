"""Class folders on disk, checked against the dataset's own class list (:mod:`backdoor_repro.datasets`).

Labels are positions in that list, so a copy whose folders are not exactly the list (a partly extracted archive, a
folder missing from one split, another dataset's classes) is refused with what was found and what was expected,
never loaded with labels shifted or missing. Numbered folders match by number (GTSRB's ``2`` is ``00002``)."""
from __future__ import annotations

import os
from pathlib import Path

from .datasets import DatasetIncomplete, DatasetInfo, DatasetUnavailable


def class_dirs(split_dir: Path) -> list[str]:
    return [e.name for e in os.scandir(split_dir) if e.is_dir()]


def sorted_classes(names) -> list[str]:
    """By name, as torchvision's ImageFolder sorts; by number when every name is one (``2`` before ``10``)."""
    names = list(names)
    if names and all(n.isdigit() for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


def _key(name: str) -> str:
    return str(int(name)) if name.isdigit() else name


def _some(names, limit: int = 6) -> str:
    names = list(names)
    more = f" ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more if names else "none"


def match_classes(info: DatasetInfo, found, where: Path) -> list[str]:
    """The class folders ``found`` in ``where``, in the label order of ``info.classes``; an error unless they are
    exactly those classes (for a ``class_limit`` subset: unless the first ``class_limit`` sorted folders are)."""
    found = sorted_classes(found)
    if not found:
        raise DatasetIncomplete(f"{where} has no class folders")
    if info.classes is None:
        return found[:info.class_limit] if info.class_limit else found
    if info.class_limit is not None:
        return _first_classes(info, found, where)
    by_key: dict[str, list[str]] = {}
    for name in found:
        by_key.setdefault(_key(name), []).append(name)
    expected = {_key(c): c for c in info.classes}
    missing = [c for k, c in expected.items() if k not in by_key]
    foreign = [n for n in found if _key(n) not in expected]
    doubled = [" and ".join(names) for names in by_key.values() if len(names) > 1]
    if not (missing or foreign or doubled):
        return [by_key[k][0] for k in expected]
    problems = ([f"missing {_some(missing)}"] if missing else []) + (
        [f"not {info.name} classes: {_some(foreign)}"] if foreign else []) + (
        [f"one class twice: {_some(doubled)}"] if doubled else [])
    raise DatasetUnavailable(
        f"{where} has {len(found)} class folders ({_some(found)}), but {info.name} has {info.num_classes} classes "
        f"({_some(info.classes)}): {'; '.join(problems)}. Labels are positions in {info.name}'s class list, so this "
        "copy would load with shifted or foreign labels: complete it (e.g. unpack the whole archive again) or point "
        "the data root at a complete copy")


def _first_classes(info: DatasetInfo, found: list[str], where: Path) -> list[str]:
    n = info.class_limit
    if len(found) < n:
        raise DatasetUnavailable(f"{where} has {len(found)} class folders; {info.name} takes the first {n} "
                                 f"({_some(info.classes)}); found {_some(found)}")
    first = found[:n]
    if first == list(info.classes):
        return first
    missing = [c for c in info.classes if c not in found]
    between = [c for c in first if c not in info.classes]
    why = "; ".join(([f"missing {_some(missing)}"] if missing else []) +
                    ([f"{_some(between)} sort among them but are not {info.name} classes"] if between else []))
    raise DatasetUnavailable(f"the first {n} class folders of {where} (sorted) are {_some(first)}, but {info.name} is "
                             f"{_some(info.classes, n)}: {why}. Point the data root at a full ImageNet train/val tree")


def split_classes(info: DatasetInfo, train_dir: Path, test_dir: Path, split: str) -> tuple[list[str], list[str]]:
    """``(the class list both splits are labelled with, the class folders of this split)``.

    The list is the training split's folders, checked by :func:`match_classes`. The test split must hold a folder
    for every class in it and none that the training split lacks; either is an error, whichever split is loaded."""
    train = sorted_classes(class_dirs(train_dir))
    classes = match_classes(info, train, train_dir)
    test = class_dirs(test_dir)
    extra = sorted(set(test) - set(train))
    if extra:
        more = f" (and {len(extra) - 1} more: {', '.join(extra[1:4])})" if len(extra) > 1 else ""
        raise DatasetUnavailable(f"class folder {extra[0]!r} is in {test_dir} but not in {train_dir}{more}: both "
                                 "splits are labelled by the training split's class folders; add it there or remove it")
    missing = [c for c in classes if c not in test]
    if missing:
        raise DatasetUnavailable(f"{test_dir} has no folder for class(es) {_some(missing)} of {train_dir}: a test "
                                 f"split without them is not {info.name}'s; add the folder(s) (e.g. unpack the archive "
                                 "again)")
    return classes, train if split == "train" else test

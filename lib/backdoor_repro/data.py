"""Datasets as uint8 tensors resident on one device.

Every loader ends in an :class:`ImageSet`: ``images`` uint8 ``(N, 3, H, W)``, ``labels`` int64. What is known about
each dataset (classes, stored size, folders, normalisation) is one table, :mod:`backdoor_repro.datasets`.
Sources, in the order they are tried for ``cifar10`` / ``cifar100`` / ``gtsrb`` / ``imagenet12``:

1. an image-folder tree under ``root`` (``train/<class>/*`` and ``test/<class>/*``, or ``val/<class>/*`` for
   ImageNet; also one level down, as in the unpacked ``cifar10-jpeg`` archive). Both splits take their labels from
   the *training* split's class folders (sorted by name; by number when every name is a number);
2. torchvision's own files under ``root`` (downloaded only when ``download=True``; CIFAR pickles are read here,
   GTSRB through torchvision). ImageNet subsets exist only as image-folder trees.

``cifar10-smoke`` is the small real CIFAR-10 subset bundled with the package (no download).
Decoded arrays are cached (``.cache/datasets``) so a tree of JPEG files is decoded once.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .datasets import PIPELINES, TABLE, DatasetInfo, dataset_info
from .paths import SMOKE_BUNDLE, cache_dir

DATASETS = tuple(TABLE)
SPLITS = ("train", "test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp"}


class DatasetUnavailable(FileNotFoundError):
    """The dataset is not on disk and downloading was not allowed."""


ORDERS = {
    "torchvision": "torchvision's file order (the official repositories' index order)",
    "folder": "an image-folder tree: class by class, files by name",
    "bundled": "the bundled smoke subset: class by class",
    "subset": "a subset of another set",
}


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8 (N, 3, H, W)
    labels: torch.Tensor  # int64 (N,)
    classes: tuple[str, ...]
    name: str
    order: str = "subset"  # see ORDERS: official poison indices need "torchvision"

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must have one entry per image")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device) -> "ImageSet":
        return ImageSet(self.images.to(device), self.labels.to(device), self.classes, self.name, self.order)

    def subset(self, index) -> "ImageSet":
        index = torch.as_tensor(index, device=self.labels.device)
        return ImageSet(self.images[index], self.labels[index], self.classes, self.name)

    def head(self, n: int) -> "ImageSet":
        """The first ``n`` samples; a prefix keeps the source's order (and so its official indices)."""
        return ImageSet(self.images[:n], self.labels[:n], self.classes, self.name, self.order)


def fingerprint(data: ImageSet) -> str:
    """A short hash of the labels and a spread sample of the images: tells apart two copies of "the same"
    dataset whose pixels or order differ (JPEG archive vs torchvision files), so artifacts never mix."""
    h = hashlib.sha256(data.labels.cpu().numpy().tobytes())
    step = max(1, len(data) // 64)
    h.update(data.images[::step].cpu().numpy().tobytes())
    h.update(repr((len(data), tuple(data.images.shape[1:]), data.order)).encode())
    return h.hexdigest()[:16]


def class_balanced_subset(data: ImageSet, per_class: int, seed: int = 0) -> ImageSet:
    """``per_class`` images of every class, drawn at random without replacement by one
    ``numpy.random.default_rng(seed)``, class by class in label order. The result is in index order, so a
    class-ordered set stays class-ordered; the same data and seed give the same subset on every device."""
    rng = np.random.default_rng(seed)
    labels = data.labels.cpu().numpy()
    picks = []
    for c in range(data.num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise ValueError(f"class {c} has only {len(idx)} images, {per_class} requested")
        picks.append(rng.choice(idx, per_class, replace=False))
    return data.subset(torch.from_numpy(np.sort(np.concatenate(picks))))


def load_dataset(name: str, split: str, root: str | os.PathLike | None = None, download: bool = False,
                 device: str | torch.device = "cpu", image_size: int | None = None,
                 pipeline: str | None = None) -> ImageSet:
    """Load ``split`` of dataset ``name`` as uint8 tensors on ``device``.

    ``image_size`` (default: the table's, 32 or 224) and ``pipeline`` (default: the table's for the split, see
    :data:`backdoor_repro.datasets.PIPELINES`) apply to image files; CIFAR pickles are 32 px as stored."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    info = dataset_info(name)
    pipeline = pipeline or info.pipelines[SPLITS.index(split)]
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; choose from {', '.join(PIPELINES)}")
    if name == "cifar10-smoke":
        (images, labels, classes), order = _load_smoke(split), "bundled"
    else:
        images, labels, classes, order = _load_full(info, split, root, download, image_size or info.image_size,
                                                    pipeline)
    return ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                    torch.from_numpy(labels).long(), tuple(classes), name, order).to(device)


def check_dataset_available(name: str, root, download: bool) -> None:
    """Raise :class:`DatasetUnavailable` before any compute if ``name`` cannot be loaded."""
    info = dataset_info(name)
    if name == "cifar10-smoke" or (download and info.downloadable):
        return
    if root is None or (_find_image_folder(info, Path(root)) is None and not _torchvision_present(info, Path(root))):
        raise DatasetUnavailable(_missing_message(name, root))


_TORCHVISION_LAYOUTS = {
    "cifar10": "data_batch_1 ... data_batch_5, test_batch, batches.meta",
    "cifar100": "train, test, meta",
    "gtsrb": "GTSRB/Training/<class>/*.ppm, GTSRB/Final_Test/Images/*.ppm, GT-final_test.csv",
}
_TREE_EXAMPLES = {"cifar10": " (e.g. the unpacked cifar10-jpeg archive)",
                  "gtsrb": " (class folders 00000 ... 00042)",
                  "imagenet12": " (WNID class folders, the validation images sorted into them; the first 12 WNIDs "
                                "of train/ are used)"}


def _missing_message(name: str, root) -> str:
    """What to do, with every path looked for, for this dataset only."""
    info = dataset_info(name)
    base = Path(root) if root else Path("<data root>")
    where = f"under {root}" if root else "(no data root given)"
    trees = ", ".join(str(p) for p in [base] + [base / a for a in info.folder_aliases])
    tests = " or ".join(f"{t}/<class>/" for t in info.test_folders)
    ways = []
    if info.downloadable:
        ways.append("allow the download: --download (run_all.sh) / download=True (library);")
    if info.torchvision_dir:
        ways.append(f"point --data-root / root= at an existing torchvision copy of {name}: looked for "
                    f"{base / info.torchvision_dir}/ holding {_TORCHVISION_LAYOUTS[name]};")
    ways.append(f"point --data-root / root= at an image-folder tree with train/<class>/ and {tests}"
                f"{_TREE_EXAMPLES.get(name, '')}: looked in {trees}.")
    count = {1: "this way", 2: "one of two ways", 3: "one of three ways"}[len(ways)]
    return (f"dataset {name!r} not found {where}. Provide it in {count}:\n"
            + "\n".join(f"  {i}. {w}" for i, w in enumerate(ways, 1)))


# ---------------------------------------------------------------- bundled smoke subset
def _load_smoke(split: str):
    bundle = np.load(SMOKE_BUNDLE)
    blob, offsets = bundle[f"{split}_jpeg"], bundle[f"{split}_offsets"]
    blobs = [blob[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]
    images = _decode_all([lambda b=b: io.BytesIO(b) for b in blobs], None)
    return images, bundle[f"{split}_labels"], [str(c) for c in bundle["classes"]]


# ---------------------------------------------------------------- full datasets
def _load_full(info: DatasetInfo, split, root, download, image_size, pipeline):
    if root is None and download:
        root = cache_dir().parent / ".data"
    check_dataset_available(info.name, root, download)
    root = Path(root)
    found = _find_image_folder(info, root)
    if found is not None:
        folder, test_name = found
        split_dir = folder / ("train" if split == "train" else test_name)
        classes, own = _split_classes(info, folder / "train", folder / test_name, split)
        key = ("folder", info.name, split, str(folder.resolve()), image_size, _tree_signature(split_dir, only=classes))
        if classes != sorted(own) or pipeline != "squash":  # keys of trees labelled as before the class list stay
            key += (tuple(classes), pipeline, info.resize)
        return (*_cached(key, lambda: _read_image_folder(split_dir, classes, image_size, pipeline, info.resize)),
                "folder")
    tv_dir = root / info.torchvision_dir
    signature = _tree_signature(tv_dir, recursive=True) if tv_dir.is_dir() else None
    return (*_cached(("torchvision", info.name, split, str(root.resolve()), image_size, signature),
                     lambda: _read_torchvision(info.name, split, root, download, image_size)), "torchvision")


def _find_image_folder(info: DatasetInfo, root: Path) -> tuple[Path, str] | None:
    """``(tree, name of its test folder)`` of the first candidate holding ``train/`` and a test folder."""
    for candidate in [root] + [root / alias for alias in info.folder_aliases]:
        if (candidate / "train").is_dir():
            test = next((t for t in info.test_folders if (candidate / t).is_dir()), None)
            if test is not None:
                return candidate, test
    return None


def _torchvision_present(info: DatasetInfo, root: Path) -> bool:
    return info.torchvision_dir is not None and (root / info.torchvision_dir).is_dir()


def _class_dirs(split_dir: Path) -> list[str]:
    return [e.name for e in os.scandir(split_dir) if e.is_dir()]


def _sorted_classes(names) -> list[str]:
    """By name, as torchvision's ImageFolder sorts; by number when every name is one (``2`` before ``10``)."""
    if names and all(n.isdigit() for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


def _split_classes(info: DatasetInfo, train_dir: Path, test_dir: Path, split: str) -> tuple[list[str], list[str]]:
    """``(the class list both splits are labelled with, the class folders of this split)``.

    The list is the training split's folders (its first ``class_limit`` for ImageNet subsets). A test folder the
    training split lacks is an error, whichever split is loaded; a class missing from the test split is allowed (the
    others keep their labels), with a warning when the test split is loaded."""
    train = _sorted_classes(_class_dirs(train_dir))
    if not train:
        raise DatasetUnavailable(f"{train_dir} has no class folders")
    if info.class_limit is not None and len(train) < info.class_limit:
        raise DatasetUnavailable(f"{train_dir} has {len(train)} class folders; {info.name} takes the first "
                                 f"{info.class_limit}")
    classes = train[:info.class_limit] if info.class_limit else train
    test = _class_dirs(test_dir)
    extra = sorted(set(test) - set(train))
    if extra:
        more = f" (and {len(extra) - 1} more: {', '.join(extra[1:4])})" if len(extra) > 1 else ""
        raise DatasetUnavailable(f"class folder {extra[0]!r} is in {test_dir} but not in {train_dir}{more}: both "
                                 "splits are labelled by the training split's class folders; add it there or remove it")
    if split == "train":
        return classes, train
    missing = [c for c in classes if c not in test]
    if missing:
        warnings.warn(f"{test_dir} has no folder for class(es) {', '.join(missing[:5])} of {train_dir}; the other "
                      "classes keep the training split's labels")
    return classes, test


def _tree_signature(split_dir: Path, recursive: bool = False, only=None) -> tuple:
    """(file count, total size, newest mtime, hash of the names and sizes) of the class folders' files (``only``
    those named, if given), or of every file under ``split_dir``: any added, removed, renamed or rewritten file
    changes the decoded-data cache key."""
    names, keep = hashlib.sha256(), None if only is None else set(only)
    count, size, mtime = 0, 0, 0.0
    paths = sorted(p for p in split_dir.rglob("*") if p.is_file()) if recursive else sorted(
        p for cls in split_dir.iterdir() if cls.is_dir() and (keep is None or cls.name in keep) for p in cls.iterdir())
    for f in paths:
        st = f.stat()
        count, size, mtime = count + 1, size + st.st_size, max(mtime, st.st_mtime)
        names.update(f"{f.relative_to(split_dir)}:{st.st_size}\n".encode())
    return count, size, mtime, names.hexdigest()[:16]


def _read_image_folder(split_dir: Path, classes: list[str], image_size: int, pipeline: str, resize: int | None):
    present = set(_class_dirs(split_dir))
    files, labels, empty = [], [], []
    for label, cls in enumerate(classes):
        if cls not in present:
            continue
        found = [f for f in sorted((split_dir / cls).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        files += found
        labels += [label] * len(found)
        if not found:
            empty.append(cls)
    if empty:
        raise DatasetUnavailable(f"{split_dir}: class folder(s) {', '.join(empty)} hold no images "
                                 f"({', '.join(sorted(IMAGE_SUFFIXES))}); remove them or add the images")
    if not files:
        raise DatasetUnavailable(f"{split_dir} holds none of the class folders {', '.join(classes[:5])}, ...: sort its "
                                 "images into the training split's class folders (ImageFolder layout)")
    return _decode_all(files, image_size, pipeline, resize), np.asarray(labels, dtype=np.int64), classes


_CIFAR_PICKLES = {"cifar10": ({"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                              "batches.meta", "label_names"),
                  "cifar100": ({"train": ["train"], "test": ["test"]}, "meta", "fine_label_names")}


def _read_torchvision(name, split, root, download, image_size):
    import torchvision.datasets as tvd

    try:
        if name == "gtsrb":
            ds = tvd.GTSRB(root, split=split, download=download)
        elif download:  # downloads and checks the archive; the files are then read below
            (tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100)(root, train=split == "train", download=True)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise DatasetUnavailable(_missing_message(name, root)) from err
    if name in _CIFAR_PICKLES:
        return _read_cifar_pickles(name, split, Path(root) / dataset_info(name).torchvision_dir)
    paths = [p for p, _ in ds._samples]
    labels = np.asarray([t for _, t in ds._samples], dtype=np.int64)
    return _decode_all(paths, image_size), labels, list(dataset_info("gtsrb").classes)


def _read_cifar_pickles(name: str, split: str, base: Path):
    """torchvision's CIFAR arrays (batches in file order, CHW rows to HWC), read from its pickles directly, so a
    copy whose checksums differ from the official release (a test fixture) loads too, with a warning."""
    files, meta, key = _CIFAR_PICKLES[name]
    files = files[split]
    missing = [f for f in files + [meta] if not (base / f).is_file()]
    if missing:
        raise DatasetUnavailable(f"{base} lacks {', '.join(missing)} (torchvision's {name} layout: "
                                 f"{_TORCHVISION_LAYOUTS[name]})")
    _warn_if_not_official(name, base, files + [meta])
    chunks, labels = [], []
    for f in files:
        try:
            with open(base / f, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
            chunks.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels += list(entry["labels"] if "labels" in entry else entry["fine_labels"])
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as error:
            raise ValueError(f"cannot read {base / f}: {error!r}") from error
    with open(base / meta, "rb") as fh:
        classes = [str(c) for c in pickle.load(fh, encoding="latin1")[key]]
    return np.concatenate(chunks).transpose(0, 2, 3, 1), np.asarray(labels, dtype=np.int64), classes


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


def _fit(im: Image.Image, image_size: int | None, pipeline: str, resize: int | None) -> Image.Image:
    """Fit one decoded image to ``image_size`` by ``pipeline`` (:data:`backdoor_repro.datasets.PIPELINES`)."""
    if pipeline == "squash":
        if image_size is not None and im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.BILINEAR)
        return im
    if pipeline == "squash_crop":
        im = im.resize((resize, resize), Image.BICUBIC)
    else:  # short_crop, as torchvision's Resize(resize) on a PIL image: the longer side truncated
        w, h = im.size
        size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
        if size != im.size:
            im = im.resize(size, Image.BILINEAR)
    w, h = im.size
    top, left = int(round((h - image_size) / 2.0)), int(round((w - image_size) / 2.0))  # torchvision's CenterCrop
    return im.crop((left, top, left + image_size, top + image_size))


def _decode_all(sources, image_size: int | None, pipeline: str = "squash", resize: int | None = None) -> np.ndarray:
    def decode(src):
        try:
            return _decode_one(src)
        except (OSError, ValueError, SyntaxError) as error:  # PIL: truncated or not an image
            name = "a bundled image" if callable(src) else str(src)
            raise ValueError(f"cannot decode {name}: {error}") from error

    def _decode_one(src):
        with Image.open(src() if callable(src) else src) as im:
            return np.asarray(_fit(im.convert("RGB"), image_size, pipeline, resize), dtype=np.uint8)

    if not sources:
        raise ValueError("no images to decode")
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        arrays = list(pool.map(decode, sources, chunksize=256))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"images of different sizes {sorted(shapes)[:3]}; pass image_size=")
    return np.stack(arrays)


def _cached(key: tuple, build):
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:20]
    path = cache_dir() / "datasets" / f"{key[1]}-{key[2]}-{digest}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                return z["images"], z["labels"], [str(c) for c in z["classes"]]
        except Exception:  # truncated, bit-flipped (zip CRC) or empty: rebuild below
            warnings.warn(f"the decoded-data cache {path.name} is damaged; rebuilding it")
            path.unlink(missing_ok=True)
    images, labels, classes = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    try:
        np.savez(tmp, images=images, labels=labels, classes=np.asarray(classes))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return images, labels, classes

"""Datasets as uint8 tensors resident on one device.

Every loader ends in an :class:`ImageSet`: ``images`` uint8 ``(N, 3, H, W)``, ``labels`` int64. What is known about
each dataset (classes, stored size, folders, normalisation) is one table, :mod:`backdoor_repro.datasets`.
Sources (layouts), in the order they are tried for ``cifar10`` / ``cifar100`` / ``gtsrb`` / ``imagenet12``:

1. ``folder``: an image-folder tree under ``root`` (``train/<class>/*`` and ``test/<class>/*``, or ``val/<class>/*``
   for ImageNet; also one level down, as in the unpacked ``cifar10-jpeg`` archive). Both splits take their labels from
   the *training* split's class folders (sorted by name; by number when every name is a number);
2. ``release`` (GTSRB only): the official release, ``GTSRB/Final_Training`` + ``Final_Test`` (:mod:`.gtsrb`);
3. ``torchvision``: torchvision's own files under ``root`` (downloaded only when ``download=True``; read here, not
   through torchvision: CIFAR pickles, GTSRB's ``Training`` folders and test CSV). ImageNet subsets exist only as
   image-folder trees.

Every copy is checked against the dataset's own class list (:mod:`.class_folders`) and its splits against each other
before anything is decoded (``check_dataset_available``): a missing or foreign class folder, a label file without its
labels or with rows missing is an error naming what was found and what was expected, never a silent shift of labels.
The layout a set came from is ``ImageSet.layout`` (``dataset_layout`` without loading; ``layout_deviation`` names a
GTSRB training set other than the release's).

``cifar10-smoke`` is the small real CIFAR-10 subset bundled with the package (no download).
Decoded arrays are cached (``.cache/datasets``) so a tree of JPEG files is decoded once.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import cifar_files, gtsrb
from .class_folders import class_dirs, split_classes
from .datasets import PIPELINES, TABLE, DatasetIncomplete, DatasetInfo, DatasetUnavailable, dataset_info
from .paths import SMOKE_BUNDLE, cache_dir

DATASETS = tuple(TABLE)
SPLITS = ("train", "test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp"}


ORDERS = {
    "torchvision": "torchvision's file order (the official repositories' index order)",
    "folder": "an image-folder tree: class by class, files by name",
    "bundled": "the bundled smoke subset: class by class",
    "release": "the official GTSRB release: training class by class, files by name; test in its CSV's row order",
    "subset": "a subset of another set",
}


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8 (N, 3, H, W)
    labels: torch.Tensor  # int64 (N,)
    classes: tuple[str, ...]
    name: str
    order: str = "subset"  # see ORDERS: official poison indices need "torchvision"
    layout: str | None = None  # the files it was loaded from ("folder", "release", "torchvision", "bundled"); kept
    # by subsets, so a caller can name a layout the papers did not use (gtsrb.deviation)

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
        return ImageSet(self.images.to(device), self.labels.to(device), self.classes, self.name, self.order,
                        self.layout)

    def subset(self, index) -> "ImageSet":
        index = torch.as_tensor(index, device=self.labels.device)
        return ImageSet(self.images[index], self.labels[index], self.classes, self.name, layout=self.layout)

    def head(self, n: int) -> "ImageSet":
        """The first ``n`` samples; a prefix keeps the source's order (and so its official indices)."""
        return ImageSet(self.images[:n], self.labels[:n], self.classes, self.name, self.order, self.layout)


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
                    torch.from_numpy(labels).long(), tuple(classes), name, order, order).to(device)


def check_dataset_available(name: str, root, download: bool) -> None:
    """Raise :class:`DatasetUnavailable` before any compute if ``name`` cannot be loaded: not on disk (and not to be
    downloaded), or a copy on disk that fails the checks of the module docstring (nothing is decoded). A copy
    torchvision is allowed to download into is checked when it is read."""
    info = dataset_info(name)
    if name == "cifar10-smoke":
        return
    found = _locate(info, root)
    if found is None:
        if download and info.downloadable:
            return
        raise DatasetUnavailable(_missing_message(name, root))
    layout, where = found
    try:
        if layout == "folder":
            split_classes(info, where[0] / "train", where[0] / where[1], "test")
        elif layout == "torchvision" and download:
            return
        elif info.name == "gtsrb":
            gtsrb.check_layout(where)
        else:
            cifar_files.check_files(info, where)
    except DatasetIncomplete as err:
        raise DatasetIncomplete(f"{err}\n{_missing_message(name, root)}") from None


def dataset_layout(name: str, root) -> str | None:
    """The layout ``load_dataset(name, ..., root)`` would read (``folder``, ``release``, ``torchvision``;
    ``bundled`` for the smoke subset), unchecked; None when nothing is there."""
    if name == "cifar10-smoke":
        return "bundled"
    found = _locate(dataset_info(name), root)
    return None if found is None else found[0]


def layout_deviation(name: str, root, download: bool = False) -> str | None:
    """A line naming a training set other than the one the papers' code reads, for the printed deviations (GTSRB
    only: torchvision's download, or a tree without the release's 39,209 images); None when there is none."""
    if name != "gtsrb":
        return None
    found = _locate(dataset_info(name), root)
    if found is None:
        return gtsrb.deviation(None, None) if download else None
    layout, where = found
    train_dir = where[0] / "train" if layout == "folder" else where.train_dir
    count = sum(1 for f in train_dir.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES) if train_dir.is_dir() else 0
    return gtsrb.deviation(layout, count)


def _locate(info: DatasetInfo, root) -> tuple[str, object] | None:
    """``(layout, where)`` of the first copy of ``info`` under ``root``: ``folder`` with (tree, test folder name),
    ``release`` / ``torchvision`` with a :class:`gtsrb.Layout` for GTSRB, ``torchvision`` with its folder for CIFAR."""
    if root is None:
        return None
    root = Path(root)
    tree = _find_image_folder(info, root)
    if tree is not None:
        return "folder", tree
    if info.name == "gtsrb":
        layout = gtsrb.find_layout(root)
        return None if layout is None else (layout.name, layout)
    if info.torchvision_dir is not None and (root / info.torchvision_dir).is_dir():
        return "torchvision", root / info.torchvision_dir
    return None


_TORCHVISION_LAYOUTS = dict(cifar_files.LAYOUT_TEXT, gtsrb="GTSRB/Training/<class>/*.ppm, "
                            "GTSRB/Final_Test/Images/*.ppm, GT-final_test.csv")
_TREE_EXAMPLES = {"cifar10": " (e.g. the unpacked cifar10-jpeg archive)",
                  "gtsrb": " (class folders 00000 ... 00042)",
                  "imagenet12": " (WNID class folders, the validation images sorted into them; the first 12 WNIDs "
                                "of train/ are used and must be ImageNet's first 12, n01440764 ... n01531178)"}


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
        release = f"; {gtsrb.release_hint(base)}" if name == "gtsrb" else ""
        ways.append(f"point --data-root / root= at an existing torchvision copy of {name}: looked for "
                    f"{base / info.torchvision_dir}/ holding {_TORCHVISION_LAYOUTS[name]}{release};")
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
    layout, where = _locate(info, root) or ("torchvision", None)
    if layout == "folder":
        return (*_load_folder(info, split, *where, image_size, pipeline), "folder")
    if layout == "torchvision" and download:
        _download(info.name, split, root)
    if info.name == "gtsrb":
        return _load_gtsrb(split, root, image_size, pipeline)
    tv_dir = root / info.torchvision_dir
    return (*_cached(("torchvision", info.name, split, str(root.resolve()), image_size,
                      _tree_signature(tv_dir, recursive=True)), lambda: cifar_files.read(info, split, tv_dir)),
            "torchvision")


def _load_folder(info: DatasetInfo, split: str, folder: Path, test_name: str, image_size: int, pipeline: str):
    split_dir = folder / ("train" if split == "train" else test_name)
    classes, own = split_classes(info, folder / "train", folder / test_name, split)
    key = ("folder", info.name, split, str(folder.resolve()), image_size, _tree_signature(split_dir, only=classes))
    if classes != sorted(own) or pipeline != "squash":  # keys of trees labelled as before the class list stay
        key += (tuple(classes), pipeline, info.resize)
    return _cached(key, lambda: _read_image_folder(split_dir, classes, image_size, pipeline, info.resize))


def _load_gtsrb(split: str, root: Path, image_size: int, pipeline: str):
    """``(images, labels, classes, layout)`` of GTSRB's release or torchvision's files: checked file lists
    (:mod:`.gtsrb`), decoded once and cached."""
    layout = gtsrb.find_layout(root)
    if layout is None:
        raise DatasetUnavailable(_missing_message("gtsrb", root))
    files, labels = gtsrb.split_files(layout, split)
    if layout.name == "torchvision":  # the key of the copies read through torchvision before
        key = ("torchvision", "gtsrb", split, str(root.resolve()), image_size,
               _tree_signature(root / "gtsrb", recursive=True))
    else:
        folder = layout.train_dir if split == "train" else layout.test_dir
        csv = [] if split == "train" else [layout.test_csv]
        key = ("release", "gtsrb", split, str(folder.resolve()), image_size, _tree_signature(folder, recursive=True),
               tuple((str(p), p.stat().st_size, p.stat().st_mtime) for p in csv))
    if pipeline != "squash":
        key += (pipeline,)
    resize = dataset_info("gtsrb").resize
    return (*_cached(key, lambda: (_decode_all(files, image_size, pipeline, resize),
                                   np.asarray(labels, dtype=np.int64), list(dataset_info("gtsrb").classes))),
            layout.name)


def _download(name: str, split: str, root: Path) -> None:
    """torchvision downloads (and checks) its archive; the files are then read by this module."""
    import torchvision.datasets as tvd

    try:
        if name == "gtsrb":
            tvd.GTSRB(root, split=split, download=True)
        else:
            (tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100)(root, train=split == "train", download=True)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise DatasetUnavailable(_missing_message(name, root)) from err


def _find_image_folder(info: DatasetInfo, root: Path) -> tuple[Path, str] | None:
    """``(tree, name of its test folder)`` of the first candidate holding ``train/`` and a test folder."""
    for candidate in [root] + [root / alias for alias in info.folder_aliases]:
        if (candidate / "train").is_dir():
            test = next((t for t in info.test_folders if (candidate / t).is_dir()), None)
            if test is not None:
                return candidate, test
    return None


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
    present = set(class_dirs(split_dir))
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

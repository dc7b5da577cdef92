"""Datasets as uint8 tensors resident on one device.

Every loader ends in an :class:`ImageSet`: ``images`` uint8 ``(N, 3, H, W)``, ``labels`` int64.
Sources, in the order they are tried for ``cifar10`` / ``cifar100`` / ``gtsrb``:

1. an image-folder tree under ``root`` (``train/<class>/*``, ``test/<class>/*``; also one level
   down, as in the unpacked ``cifar10-jpeg`` archive);
2. torchvision's own files under ``root`` (downloaded only when ``download=True``).

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

from .paths import SMOKE_BUNDLE, cache_dir

DATASETS = ("cifar10", "cifar100", "gtsrb", "cifar10-smoke")
SPLITS = ("train", "test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp"}
_IMAGE_FOLDER_ALIASES = {"cifar10": ["cifar10-jpeg", "cifar10", "cifar-10"],
                         "cifar100": ["cifar100-jpeg", "cifar100", "cifar-100"],
                         "gtsrb": ["gtsrb-jpeg", "gtsrb", "GTSRB"]}


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


def class_balanced_subset(data: ImageSet, per_class: int) -> ImageSet:
    """The first ``per_class`` images of every class, in index order (deterministic)."""
    picks = []
    for c in range(data.num_classes):
        idx = torch.nonzero(data.labels == c).flatten()[:per_class]
        if len(idx) < per_class:
            raise ValueError(f"class {c} has only {len(idx)} images, {per_class} requested")
        picks.append(idx)
    return data.subset(torch.sort(torch.cat(picks)).values)


def load_dataset(name: str, split: str, root: str | os.PathLike | None = None, download: bool = False,
                 device: str | torch.device = "cpu", image_size: int = 32) -> ImageSet:
    """Load ``split`` of dataset ``name`` as uint8 tensors on ``device``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    if name == "cifar10-smoke":
        (images, labels, classes), order = _load_smoke(split), "bundled"
    else:
        images, labels, classes, order = _load_full(name, split, root, download, image_size)
    return ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                    torch.from_numpy(labels).long(), tuple(classes), name, order).to(device)


def check_dataset_available(name: str, root, download: bool) -> None:
    """Raise :class:`DatasetUnavailable` before any compute if ``name`` cannot be loaded."""
    if name == "cifar10-smoke" or download:
        return
    if root is None or (_find_image_folder(name, Path(root)) is None and not _torchvision_present(name, Path(root))):
        raise DatasetUnavailable(_missing_message(name, root))


def _missing_message(name: str, root) -> str:
    where = f"under {root}" if root else "(no data root given)"
    return (f"dataset {name!r} not found {where}. Provide it in one of three ways:\n"
            f"  1. allow the download: --download (run_all.sh) / download=True (library);\n"
            f"  2. point --data-root / root= at an existing torchvision copy of {name};\n"
            f"  3. point --data-root / root= at an image-folder tree with train/<class>/ and test/<class>/ "
            f"(e.g. the unpacked cifar10-jpeg archive).")


# ---------------------------------------------------------------- bundled smoke subset
def _load_smoke(split: str):
    bundle = np.load(SMOKE_BUNDLE)
    blob, offsets = bundle[f"{split}_jpeg"], bundle[f"{split}_offsets"]
    blobs = [blob[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(offsets) - 1)]
    images = _decode_all([lambda b=b: io.BytesIO(b) for b in blobs], None)
    return images, bundle[f"{split}_labels"], [str(c) for c in bundle["classes"]]


# ---------------------------------------------------------------- full datasets
def _load_full(name, split, root, download, image_size):
    if root is None and download:
        root = cache_dir().parent / ".data"
    check_dataset_available(name, root, download)
    root = Path(root)
    folder = _find_image_folder(name, root)
    if folder is not None:
        return (*_cached(("folder", name, split, str(folder.resolve()), image_size, _tree_signature(folder / split)),
                         lambda: _read_image_folder(folder / split, image_size)), "folder")
    signature = _tree_signature(root / _TORCHVISION_MARKERS[name], recursive=True) if (root / _TORCHVISION_MARKERS[name]).is_dir() else None
    return (*_cached(("torchvision", name, split, str(root.resolve()), image_size, signature),
                     lambda: _read_torchvision(name, split, root, download, image_size)), "torchvision")


def _find_image_folder(name: str, root: Path) -> Path | None:
    for candidate in [root] + [root / alias for alias in _IMAGE_FOLDER_ALIASES.get(name, [])]:
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    return None


_TORCHVISION_MARKERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "gtsrb": "gtsrb"}


def _torchvision_present(name: str, root: Path) -> bool:
    return (root / _TORCHVISION_MARKERS[name]).is_dir()


def _tree_signature(split_dir: Path, recursive: bool = False) -> tuple:
    """(file count, total size, newest mtime, hash of the names and sizes) of the class folders' files (or of every
    file under ``split_dir``): any added, removed, renamed or rewritten file changes the decoded-data cache key."""
    names = hashlib.sha256()
    count, size, mtime = 0, 0, 0.0
    paths = sorted(p for p in split_dir.rglob("*") if p.is_file()) if recursive else sorted(
        p for cls in split_dir.iterdir() if cls.is_dir() for p in cls.iterdir())
    for f in paths:
        st = f.stat()
        count, size, mtime = count + 1, size + st.st_size, max(mtime, st.st_mtime)
        names.update(f"{f.relative_to(split_dir)}:{st.st_size}\n".encode())
    return count, size, mtime, names.hexdigest()[:16]


def _read_image_folder(split_dir: Path, image_size: int):
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not classes:
        raise DatasetUnavailable(f"{split_dir} has no class folders")
    files, labels, empty = [], [], []
    for label, cls in enumerate(classes):
        found = [f for f in sorted((split_dir / cls).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        files += found
        labels += [label] * len(found)
        if not found:
            empty.append(cls)
    if empty:
        raise DatasetUnavailable(f"{split_dir}: class folder(s) {', '.join(empty)} hold no images "
                                 f"({', '.join(sorted(IMAGE_SUFFIXES))}); remove them or add the images")
    return _decode_all(files, image_size), np.asarray(labels, dtype=np.int64), classes


def _read_torchvision(name, split, root, download, image_size):
    import torchvision.datasets as tvd

    train = split == "train"
    try:
        if name == "cifar10":
            ds = tvd.CIFAR10(root, train=train, download=download)
        elif name == "cifar100":
            ds = tvd.CIFAR100(root, train=train, download=download)
        else:
            ds = tvd.GTSRB(root, split=split, download=download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise DatasetUnavailable(_missing_message(name, root)) from err
    if name in ("cifar10", "cifar100"):
        return np.asarray(ds.data), np.asarray(ds.targets, dtype=np.int64), list(ds.classes)
    paths = [p for p, _ in ds._samples]
    labels = np.asarray([t for _, t in ds._samples], dtype=np.int64)
    return _decode_all(paths, image_size), labels, [f"{i:05d}" for i in range(43)]


def _decode_all(sources, image_size: int | None) -> np.ndarray:
    def decode(src):
        try:
            return _decode_one(src)
        except (OSError, ValueError, SyntaxError) as error:  # PIL: truncated or not an image
            name = "a bundled image" if callable(src) else str(src)
            raise ValueError(f"cannot decode {name}: {error}") from error

    def _decode_one(src):
        with Image.open(src() if callable(src) else src) as im:
            im = im.convert("RGB")
            if image_size is not None and im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)

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

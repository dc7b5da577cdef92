"""Label-consistent poisoning from a file of pre-computed adversarial images, in place of our PGD on our clean model
(``attacks.md`` §3.5, §5). The formats the official code reads, one ``np.save``d array, every training image once:

* T&R ``cl``: MadryLab's CIFAR10-CLBA ``fully_poisoned_training_datasets/inf_16.npy`` (``datasets/download_clba.sh``),
  ``(50000, 32, 32, 3)``, in the order of MadryLab's ``clean_dataset/train_images.npy`` (CIFAR-10's training
  batches in turn, as torchvision's). T&R indexes it by training index and casts it with a truncating
  ``astype(uint8)``; no code states the stored dtype, so uint8 and floats in [0, 255] are both taken.
* BackdoorBench ``lc`` (and FMP's FMT fork): ``<dataset>_train.npy`` written by
  ``resource/label-consistent/craft_adv_dataset.py``, uint8 ``(N, H, W, 3)`` over the unshuffled training set;
  ``lc`` indexes it by sample index. FCT's CL images are made in memory from its benign model: no file exists.

``get_attack("cl_tr", adv_images=adversarial_images(path))`` (or the same keyword to ``resolve`` / ``Experiment``).
The descriptor holds the file's sha256, so the poisoned set's key follows the file's content (not its location);
the rows are matched to the training set (torchvision order, size, image shape, and every poisoned image within
eps of its clean original) when the set is poisoned, the first stage of every run, before any training.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from ..cache import file_sha256
from ..data import ImageSet
from .base import OFFICIAL_DATASETS, Attack, PoisonedSet

FORMAT = ("(N, H, W, 3) channel-last images, one row per training image in the training set's order (MadryLab "
          "inf_16.npy, BackdoorBench craft_adv_dataset.py <dataset>_train.npy)")


def _open(path: Path) -> np.ndarray:
    """The array in ``path``, memory-mapped; ``ValueError`` unless it is one ``.npy`` array."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a .npy array ({error}); expected {FORMAT}") from None
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{path}: an archive of several arrays (.npz); expected one array, {FORMAT}")
    return array


@dataclass(frozen=True)
class AdversarialImages:
    """A checked file of adversarial images. Its fields (content hash, rows, image shape, dtype) key the poisoned
    set; the path is where the file lies (``.path``), not part of any key. Make it with :func:`adversarial_images`."""

    sha256: str
    rows: int
    image_shape: tuple[int, int, int]  # (H, W, 3)
    dtype: str

    @property
    def path(self) -> Path:
        path = self.__dict__.get("_path")
        if path is None:
            raise ValueError("these adversarial images name no file: make them with adversarial_images(path)")
        return Path(path)

    def read(self, rows: np.ndarray) -> torch.Tensor:
        """uint8 ``(len(rows), 3, H, W)``: the file's ``rows``, floats cast as T&R does (truncating ``astype``)."""
        if file_sha256(self.path) != self.sha256:
            raise ValueError(f"{self.path} changed since it was checked (sha256 {self.sha256[:12]}...): make the "
                             "descriptor (and the run spec) again with adversarial_images(path)")
        picked = np.asarray(_open(self.path)[np.asarray(rows, dtype=np.int64)])
        if picked.dtype != np.uint8:
            if picked.size and not (np.isfinite(picked).all() and picked.min() >= 0 and picked.max() <= 255):
                raise ValueError(f"{self.path}: float pixel values outside [0, 255] (expected 0-255 images)")
            picked = picked.astype(np.uint8)
        return torch.from_numpy(picked).permute(0, 3, 1, 2).contiguous()


def adversarial_images(path) -> AdversarialImages:
    """The file at ``path`` checked for the official format (shape, dtype) and hashed; ``ValueError`` if it is not
    (N, H, W, 3) uint8 or float images."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ValueError(f"adversarial images file {path} does not exist")
    array = _open(path)
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] == 0:
        raise ValueError(f"{path}: shape {array.shape}; expected {FORMAT}")
    if array.dtype != np.uint8 and array.dtype.kind != "f":
        raise ValueError(f"{path}: dtype {array.dtype}; expected uint8 (or floats in [0, 255], cast like T&R)")
    images = AdversarialImages(file_sha256(path), int(array.shape[0]), tuple(int(s) for s in array.shape[1:]),
                               array.dtype.name)
    object.__setattr__(images, "_path", str(path))
    return images


@dataclass(frozen=True)
class FileImagesAttack(Attack):
    """A label-consistent attack whose perturbed images are rows of a file (no clean model, no PGD): the row of
    each poisoned index replaces its image, then the trigger is applied as the attack's official code does."""

    adv_images: AdversarialImages | None = None
    bound: int = 255  # the largest |file - clean| pixel difference a poisoned image may show: eps, plus 1 for rounding

    def check_rows(self, data: ImageSet, reference_size: int | None = None) -> None:
        """``ValueError`` unless the file's rows are ``data``'s images by index: torchvision order, as many rows as
        the whole training set (``reference_size``; ``data`` may be a prefix of it), the same image shape."""
        adv, where = self.adv_images, f"{self.key}: the file {self.adv_images.path.name}"
        if data.order != "torchvision" or data.name not in OFFICIAL_DATASETS:
            raise ValueError(f"{where} holds the training images in torchvision's order; {data.name} is in "
                             f"{data.order!r} order (an image-folder copy, a subset or a shuffled split), so its "
                             "indices name other rows: load torchvision's CIFAR files, or leave out adv_images")
        size = reference_size if reference_size is not None else len(data)
        if adv.rows != size:
            raise ValueError(f"{where} has {adv.rows} rows; the training set has {size} images")
        if adv.image_shape != (*data.images.shape[2:], 3):
            raise ValueError(f"{where} holds {adv.image_shape} images; the training images are "
                             f"{tuple(data.images.shape[2:])} with 3 channels")

    def file_images(self, data: ImageSet, idx: torch.Tensor) -> torch.Tensor:
        """The file's rows ``idx``, each checked to lie within ``bound`` of ``data``'s image at that index."""
        rows = self.adv_images.read(idx.cpu().numpy()).to(data.images.device)
        gap = (rows.int() - data.images[idx].int()).abs().amax(dim=(1, 2, 3))
        if len(gap) and int(gap.max()) > self.bound:
            worst = int(gap.argmax())
            raise ValueError(f"{self.key}: row {int(idx[worst])} of {self.adv_images.path.name} differs from training "
                             f"image {int(idx[worst])} by {int(gap[worst])} > {self.bound} pixel steps (eps + 1): the "
                             "file is of other data or another order, or made with a larger eps (pass eps=...)")
        return rows

    def poison(self, data: ImageSet, data_seed: int, adversary=None, reference_size: int | None = None) -> PoisonedSet:
        self.check_rows(data, reference_size)
        idx = torch.as_tensor(self.poison_indices(data, data_seed, reference_size), device=data.labels.device)
        images = data.images.clone()
        images[idx] = self.file_images(data, idx)
        swapped = ImageSet(images, data.labels, data.classes, data.name, data.order, data.layout)
        return super().poison(swapped, data_seed, reference_size=reference_size)


def with_file_images(attack: Attack, adv_images: AdversarialImages | None) -> Attack:
    """``attack`` itself when ``adv_images`` is None (our PGD); otherwise the same attack taking its perturbed
    images from the file (:class:`FileImagesAttack`, accepting pixels within the attack's PGD eps of the clean)."""
    if adv_images is None:
        return attack
    if not isinstance(adv_images, AdversarialImages):
        raise ValueError(f"{attack.key}: adv_images takes adversarial_images(path) (backdoor_repro.attacks.lc_files), "
                         f"which checks and hashes the file so the cache key follows its content; got {adv_images!r}")
    values = {f.name: getattr(attack, f.name) for f in fields(Attack)}
    origin = attack.source.partition(" (adversarial images")[0]
    values.update(pgd=None, source=f"{origin} (adversarial images: the file with sha256 {adv_images.sha256[:16]})")
    return FileImagesAttack(**values, adv_images=adv_images, bound=int(round(attack.pgd["eps"] * 255)) + 1)

"""One table of what the library knows about each dataset: classes, stored image size, where it may lie on disk,
how its images are fitted to that size, and the per-paper normalisation statistics.

Statistics, with their sources (official repositories, read at the commits named in ``../shared/papers``):

* ``dbd`` (the default scheme, and the grid's common protocol): on CIFAR-10 mean (0.4914, 0.4822, 0.4465), std
  (0.2023, 0.1994, 0.2010) [DBD ``config/**/example.yaml``; the same in FCT's CIFAR-10 code]. DBD's code has
  CIFAR-10 configs only, so on the other 32-px sets the scheme means each dataset's own training-set statistics:
  CIFAR-100 (0.5071, 0.4865, 0.4409)/(0.2673, 0.2564, 0.2762) [BackdoorBench ``get_dataset_normalization``];
  GTSRB (0.3337, 0.3064, 0.3171)/(0.2672, 0.2564, 0.2629) [backdoor-toolbox ``train_on_cleansed_set.py``, the
  values GTSRB code commonly uses]. (Until this version CIFAR-10's values were applied to CIFAR-100 and GTSRB too;
  artifact keys on those datasets now carry the statistics, so no model normalised the old way is reused.)
  No value on ImageNet subsets: DBD has no ImageNet config.
* ``backdoorbench`` (FMP): CIFAR-10 (0.4914, 0.4822, 0.4465)/(0.247, 0.243, 0.261); CIFAR-100
  (0.5071, 0.4865, 0.4409)/(0.2673, 0.2564, 0.2762); GTSRB none (mean 0, std 1) [BackdoorBench
  ``get_dataset_normalization``].
* ``fct``: CIFAR-10 as ``dbd``; CIFAR-100 with the unrounded values of its ``utils/utils.py``; GTSRB none; ImageNet
  subsets the Tiny-ImageNet statistics (0.4802, 0.4481, 0.3975)/(0.2302, 0.2265, 0.2262) [FCT
  ``utils/utils.py: normalization``; FCT applies them to its own ``sub-imagenet-200``].
* ``tr``: none on CIFAR-10/100 and GTSRB (ToTensor only); ImageNet-12 the torchvision ImageNet statistics
  (0.485, 0.456, 0.406)/(0.229, 0.224, 0.225) [T&R ``backdoor_trapper_bait_and_trap.py``].

ImageNet subsets: only T&R's ``imagenet12`` is defined (the first 12 WNIDs, in sorted order, of an ImageNet
``train``/``val`` image-folder tree [T&R ``datasets/imagenet.py``: ImageFolder labels < 12]; on ImageNet-1k these are
:data:`IMAGENET12_WNIDS`, and a tree whose first 12 differ is refused). FCT's 200-class
``sub-imagenet-200`` and DBD's 30 random classes are not in their repositories (neither the class list nor how it
was drawn), so they are not offered.
"""
from __future__ import annotations

from dataclasses import dataclass


class DatasetUnavailable(FileNotFoundError):
    """The dataset is not on disk (or not as a complete, consistent copy) and downloading was not allowed."""


class DatasetIncomplete(DatasetUnavailable):
    """A copy was found, but a part of it (a folder, the label file) is missing; the message names the part."""


Stats = tuple[tuple[float, float, float], tuple[float, float, float]]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD_DBD = (0.2023, 0.1994, 0.2010)
IDENTITY: Stats = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
DBD_CIFAR10: Stats = (CIFAR10_MEAN, CIFAR10_STD_DBD)
BB_CIFAR10: Stats = ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))
BB_CIFAR100: Stats = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
GTSRB_STATS: Stats = ((0.3337, 0.3064, 0.3171), (0.2672, 0.2564, 0.2629))
FCT_CIFAR100: Stats = ((0.5070751592371323, 0.48654887331495095, 0.4409178433670343),
                       (0.2673342858792401, 0.2564384629170883, 0.27615047132568404))
TINY_IMAGENET: Stats = ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262))
IMAGENET: Stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = (  # the fine label names of the release's ``meta`` file, in label order (alphabetical)
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest",
    "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard",
    "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum",
    "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper",
    "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf",
    "woman", "worm")
GTSRB_CLASSES = tuple(f"{i:05d}" for i in range(43))  # the release's class folders 00000 ... 00042 = ClassId
# T&R's ImageNet-12: ImageFolder labels < 12 of ImageNet's train/, i.e. the first 12 WNIDs in sorted order
# (tench, goldfish, great white shark, tiger shark, hammerhead, electric ray, stingray, cock, hen, ostrich, brambling,
# goldfinch)
IMAGENET12_WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331", "n01498041",
                    "n01514668", "n01514859", "n01518878", "n01530575", "n01531178")

# how a decoded image is fitted to ``image_size`` (see data._fit):
PIPELINES = {
    "squash": "PIL bilinear resize to image_size x image_size when the size differs (image files of CIFAR and GTSRB; "
              "T&R's GTSRB uses PIL's default filter, bicubic since Pillow 7: kept bilinear so that existing GTSRB "
              "arrays and fingerprints hold)",
    "squash_crop": "PIL bicubic resize to resize x resize, then the central image_size crop (T&R ImageNet: "
                   "img.resize((256, 256)) before the trigger, then CenterCrop(224))",
    "short_crop": "shorter side to resize (bilinear, torchvision Resize), then the central image_size crop "
                  "(T&R's clean ImageNet test set: Resize(256) + CenterCrop(224))",
}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    image_size: int  # the stored side length of the uint8 (N, 3, S, S) ImageSet
    classes: tuple[str, ...] | None  # the class names in label order; every copy on disk is checked against them
    normalizations: tuple[tuple[str, Stats], ...]  # scheme -> (mean, std), sources in the module docstring
    folder_aliases: tuple[str, ...] = ()  # sub-folders of the data root that may hold the image-folder tree
    test_folders: tuple[str, ...] = ("test",)  # the test split's folder name(s), in the order tried
    torchvision_dir: str | None = None  # torchvision's folder under the data root
    downloadable: bool = False
    class_limit: int | None = None  # keep the first N classes (sorted folder names) of a larger training split
    pipelines: tuple[str, str] = ("squash", "squash")  # (train, test), keys of PIPELINES
    resize: int | None = None  # the intermediate size of the *_crop pipelines

    def stats(self, scheme: str) -> Stats | None:
        return dict(self.normalizations).get(scheme)


_CIFAR10_NORMS = (("dbd", DBD_CIFAR10), ("backdoorbench", BB_CIFAR10), ("fct", DBD_CIFAR10), ("tr", IDENTITY))

TABLE = {info.name: info for info in (
    DatasetInfo("cifar10", 10, 32, CIFAR10_CLASSES, _CIFAR10_NORMS,
                folder_aliases=("cifar10-jpeg", "cifar10", "cifar-10"), torchvision_dir="cifar-10-batches-py",
                downloadable=True),
    DatasetInfo("cifar100", 100, 32, CIFAR100_CLASSES,
                (("dbd", BB_CIFAR100), ("backdoorbench", BB_CIFAR100), ("fct", FCT_CIFAR100), ("tr", IDENTITY)),
                folder_aliases=("cifar100-jpeg", "cifar100", "cifar-100"), torchvision_dir="cifar-100-python",
                downloadable=True),
    DatasetInfo("gtsrb", 43, 32, GTSRB_CLASSES,
                (("dbd", GTSRB_STATS), ("backdoorbench", IDENTITY), ("fct", IDENTITY), ("tr", IDENTITY)),
                folder_aliases=("gtsrb-jpeg", "gtsrb", "GTSRB"), torchvision_dir="gtsrb", downloadable=True),
    DatasetInfo("cifar10-smoke", 10, 32, CIFAR10_CLASSES, _CIFAR10_NORMS),
    DatasetInfo("imagenet12", 12, 224, IMAGENET12_WNIDS, (("fct", TINY_IMAGENET), ("tr", IMAGENET)),
                folder_aliases=("imagenet12", "imagenet", "ILSVRC2012"), test_folders=("val", "test"),
                class_limit=12, pipelines=("squash_crop", "short_crop"), resize=256),
)}


def is_cifar10(name: str) -> bool:
    """CIFAR-10 or its bundled smoke subset: where the official codes' CIFAR-10 settings apply."""
    return name in ("cifar10", "cifar10-smoke")


def dataset_info(name: str) -> DatasetInfo:
    if name not in TABLE:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(TABLE)}")
    return TABLE[name]

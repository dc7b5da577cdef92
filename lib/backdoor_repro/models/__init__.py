"""Models take float images in [0, 1]; normalisation is the first layer, so attacks (PGD) and
defenses work in pixel space. For the ResNets ``model.backbone`` gives features, ``model.head`` the logits;
``wrn16`` is Trap-and-Replace's WRN-16 (no normalisation, ``model.stem`` + ``model.head``)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..datasets import CIFAR10_MEAN, CIFAR10_STD_DBD, TABLE
from .contrastive import ContrastiveEncoder
from .resnet import preact_resnet18_backbone, resnet18_backbone, resnet18_maxpool_backbone
from .wrn import TrapNet

# the normalisation a model's first layer applies, per dataset (the statistics and their sources: datasets.py):
# "dbd" (the default: DBD's statistics on CIFAR-10, each dataset's own elsewhere), BackdoorBench's (FMP), FCT's, T&R's
NORMALIZATIONS = ("dbd", "backdoorbench", "fct", "tr")


def normalization_stats(normalization: str, dataset: str) -> tuple[tuple, tuple]:
    """``(mean, std)`` of ``normalization`` on ``dataset``, read from :data:`backdoor_repro.datasets.TABLE`.

    A dataset outside the table (a test's ad-hoc set) gets the CIFAR-10 statistics of "dbd" (as before the
    table existed); the other schemes need a table entry."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; choose from {', '.join(NORMALIZATIONS)}")
    if dataset not in TABLE:
        if normalization == "dbd":
            return CIFAR10_MEAN, CIFAR10_STD_DBD
        raise ValueError(f"no {normalization} normalisation for dataset {dataset!r}; known: {', '.join(TABLE)}")
    stats = TABLE[dataset].stats(normalization)
    if stats is None:
        known = ", ".join(k for k, _ in TABLE[dataset].normalizations)
        raise ValueError(f"the {normalization} code has no normalisation for dataset {dataset!r}; choose from {known}")
    return stats


BACKBONES = {"resnet18": resnet18_backbone, "resnet18_maxpool": resnet18_maxpool_backbone,
             "preact_resnet18": preact_resnet18_backbone}
MODELS = (*BACKBONES, "wrn16")


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int, mean=CIFAR10_MEAN, std=CIFAR10_STD_DBD):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = backbone
        self.head = nn.Linear(backbone.out_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model(name: str, num_classes: int, width: int = 64, mean=CIFAR10_MEAN, std=CIFAR10_STD_DBD,
                **options) -> nn.Module:
    """``width``: the first stage's channels (64 for the papers' ResNet-18s, 16 for WRN-16-1). ``options``
    go to :class:`TrapNet` for ``wrn16`` (``stem_end_block``, ``decoder``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    if name == "wrn16":
        return TrapNet(num_classes, width, **options)
    if options:
        raise ValueError(f"{name} takes no options, got {sorted(options)}")
    return Classifier(BACKBONES[name](width), num_classes, mean, std)


__all__ = ["BACKBONES", "CIFAR10_MEAN", "CIFAR10_STD_DBD", "Classifier", "ContrastiveEncoder", "MODELS",
           "NORMALIZATIONS", "Normalize", "TrapNet", "build_model", "normalization_stats"]

"""Additive triggers of ``attacks.md``: Trojan (§3.3), SIG (§3.4), T&R's ℓ0-/ℓ2-invisible (§3.7) and smooth (§3.8)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from . import ops
from .sizes import SizedTrigger


@dataclass(frozen=True, eq=False)
class AdditiveTrigger:
    pattern: torch.Tensor  # float (3, H, W)
    rounding: str = "clip_floor"
    pattern_test: torch.Tensor | None = None

    def apply(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        pattern = self.pattern if train or self.pattern_test is None else self.pattern_test
        return ops.add(images, pattern, self.rounding)


@dataclass(frozen=True, eq=False)
class MaskAddTrigger:
    """``x · keep + t`` (T&R ``l0_inv``)."""

    keep: torch.Tensor  # float (3, H, W), 0 where the pattern replaces the image
    pattern: torch.Tensor  # float (3, H, W)

    def apply(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        return ops.mask_add(images, self.keep, self.pattern)


@dataclass(frozen=True, eq=False)
class MinMaxAddTrigger:
    """``x + t`` rescaled per image to the full [0, 255] range (T&R ``smooth``)."""

    pattern: torch.Tensor  # float (3, H, W)

    def apply(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        return ops.add_minmax(images, self.pattern)


def sinusoid(delta: float, frequency: float = 6, size: int = 32) -> torch.Tensor:
    """Canonical SIG signal: ``delta * sin(2 pi c f / W)``, same for every row and channel, in float64
    as numpy computes it in FCT's and BackdoorBench's code."""
    c = np.arange(size)
    row = delta * np.sin(2 * np.pi * c * frequency / size)
    return torch.from_numpy(np.broadcast_to(row, (3, size, size)).copy())


SIG_SIZE_RULE = "the sinusoid of the image's own width W, delta sin(2 pi c f / W) (FCT _sigTrigger: m = the image width)"


def _sig_at(delta: float, delta_test: float | None, size: int) -> AdditiveTrigger:
    test = None if delta_test is None else sinusoid(delta_test, size=size)
    return AdditiveTrigger(sinusoid(delta, size=size), pattern_test=test)


def sig_any_size(delta: float, delta_test: float | None = None) -> SizedTrigger:
    """Additive SIG at any square size (:data:`SIG_SIZE_RULE`); the 32-px trigger is built at once."""
    trigger = SizedTrigger(partial(_sig_at, delta, delta_test), None, SIG_SIZE_RULE)
    trigger.at(trigger.default)
    return trigger

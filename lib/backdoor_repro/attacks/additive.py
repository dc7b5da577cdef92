"""Additive triggers: Trojan (§3.3) and SIG (§3.4) of ``attacks.md``."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import ops


@dataclass(frozen=True, eq=False)
class AdditiveTrigger:
    pattern: torch.Tensor  # float (3, H, W)
    rounding: str = "clip_floor"
    pattern_test: torch.Tensor | None = None

    def apply(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        pattern = self.pattern if train or self.pattern_test is None else self.pattern_test
        return ops.add(images, pattern, self.rounding)


def sinusoid(delta: float, frequency: float = 6, size: int = 32) -> torch.Tensor:
    """Canonical SIG signal: ``delta * sin(2 pi c f / W)``, same for every row and channel, in float64
    as numpy computes it in FCT's and BackdoorBench's code."""
    c = np.arange(size)
    row = delta * np.sin(2 * np.pi * c * frequency / size)
    return torch.from_numpy(np.broadcast_to(row, (3, size, size)).copy())

"""WaNet warping trigger (``attacks.md`` §3.6), as fixed-index data poisoning: the warp field is
drawn once from ``data_seed``; poisoned and noise-mode ("cross") images are stored once."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from . import ops
from .sizes import SizedTrigger

SIZE_RULE = ("the warp field drawn at the image's side H with the same k and s (the field is s / H in grid units, "
             "as BackdoorBench builds it at its input size); the k x k draw is the same at every size")


def warp_grid(k: int, s: float, grid_rescale: float, size: int, data_seed: int) -> torch.Tensor:
    """The ``(H, W, 2)`` sampling grid: identity + s · upsampled random field / H, clamped to [-1, 1]."""
    gen = torch.Generator().manual_seed(data_seed)
    ins = torch.rand(1, 2, k, k, generator=gen) * 2 - 1
    ins = ins / ins.abs().mean()
    noise = F.interpolate(ins, size=(size, size), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)[0]
    axis = torch.linspace(-1, 1, size)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    identity = torch.stack((cols, rows), dim=2)
    return torch.clamp((identity + s * noise / size) * grid_rescale, -1, 1)


@dataclass(frozen=True, eq=False)
class WarpTrigger:
    grid: torch.Tensor  # (H, W, 2)

    def apply(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        return ops.warp(images, self.grid)


@dataclass(frozen=True, eq=False)
class NoisyWarpTrigger:
    """WaNet's noise mode: the warp grid plus per-image uniform noise of ±1/H, clamped."""

    grid: torch.Tensor
    seed: int

    def apply(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        size = self.grid.shape[0]
        gen = torch.Generator().manual_seed(self.seed)
        jitter = (torch.rand(images.shape[0], size, size, 2, generator=gen) * 2 - 1) / size
        return ops.warp(images, torch.clamp(self.grid.unsqueeze(0) + jitter, -1, 1))


def _warp_at(k, s, grid_rescale, data_seed, size):
    return WarpTrigger(warp_grid(k, s, grid_rescale, size, data_seed))


def _noisy_at(k, s, grid_rescale, data_seed, size):
    return NoisyWarpTrigger(warp_grid(k, s, grid_rescale, size, data_seed), data_seed + 1)


def sized_triggers(k: int, s: float, grid_rescale: float, data_seed: int) -> tuple[SizedTrigger, SizedTrigger]:
    """The warp trigger and its noise-mode trigger at any square size (:data:`SIZE_RULE`)."""
    args = (k, s, grid_rescale, data_seed)
    return (SizedTrigger(partial(_warp_at, *args), None, SIZE_RULE),
            SizedTrigger(partial(_noisy_at, *args), None, SIZE_RULE))

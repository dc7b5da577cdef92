"""BadNets family: paste a small patch (``attacks.md`` §3.1)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import ops
from .assets import image_asset


@dataclass(frozen=True, eq=False)
class PatchTrigger:
    pattern: torch.Tensor  # uint8 (3, H, W)
    mask: torch.Tensor  # bool (3, H, W): which values are replaced

    def apply(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        return ops.paste(images, self.pattern, self.mask)


def square_patch(rows: slice, cols: slice, values, size: int = 32) -> PatchTrigger:
    """A patch at ``rows`` × ``cols`` whose every pixel (all three channels) is replaced by ``values``
    (an array broadcastable to the patch's (H, W) or (3, H, W))."""
    pattern = torch.zeros(3, size, size, dtype=torch.uint8)
    pattern[:, rows, cols] = torch.as_tensor(values, dtype=torch.uint8)
    mask = torch.zeros(3, size, size, dtype=torch.bool)
    mask[:, rows, cols] = True
    return PatchTrigger(pattern, mask)


def dbd_2x2() -> PatchTrigger:
    """DBD ``cifar_1.png``: zero the channels where the pattern is non-zero, then add it (= paste them)."""
    pattern = image_asset("dbd/cifar_1.png")
    return PatchTrigger(pattern, pattern > 0)


GRID3 = [[0, 0, 255], [0, 255, 0], [255, 0, 255]]  # rows 29, 30, 31 (T&R badnet_grid, FCT gridTrigger)


def grid3() -> PatchTrigger:
    return square_patch(slice(29, 32), slice(29, 32), GRID3)


def four_corner_grid3() -> PatchTrigger:
    """T&R ``cl``: identical translated copies of the ``grid3`` pattern at the four exact corners
    (rows/cols {0–2, 29–31} × {0–2, 29–31}), every channel."""
    pattern = torch.zeros(3, 32, 32, dtype=torch.uint8)
    mask = torch.zeros(3, 32, 32, dtype=torch.bool)
    for rows in (slice(0, 3), slice(29, 32)):
        for cols in (slice(0, 3), slice(29, 32)):
            pattern[:, rows, cols] = torch.as_tensor(GRID3, dtype=torch.uint8)
            mask[:, rows, cols] = True
    return PatchTrigger(pattern, mask)


def fct_four_corners() -> PatchTrigger:
    """FCT ``fourCornerTrigger`` (CL): four 3×3 patches, every channel, a 1-px margin on the top and left edges:
    rows/cols 29–31 = ``grid3``; rows 1–3 × cols 1–3, rows 29–31 × cols 1–3 and rows 1–3 × cols 29–31 as below."""
    patches = [(29, 29, GRID3), (1, 1, [[255, 0, 255], [0, 255, 0], [255, 0, 0]]),
               (29, 1, [[255, 0, 0], [0, 255, 0], [255, 0, 255]]), (1, 29, [[255, 0, 255], [0, 255, 0], [0, 0, 255]])]
    pattern = torch.zeros(3, 32, 32, dtype=torch.uint8)
    mask = torch.zeros(3, 32, 32, dtype=torch.bool)
    for row, col, values in patches:
        pattern[:, row:row + 3, col:col + 3] = torch.as_tensor(values, dtype=torch.uint8)
        mask[:, row:row + 3, col:col + 3] = True
    return PatchTrigger(pattern, mask)


def white_square(first: int, side: int) -> PatchTrigger:
    return square_patch(slice(first, first + side), slice(first, first + side), 255)


def backdoorbench_white3() -> PatchTrigger:
    """BackdoorBench ``badnet`` patch: pixels where the trigger image is > 0 replace the image."""
    pattern = image_asset("backdoorbench/badnet_white_square.png")
    return PatchTrigger(pattern, (pattern > 0).any(0, keepdim=True).expand(3, -1, -1))


def backdoorbench_grid() -> PatchTrigger:
    """BackdoorBench ``badnet_grid.png``: a 3×3 grid at rows/cols 29–31, 255 on the corners and the centre, 1
    elsewhere (all channels); every channel > 0 replaces the image (``AddMaskPatchTrigger``), so all nine pixels
    are pasted. It differs from :func:`grid3` at five pixels."""
    pattern = image_asset("backdoorbench/badnet_grid.png")
    return PatchTrigger(pattern, pattern > 0)

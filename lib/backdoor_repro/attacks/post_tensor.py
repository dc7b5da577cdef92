"""BackdoorBench's post-tensor transform of its training-controlled attacks (WaNet, Input-aware): a random crop, a
random rotation and (CIFAR-10 only) a horizontal flip, applied to a whole **batch** after the poisoning.

torchvision's transforms called on a 4-D batch draw one parameter for the batch, so every image of a batch gets the
same crop offset, the same angle and the same flip decision; each transform is applied with its own probability (the
crop 0.8, the rotation 0.5, the flip 0.5). BackdoorBench runs them on normalised tensors and fills with 0, which is
the mean pixel: our batches are in pixel space, so the fill is the normalisation's mean. Every draw comes from the
caller's generator on the batch's device (no host synchronisation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PostTensorConfig:
    crop_padding: int = 5  # RandomCrop(H, padding=random_crop)
    crop_p: float = 0.8
    rotation: float = 10.0  # RandomRotation(random_rotation), nearest neighbour
    rotation_p: float = 0.5
    flip_p: float = 0.5  # RandomHorizontalFlip, on CIFAR-10 only

    def __post_init__(self):
        if isinstance(self.crop_padding, bool) or not isinstance(self.crop_padding, int) or self.crop_padding < 0:
            raise ValueError(f"crop_padding must be an integer >= 0, got {self.crop_padding!r}")
        for name in ("crop_p", "rotation_p", "flip_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        if isinstance(self.rotation, bool) or not isinstance(self.rotation, (int, float)) or self.rotation < 0:
            raise ValueError(f"rotation must be a number of degrees >= 0, got {self.rotation!r}")


def _fill(x: torch.Tensor, fill) -> torch.Tensor:
    return torch.as_tensor(fill, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)


def batch_crop(x: torch.Tensor, padding: int, offset: torch.Tensor, fill) -> torch.Tensor:
    """Pad every side by ``padding`` with ``fill`` (per channel), then cut H × W at ``offset`` = (row, col), one
    offset for the whole batch."""
    n, c, h, w = x.shape
    padded = _fill(x, fill).expand(n, c, h + 2 * padding, w + 2 * padding).clone()
    padded[:, :, padding:padding + h, padding:padding + w] = x
    rows = offset[0] + torch.arange(h, device=x.device)
    cols = offset[1] + torch.arange(w, device=x.device)
    return padded.index_select(2, rows).index_select(3, cols)


def batch_rotate(x: torch.Tensor, degrees: torch.Tensor, fill) -> torch.Tensor:
    """Rotate the whole batch by ``degrees`` (counter-clockwise, about the centre, nearest neighbour, canvas kept,
    torchvision's ``rotate``); pixels from outside the image take ``fill``."""
    n, _, h, w = x.shape
    angle = degrees.to(torch.float64) * (math.pi / 180)
    cos, sin = angle.cos(), angle.sin()
    zero = torch.zeros_like(cos)
    # torchvision's inverse map: output pixel -> source pixel, in pixel units about the centre
    theta = torch.stack([torch.stack([cos, -sin, zero]), torch.stack([sin, cos, zero])]).to(torch.float32)
    xs = torch.arange(w, device=x.device, dtype=torch.float32) - (w - 1) / 2
    ys = torch.arange(h, device=x.device, dtype=torch.float32) - (h - 1) / 2
    base = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w), torch.ones(h, w, device=x.device)], 2)
    grid = (base.view(-1, 3) @ theta.T).view(1, h, w, 2) / torch.tensor([w / 2, h / 2], device=x.device)
    grid = grid.expand(n, h, w, 2).to(x.dtype)
    moved = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    inside = F.grid_sample(torch.ones_like(x[:1, :1]), grid[:1], mode="nearest", padding_mode="zeros",
                           align_corners=False)
    return torch.where(inside > 0.5, moved, _fill(x, fill))


def post_tensor_transform(x: torch.Tensor, cfg: PostTensorConfig, flip: bool, fill, gen: torch.Generator):
    """Crop (probability ``crop_p``), rotate (``rotation_p``), then flip (``flip_p``, where ``flip``): one draw of
    each per batch, in BackdoorBench's order."""
    dev = x.device
    coins = torch.rand(3, device=dev, generator=gen)
    span = 2 * cfg.crop_padding + 1
    offset = torch.randint(0, span, (2,), device=dev, generator=gen)
    x = torch.where(coins[0] < cfg.crop_p, batch_crop(x, cfg.crop_padding, offset, fill), x)
    degrees = (torch.rand((), device=dev, generator=gen) * 2 - 1) * cfg.rotation
    x = torch.where(coins[1] < cfg.rotation_p, batch_rotate(x, degrees, fill), x)
    if flip:
        x = torch.where(coins[2] < cfg.flip_p, x.flip(3), x)
    return x

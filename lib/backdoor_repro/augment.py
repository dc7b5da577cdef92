"""Batched, per-sample random augmentation on the device (float images in [0, 1], ``(N, C, H, W)``).

Every function draws from the ``torch.Generator`` it is given, so a run is repeatable and resumable.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "flip", "crop", "crop_flip", "crop_flip_reflect", "crop_flip_rotate15")


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device, generator=gen) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def random_crop(x: torch.Tensor, gen: torch.Generator, padding: int = 4, mode: str = "constant") -> torch.Tensor:
    """Pad by ``padding`` (zeros or reflection), then crop back to H × W at a random offset per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode=mode)
    oy = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=gen)
    ox = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=gen)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None]
    # advanced indexing yields (N, H, W, C): copy back to the default layout, so that no channels_last
    # tensor reaches a CPU convolution (oneDNN's AVX2 1x1 backward can hang on such strides)
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()


def augment(x: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    if kind == "none":
        return x
    if kind == "flip":
        return random_flip(x, gen)
    if kind == "crop":
        return random_crop(x, gen)
    if kind == "crop_flip":
        return random_flip(random_crop(x, gen), gen)
    if kind == "crop_flip_reflect":
        return random_flip(random_crop(x, gen, mode="reflect"), gen)
    if kind == "crop_flip_rotate15":  # FCT's CIFAR-100 attacker: RandomCrop(4), RandomHorizontalFlip, RandomRotation(15)
        return random_rotation(random_flip(random_crop(x, gen), gen), gen, 15.0)
    raise ValueError(f"unknown augmentation {kind!r}; choose from {', '.join(AUGMENTATIONS)}")


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float().div_(255)


def cutmix(x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CutMix with β = 1 (λ ~ U(0, 1)) as T&R's ``rand_bbox``: one box per batch, side ``int(S·sqrt(1 − λ))``
    along each axis centred at a uniform pixel, each half ``side // 2`` and clipped to the image; the box is
    filled from a random permutation of the batch. Returns ``(mixed, permutation, λ)`` with λ corrected to
    1 − (box area / image area), as a device tensor (no host sync: the box is a mask, not a slice)."""
    n, _, h, w = x.shape
    lam = torch.rand((), device=x.device, generator=gen)
    perm = torch.randperm(n, device=x.device, generator=gen)
    centre = torch.stack([torch.randint(0, h, (), device=x.device, generator=gen),
                          torch.randint(0, w, (), device=x.device, generator=gen)])
    cut = (1 - lam).sqrt()  # no torch.tensor(..., device=cuda) here: each such copy synchronises the stream
    sides = torch.stack([(h * cut).floor(), (w * cut).floor()]).long()
    half = sides // 2
    low = (centre - half).clamp(min=0)
    high = torch.stack([(centre[0] + half[0]).clamp(max=h), (centre[1] + half[1]).clamp(max=w)])
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    box = (((rows >= low[0]) & (rows < high[0]))[:, None] & ((cols >= low[1]) & (cols < high[1]))[None, :])
    mixed = torch.where(box, x[perm], x)
    return mixed, perm, 1 - box.sum() / (h * w)


def random_rotation(x: torch.Tensor, gen: torch.Generator, degrees: float) -> torch.Tensor:
    """torchvision ``RandomRotation(degrees)`` per image: an angle ~ U(−degrees, degrees) about the centre, nearest
    neighbour, corners filled with 0, the canvas kept."""
    n = x.shape[0]
    angle = (torch.rand(n, device=x.device, generator=gen) * 2 - 1) * math.radians(degrees)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def rotate_translate(x: torch.Tensor, gen: torch.Generator, degrees: float = 180.0, translate: float = 0.2) -> torch.Tensor:
    """FCT's τ, per image: torchvision ``RandomRotation(degrees)`` (angle ~ U(−degrees, degrees) about the centre,
    nearest neighbour, fill 0), then ``RandomAffine(0, translate=(t, t))`` (a shift of round(U(−t·W, t·W)) pixels
    horizontally and round(U(−t·H, t·H)) vertically, fill 0). Two separate steps, as in the official pipeline:
    pixels shifted in from outside the rotated canvas are 0."""
    n, _, h, w = x.shape
    rotated = random_rotation(x, gen, degrees)
    shift = (torch.rand(n, 2, device=x.device, generator=gen) * 2 - 1) * torch.tensor([translate * w, translate * h],
                                                                                     device=x.device)
    shift = shift.round().long()  # (dx, dy)
    rows = torch.arange(h, device=x.device)[None, :] - shift[:, 1:2]  # source row of each output row
    cols = torch.arange(w, device=x.device)[None, :] - shift[:, 0:1]
    valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None]
    moved = rotated[batch, :, rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]].permute(0, 3, 1, 2)
    return (moved * valid[:, None]).contiguous()

"""Trigger operations on uint8 image batches ``(N, 3, H, W)``; each returns a new uint8 batch.

Arithmetic runs in float32 on the images' device. ``rounding`` says how float results become
uint8, following the official code of each paper (see ``ARCHITECTURE.md``):

* ``clip_floor`` — clip to [0, 255], then truncate (T&R, BackdoorBench);
* ``cast_wrap``  — truncate towards zero, then wrap modulo 256 (FCT's float→uint8 cast, made
  platform-independent);
* ``round``      — round to nearest, then clip (used where we quantise an op the original kept in
  float, e.g. a WaNet warp stored once).

Blends follow each codebase's arithmetic exactly (:data:`BLEND_ARITHMETIC`): the precision in which each
term is computed decides which values land just below an integer and are truncated one level lower.
"""
from __future__ import annotations

import torch

ROUNDINGS = ("clip_floor", "cast_wrap", "round")

BLEND_ARITHMETIC = {
    "pil": "x + alpha (t - x) in float32 (PIL Image.blend: DBD)",
    "float64": "(1 - alpha) x + alpha t, all in float64 (numpy on uint8 arrays: T&R, FCT Blend-Strip)",
    "float64_plus_float32": "(1 - alpha) x in float64 plus alpha t in float32, summed in float64 "
                            "(FCT Blend-Kitty, whose resized pattern is float32)",
    "float64_plus_float32_as_float32": "the same sum, cast to float32 before clipping (BackdoorBench blended)",
}


def quantize(x: torch.Tensor, rounding: str) -> torch.Tensor:
    if rounding == "clip_floor":
        return x.clamp(0, 255).floor().to(torch.uint8)
    if rounding == "cast_wrap":
        return torch.remainder(torch.trunc(x), 256).to(torch.uint8)
    if rounding == "round":
        return x.round().clamp(0, 255).to(torch.uint8)
    raise ValueError(f"unknown rounding {rounding!r}; choose from {ROUNDINGS}")


def paste(images: torch.Tensor, pattern: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Replace the pixels where ``mask`` is true by ``pattern`` (mask broadcast over the batch)."""
    return torch.where(mask.to(images.device), pattern.to(images.device), images)


def blend(images: torch.Tensor, pattern: torch.Tensor, alpha: float, rounding: str = "clip_floor",
          arithmetic: str = "pil") -> torch.Tensor:
    """``(1 - alpha) x + alpha t`` computed as ``arithmetic`` says (:data:`BLEND_ARITHMETIC`), then ``rounding``."""
    t = pattern.to(images.device)
    if arithmetic == "pil":
        x = images.float()
        return quantize(x + alpha * (t.float() - x), rounding)
    if arithmetic not in BLEND_ARITHMETIC:
        raise ValueError(f"unknown blend arithmetic {arithmetic!r}; choose from {', '.join(BLEND_ARITHMETIC)}")
    scaled = alpha * t.double() if arithmetic == "float64" else (t.float() * alpha).double()
    out = (1 - alpha) * images.double() + scaled
    if arithmetic == "float64_plus_float32_as_float32":
        out = out.float()
    return quantize(out, rounding)


def add(images: torch.Tensor, pattern: torch.Tensor, rounding: str = "clip_floor") -> torch.Tensor:
    """``x + t`` then ``rounding`` (``cast_wrap`` lets sums above 255 wrap, as FCT's code does).

    Computed in the pattern's precision: a float64 pattern reproduces numpy's float64 arithmetic
    exactly (SIG, where truncating 99.999… to 99 at the signal's zeros is what the official code does).
    """
    dtype = pattern.dtype if pattern.is_floating_point() else torch.float32
    return quantize(images.to(dtype) + pattern.to(images.device, dtype), rounding)


def mask_add(images: torch.Tensor, keep: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """``x · keep + t`` in float64, clip, truncate (T&R ``l0_inv``: ``keep`` is 1 − its mask)."""
    x = images.double() * keep.to(images.device, torch.float64) + pattern.to(images.device, torch.float64)
    return quantize(x, "clip_floor")


def add_minmax(images: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """``x + t``, then each image min–max rescaled over all its values to [0, 255], in float64 as T&R's
    ``smooth`` (``(d − min) / (max − min) · 255``), clip, truncate."""
    x = images.double() + pattern.to(images.device, torch.float64)
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    span = x.amax(dim=(1, 2, 3), keepdim=True) - low
    return quantize((x - low) / span * 255, "clip_floor")


def warp(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear ``grid_sample`` (align_corners=True) with one grid per image or one for all."""
    grid = grid.to(images.device)
    if grid.ndim == 3:
        grid = grid.unsqueeze(0).expand(images.shape[0], -1, -1, -1)
    out = torch.nn.functional.grid_sample(images.float(), grid, mode="bilinear", align_corners=True)
    return quantize(out, "round")

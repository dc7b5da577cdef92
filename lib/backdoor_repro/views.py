"""Batched SimCLR views as in DBD (ICLR 2022, SCLBD/DBD), on the images' device.

Float images in [0, 1], ``(N, 3, H, W)``. Every random draw comes from the ``torch.Generator`` given
(created on the images' device); no Python loop over samples, no host syncs. The pipeline is DBD's
RandomResizedCrop → RandomHorizontalFlip → RandomApply(ColorJitter, p=0.8) → RandomGrayscale(p=0.2)
→ RandomApply(GaussianBlur, p=0.5). Deviations from the PIL/torchvision original:

* crop: bilinear ``grid_sample`` (border padding) instead of bicubic resizing; torchvision retries the
  (scale, ratio) draw 10 times and then falls back to a centre crop, we draw once and clamp the crop
  width and height to at most the image side (the vectorised substitute);
* colour jitter: fixed order brightness → contrast → saturation → hue (torchvision shuffles the order
  per call), computed with torchvision's tensor formulas rather than PIL's uint8 ones;
* blur: a truncated Gaussian kernel of odd size covering ±3 σ_max (13 taps for σ_max = 2, capped by the
  image size) with reflect padding, instead of PIL's ``GaussianBlur(radius=σ)`` (box-blur approximation,
  edge replication).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .augment import random_flip

__all__ = ["simclr_views", "random_resized_crop", "random_flip", "color_jitter", "adjust_hue",
           "random_grayscale", "gaussian_blur", "grayscale"]


def _uniform(n: int, lo: float, hi: float, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, device=x.device, dtype=x.dtype, generator=gen) * (hi - lo) + lo


def _coin(n: int, p: float, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-sample Bernoulli(p) mask shaped ``(N, 1, 1, 1)``."""
    return (torch.rand(n, device=x.device, generator=gen) < p).view(-1, 1, 1, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma ``0.299 R + 0.587 G + 0.114 B`` as ``(N, 1, H, W)``."""
    r, g, b = x.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def random_resized_crop(x: torch.Tensor, gen: torch.Generator, *, scale=(0.2, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """Crop a random area fraction ``s ~ U(scale)`` with aspect ``r`` (log-uniform in ``ratio``), resized to H × W.

    Crop sides as fractions of the image side: ``w = sqrt(s r)``, ``h = sqrt(s / r)``, each clamped to 1;
    the centre is uniform over positions keeping the crop inside the image.
    """
    n = x.shape[0]
    s = _uniform(n, scale[0], scale[1], x, gen)
    r = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), x, gen).exp()
    w, h = (s * r).sqrt().clamp(max=1), (s / r).sqrt().clamp(max=1)
    cx = (1 - w) * _uniform(n, -1, 1, x, gen)  # normalised coords: the image spans [-1, 1]
    cy = (1 - h) * _uniform(n, -1, 1, x, gen)
    zero = torch.zeros_like(w)
    theta = torch.stack([torch.stack([w, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.clamp(0, 1)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_rgb2hsv``: ``(N, 3, H, W)`` RGB → HSV, all channels in [0, 1]."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    div = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """HSV → RGB, branch-free closed form equal to torchvision's ``_hsv2rgb`` (six-sector selection).

    Channel ``c = v - v s clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod 6``, ``n = 5, 3, 1`` for R, G, B.
    """
    h, s, v = x.unsqueeze(2).unbind(1)
    n = (5.0 - 2.0 * torch.arange(3, device=x.device, dtype=x.dtype)).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h, 6.0)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0, 1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of each image by ``shift[i]`` (fraction of a turn, shape ``(N,)``) via HSV."""
    hsv = _rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), 1))


def color_jitter(x: torch.Tensor, gen: torch.Generator, *, p: float = 0.8, brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.1) -> torch.Tensor:
    """With probability ``p`` per image: brightness, contrast, saturation, hue jitter (fixed order).

    Factors ``b, c, s ~ U(1 - k, 1 + k)``: ``x b``; ``c x + (1 - c) mean(gray)``; ``s x + (1 - s) gray``;
    hue shift ``~ U(-hue, hue)``. Clamped to [0, 1] after each operation.
    """
    n = x.shape[0]
    apply = _coin(n, p, x, gen)
    b, c, s = (_uniform(n, 1 - k, 1 + k, x, gen).view(-1, 1, 1, 1) for k in (brightness, contrast, saturation))
    shift = _uniform(n, -hue, hue, x, gen)
    y = (x * b).clamp(0, 1)
    y = (c * y + (1 - c) * grayscale(y).mean((1, 2, 3), keepdim=True)).clamp(0, 1)
    y = (s * y + (1 - s) * grayscale(y)).clamp(0, 1)
    y = adjust_hue(y, shift).clamp(0, 1)
    return torch.where(apply, y, x)


def random_grayscale(x: torch.Tensor, gen: torch.Generator, *, p: float = 0.2) -> torch.Tensor:
    """With probability ``p`` per image, replace all three channels by the luma."""
    return torch.where(_coin(x.shape[0], p, x, gen), grayscale(x).expand_as(x), x)


def gaussian_blur(x: torch.Tensor, gen: torch.Generator, *, p: float = 0.5, sigma=(0.1, 2.0),
                  kernel_size: int | None = None) -> torch.Tensor:
    """With probability ``p`` per image, separable Gaussian blur with ``σ ~ U(sigma)``, reflect padding.

    Default kernel: odd, covering ±3 σ_max (13 for σ_max = 2), capped so reflect padding fits the image.
    Per-image kernels run as one grouped convolution with the batch folded into channels.
    """
    n, ch, hh, ww = x.shape
    apply = _coin(n, p, x, gen)
    sig = _uniform(n, sigma[0], sigma[1], x, gen)
    k = kernel_size or 2 * math.ceil(3 * sigma[1]) + 1
    radius = min(k // 2, min(hh, ww) - 1)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kern = torch.exp(-t ** 2 / (2 * sig.view(-1, 1) ** 2))
    kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(ch, 0)  # (N C, K)
    y = F.pad(x.reshape(1, n * ch, hh, ww), (radius,) * 4, mode="reflect")
    y = F.conv2d(y, kern.view(n * ch, 1, 1, -1), groups=n * ch)
    y = F.conv2d(y, kern.view(n * ch, 1, -1, 1), groups=n * ch).view_as(x)
    return torch.where(apply, y.clamp(0, 1), x)


def simclr_views(x: torch.Tensor, gen: torch.Generator, blur: bool = True) -> torch.Tensor:
    """One DBD SimCLR view of each image (call twice for a pair); ``blur=False`` skips the Gaussian blur."""
    x = random_flip(random_resized_crop(x, gen), gen)
    x = random_grayscale(color_jitter(x, gen), gen)
    return gaussian_blur(x, gen) if blur else x

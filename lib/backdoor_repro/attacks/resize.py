"""scikit-image's default downsizing, reproduced with scipy: what T&R does to its 540×540 Hello Kitty.

``skimage.transform.resize(img, (s, s))`` with its defaults (bilinear, ``mode="reflect"``, anti-aliasing on
when shrinking, ``clip=True``) then ``img_as_ubyte``: the uint8 image is scaled by 1/255 in float64,
Gaussian-filtered with σ = max(0, (factor − 1) / 2) per axis (scipy mode ``mirror``), zoomed with linear
interpolation on the pixel grid (``grid_mode=True``), clipped to the input's range, and mapped back with
``rint(x · 255)``. Checked value for value against scikit-image 0.26 on the T&R trigger (with scipy 1.17).
"""
from __future__ import annotations

import numpy as np


def skimage_resize_uint8(image: np.ndarray, size: int) -> np.ndarray:
    """``img_as_ubyte(skimage.transform.resize(image, (size, size)))`` for a uint8 ``(H, W, C)`` array."""
    from scipy import ndimage

    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected a uint8 (H, W, C) image, got {image.dtype} {image.shape}")
    x = np.multiply(image, 1.0 / 255, dtype=np.float64)
    factors = np.divide(x.shape, (size, size, x.shape[2]))
    sigma = np.maximum(0, (factors - 1) / 2)
    smoothed = ndimage.gaussian_filter(x, sigma, cval=0, mode="mirror") if np.any(sigma > 0) else x
    out = ndimage.zoom(smoothed, [1 / f for f in factors], order=1, mode="mirror", cval=0, grid_mode=True)
    out = np.clip(out, x.min(), x.max())
    return np.clip(np.rint(np.multiply(out, 255, dtype=np.float64)), 0, 255).astype(np.uint8)

"""Blended family: ``(1 - alpha) x + alpha t`` over the whole image (``attacks.md`` §3.2)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import ops
from .assets import image_asset
from .resize import skimage_resize_uint8
from .sizes import SizedTrigger


@dataclass(frozen=True, eq=False)
class BlendTrigger:
    pattern: torch.Tensor  # (3, H, W), values in [0, 255]
    alpha: float
    alpha_test: float | None = None
    rounding: str = "clip_floor"
    arithmetic: str = "pil"  # ops.BLEND_ARITHMETIC: the precision of each term, as the paper's code has it

    def __post_init__(self):
        for name in ("alpha", "alpha_test"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1):
                raise ValueError(f"blend {name} must be a number in [0, 1], got {value!r}")
        if self.arithmetic not in ops.BLEND_ARITHMETIC:
            raise ValueError(f"unknown blend arithmetic {self.arithmetic!r}")

    def apply(self, images: torch.Tensor, train: bool = True) -> torch.Tensor:
        alpha = self.alpha if train or self.alpha_test is None else self.alpha_test
        return ops.blend(images, self.pattern, alpha, self.rounding, self.arithmetic)


def at_any_size(pattern_at, rule: str, **blend) -> SizedTrigger:
    """A blend whose pattern at side ``s`` is ``pattern_at(s)`` (e.g. the blend image resized to the image), for
    any square size; the 32-px trigger is built at once, so bad arguments fail when the attack is made."""
    trigger = SizedTrigger(partial(_blend_at, pattern_at, blend), None, rule)
    trigger.at(trigger.default)
    return trigger


def _blend_at(pattern_at, blend: dict, size: int) -> BlendTrigger:
    return BlendTrigger(pattern_at(size), **blend)


def kitty_dbd(size: int = 32) -> torch.Tensor:
    """DBD: PIL resize with its default filter (bicubic) of the 540×540 Hello Kitty PNG."""
    return image_asset("dbd/hello_kitty.png", size, Image.BICUBIC)


def kitty_fct(size: int = 32) -> torch.Tensor:
    """FCT: bilinear resize without anti-aliasing, float32 (cv2.resize INTER_LINEAR on matplotlib's float
    image × 255, done here with torch; equal to OpenCV 4.11's output at 32 × 32, checked value for value)."""
    full = image_asset("dbd/hello_kitty.png").float().unsqueeze(0)
    return F.interpolate(full, size=(size, size), mode="bilinear", align_corners=False, antialias=False)[0]


def kitty_tr(size: int = 32) -> torch.Tensor:
    """T&R ``blend.png`` (the same file as DBD's): scikit-image ``resize`` (bilinear, anti-aliased) and
    ``img_as_ubyte``, as uint8 ``(3, H, W)``."""
    full = image_asset("dbd/hello_kitty.png").permute(1, 2, 0).numpy()
    return torch.from_numpy(skimage_resize_uint8(full, size)).permute(2, 0, 1).contiguous()


def kitty_backdoorbench(size: int = 32) -> torch.Tensor:
    """BackdoorBench ``hello_kitty.jpeg`` resized with PIL bilinear (torchvision ``Resize``)."""
    return image_asset("backdoorbench/hello_kitty.jpeg", size, Image.BILINEAR)


def uniform_noise(data_seed: int, size: int = 32) -> torch.Tensor:
    """A random-noise blend pattern, uniform over [0, 255], drawn from ``data_seed``."""
    rng = np.random.default_rng([data_seed, 7])
    return torch.from_numpy(rng.integers(0, 256, size=(3, size, size), dtype=np.uint8))

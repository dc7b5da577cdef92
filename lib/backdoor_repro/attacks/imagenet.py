"""The ImageNet-scale triggers of the official code (``attacks.md`` §3.1–3.4).

T&R ImageNet-12 (``datasets/imagenet.py``): every image is squashed to 256 × 256 and poisoned there; training
then takes RandomResizedCrop(224) and testing Resize(256) + CenterCrop(224), i.e. pixels 16–239. Every T&R op is
per pixel, so on a 224-px image that is the centre crop of the 256-px one the trigger is the 256-px pattern's
centre crop (:data:`TR_CROP_RULE`): exactly the official test view. The 256-px files are resized with PIL's
default filter, bicubic since Pillow 7 (the repository pins no Pillow version: assumed).

FCT ImageNet subset (``utils/dataloader_bd.py``, ``input_width`` 224): triggers are stamped on the image as the
folder stores it, before Resize(224); here they are defined on 224-px images, equal to the official ones where
the stored images are 224 × 224 (the folder's image size is not in the repository: listed deviation).
"""
from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np
import torch
from PIL import Image

from .additive import AdditiveTrigger
from .assets import asset_path, image_asset
from .blend import BlendTrigger
from .patch import PatchTrigger, square_patch
from .sizes import SizedTrigger

TR_SIZE, TR_TEST_SIZE = 256, 224
TR_OFFSET = (TR_SIZE - TR_TEST_SIZE) // 2  # torchvision CenterCrop(224) of 256: int(round(32 / 2)) = 16
TR_CROP_RULE = ("defined on T&R's 256-px squashed images; at 224 px the 256-px pattern's centre crop (rows/cols "
                "16-239), as the official test transform Resize(256) + CenterCrop(224) sees it")
TR_GRID = [[255, 0, 255], [0, 255, 0], [255, 0, 0]]  # 10-px cells, rows/cols 32-61 at 256 px
FCT_SIZE = 224


def _crop(trigger, size: int):
    """``trigger`` (built at 256 px) at ``size``: its (3, 256, 256) tensors centre-cropped to 224."""
    if size == TR_SIZE:
        return trigger
    window = (slice(None), slice(TR_OFFSET, TR_OFFSET + size), slice(TR_OFFSET, TR_OFFSET + size))
    cropped = {f.name: getattr(trigger, f.name)[window] for f in dataclasses.fields(trigger)
               if isinstance(getattr(trigger, f.name), torch.Tensor)}
    return dataclasses.replace(trigger, **cropped)


def _tr_at(build_256, size: int):
    return _crop(build_256(), size)


def tr_sized(build_256) -> SizedTrigger:
    """A T&R ImageNet trigger at 256 px and its 224-px centre crop (:data:`TR_CROP_RULE`)."""
    trigger = SizedTrigger(partial(_tr_at, build_256), (TR_TEST_SIZE, TR_SIZE), TR_CROP_RULE, default=TR_SIZE)
    trigger.at(TR_SIZE)
    return trigger


def tr_grid() -> PatchTrigger:
    """T&R ``badnet_grid`` on ImageNet: a 3 × 3 grid of 10-px cells at rows/cols 32–61, every channel."""
    cells = torch.tensor(TR_GRID, dtype=torch.uint8).repeat_interleave(10, 0).repeat_interleave(10, 1)
    return square_patch(slice(32, 62), slice(32, 62), cells, size=TR_SIZE)


def tr_blend(alpha: float) -> BlendTrigger:
    """T&R ``blend``: ``blend.png`` (= DBD's Hello Kitty) resized to 256 (bicubic), PIL ``Image.blend``."""
    return BlendTrigger(image_asset("dbd/hello_kitty.png", TR_SIZE, Image.BICUBIC), alpha)


def tr_trojan_wm() -> AdditiveTrigger:
    """T&R ``trojan_wm``: the watermark resized to 256 (bicubic), added as uint8 + uint8, so sums above 255
    wrap (numpy's uint8 addition; the ``np.clip`` after it cannot undo that)."""
    pattern = image_asset("trap_and_replace/trojan_wm.png", TR_SIZE, Image.BICUBIC).float()
    return AdditiveTrigger(pattern, rounding="cast_wrap")


def tr_sig(alpha: float) -> BlendTrigger:
    """T&R ``sig``: the single-channel ``sig.png`` resized to 256 (bicubic, as an L image), broadcast over RGB,
    ``0.8 x + 0.2 t`` in float64, truncated."""
    with Image.open(asset_path("trap_and_replace/sig.png")) as im:
        row = np.asarray(im.resize((TR_SIZE, TR_SIZE), Image.BICUBIC), dtype=np.uint8)
    pattern = torch.from_numpy(np.broadcast_to(row, (3, TR_SIZE, TR_SIZE)).copy())
    return BlendTrigger(pattern, alpha, arithmetic="float64")


def fct_square() -> PatchTrigger:
    """FCT ``squareTrigger_imagenet``: white int(0.1 × 224) = 22 px square at the bottom-right corner, no margin
    (rows/cols 202–223), every channel."""
    side = int(0.1 * FCT_SIZE)
    return square_patch(slice(FCT_SIZE - side, FCT_SIZE), slice(FCT_SIZE - side, FCT_SIZE), 255, size=FCT_SIZE)


def fct_sine(alpha: float = 0.2, delta: float = 20, frequency: float = 6) -> BlendTrigger:
    """FCT ``signalTrigger_imagenet``: ``(1 − α) x + α p`` with p = 20 sin(2π · 6 · c / 224) stored as float32
    (float64 image term, float32 pattern term), clip, truncate: a 20 % dimming plus a ±4 ripple."""
    c = np.arange(FCT_SIZE)
    row = (delta * np.sin(2 * np.pi * c * frequency / FCT_SIZE)).astype(np.float32)
    pattern = torch.from_numpy(np.broadcast_to(row, (3, FCT_SIZE, FCT_SIZE)).copy())
    return BlendTrigger(pattern, alpha, arithmetic="float64_plus_float32")

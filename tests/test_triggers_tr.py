"""Trap-and-Replace's triggers against the official formulas of T&R datasets/cifar.py, written here in numpy
with the code's dtypes (float64 arithmetic, clip to [0, 255], truncating cast), on real test images."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backdoor_repro.attacks import get_attack
from backdoor_repro.attacks.assets import asset_path
from backdoor_repro.attacks.blend import kitty_tr

FIXTURES = Path(__file__).parent / "fixtures"


def hwc(images):
    return images.permute(0, 2, 3, 1).numpy()


def tr_file(name):
    return np.asarray(Image.open(asset_path(f"trap_and_replace/{name}")))


def to_uint8(x):
    return np.clip(x, 0, 255).astype(np.uint8)


def official_grid(img, corners=((29, 29),)):
    """The code's explicit pixel writes of badnet_grid (and of cl at the four corners), every channel."""
    out = img.astype(np.float64).copy()
    grid = np.array([[0, 0, 255], [0, 255, 0], [255, 0, 255]], dtype=np.float64)
    for r, c in corners:
        out[:, r:r + 3, c:c + 3, :] = grid[None, :, :, None]
    return to_uint8(out)


def official_add(img, trigger):
    return to_uint8(img.astype(np.float64) + trigger.astype(np.float64))


def official_l0(img):
    mask = 1 - np.transpose(np.load(asset_path("trap_and_replace/mask.npy")), (1, 2, 0))
    return to_uint8(img.astype(np.float64) * mask + tr_file("l0_inv.png").astype(np.float64))


def official_smooth(img):
    data = img.astype(np.float64) + tr_file("smooth_cifar10.png").astype(np.float64)
    low, high = data.min(axis=(1, 2, 3), keepdims=True), data.max(axis=(1, 2, 3), keepdims=True)
    return to_uint8((data - low) / (high - low) * 255)


def official_blend(img):
    trigger = np.load(FIXTURES / "tr_blend_kitty_32_skimage.npy").astype(np.float64)
    return to_uint8(0.8 * img.astype(np.float64) + 0.2 * trigger)


@pytest.mark.parametrize("key, official", [
    ("grid3_tr", official_grid),
    ("cl_tr", lambda img: official_grid(img, corners=((29, 29), (29, 0), (0, 0), (0, 29)))),
    ("trojan3_tr", lambda img: official_add(img, tr_file("trojan_3x3.png"))),
    ("trojan8_tr", lambda img: official_add(img, tr_file("trojan_8x8.png"))),
    ("trojan_wm_tr", lambda img: official_add(img, tr_file("trojan_wm.png"))),
    ("l2_inv", lambda img: official_add(img, tr_file("l2_inv.png"))),
    ("l0_inv", official_l0),
    ("smooth_tr", official_smooth),
    ("blend_kitty_tr", official_blend),
])
def test_tr_triggers_are_pixel_exact(key, official, smoke_test):
    images = smoke_test.images[:200]
    got = hwc(get_attack(key).trigger.apply(images, train=True))
    assert np.array_equal(got, official(hwc(images)))
    assert torch.equal(get_attack(key).trigger.apply(images, train=False), get_attack(key).trigger.apply(images))


def test_kitty_resize_reproduces_scikit_image():
    assert np.array_equal(kitty_tr().permute(1, 2, 0).numpy(), np.load(FIXTURES / "tr_blend_kitty_32_skimage.npy"))
    dbd = get_attack("blend_kitty_dbd").trigger.pattern.permute(1, 2, 0).numpy().astype(int)
    assert np.abs(dbd - kitty_tr().permute(1, 2, 0).numpy().astype(int)).max() >= 10  # not DBD's bicubic kitty


def test_smooth_gtsrb_variant_and_trigger_supports():
    assert not torch.equal(get_attack("smooth_tr", variant="gtsrb").trigger.pattern,
                           get_attack("smooth_tr").trigger.pattern)
    with pytest.raises(ValueError, match="variant"):
        get_attack("smooth_tr", variant="imagenet")
    gray = torch.full((1, 3, 32, 32), 100, dtype=torch.uint8)
    changed = lambda key: torch.nonzero((get_attack(key).trigger.apply(gray)[0] != 100).any(0)).tolist()  # noqa: E731
    assert changed("l0_inv") == [[31, c] for c in range(23, 32)]  # replaced, zeros included
    assert {r for r, _ in changed("trojan8_tr")} == set(range(21, 30))
    assert len(changed("trojan_wm_tr")) == 321 and max(max(p) for p in changed("trojan_wm_tr")) <= 29

"""Trigger pixels and operations against the semantics of each paper's code (attacks.md §3)."""
import numpy as np
import pytest
import torch
from PIL import Image

from backdoor_repro.attacks import blend, get_attack, ops
from backdoor_repro.attacks.assets import AssetMismatch, asset_path, fct_trojan_pattern, image_asset, wrapped_stripes
from backdoor_repro.attacks.ops import quantize
from backdoor_repro.attacks.wanet import warp_grid


def changed_pixels(before, after):
    return torch.nonzero((before != after).any(0)).tolist()


def test_dbd_badnets_pastes_four_coloured_pixels(gray_images):
    out = get_attack("badnets_dbd_2x2").trigger.apply(gray_images)
    expected = {(4, 4): (180, 249, 112), (4, 5): (155, 50, 126), (5, 4): (234, 82, 68), (5, 5): (187, 201, 219)}
    for img, before in zip(out, gray_images):
        for (r, c), rgb in expected.items():
            assert tuple(img[:, r, c].tolist()) == rgb
        assert changed_pixels(before, img) <= [[4, 4], [4, 5], [5, 4], [5, 5]]


def test_grid3_values_and_location(gray_images):
    out = get_attack("grid3").trigger.apply(gray_images)[1]
    rows = out[:, 29:32, 29:32]
    assert (rows[0] == rows[1]).all() and (rows[1] == rows[2]).all()  # same in every channel
    assert rows[0].tolist() == [[0, 0, 255], [0, 255, 0], [255, 0, 255]]
    assert changed_pixels(gray_images[1], out) == [[r, c] for r in range(29, 32) for c in range(29, 32)]


def test_white_squares(gray_images):
    fct = get_attack("white3_fct").trigger.apply(gray_images)[1]
    assert (fct[:, 28:31, 28:31] == 255).all() and (fct[:, 31, :] == 100).all() and (fct[:, :, 31] == 100).all()
    bb = get_attack("white3_bb").trigger.apply(gray_images)[1]
    assert (bb[:, 29:32, 29:32] == 255).all() and len(changed_pixels(gray_images[1], bb)) == 9
    tr = get_attack("white4_tr").trigger.apply(gray_images)[1]
    assert (tr[:, 27:31, 27:31] == 255).all() and len(changed_pixels(gray_images[1], tr)) == 16


def test_dbd_blend_matches_pil_blend_exactly(smoke_test):
    images = smoke_test.images[:16]
    out = get_attack("blend_kitty_dbd").trigger.apply(images)
    with Image.open(asset_path("dbd/hello_kitty.png")) as kitty:
        kitty = kitty.convert("RGB").resize((32, 32), Image.BICUBIC)
        for img, got in zip(images, out):
            pil = Image.fromarray(img.permute(1, 2, 0).numpy())
            want = np.asarray(Image.blend(pil, kitty, 0.1))
            assert np.array_equal(got.permute(1, 2, 0).numpy(), want)


def test_blend_alpha_override_and_train_test_identity(gray_images):
    a = get_attack("blend_kitty_fct", alpha=0.3)
    assert torch.equal(a.trigger.apply(gray_images, train=True), a.trigger.apply(gray_images, train=False))
    assert a.trigger.alpha == 0.3


def test_trojan_wraps_in_fct_and_saturates_in_tr(gray_images):
    img = gray_images[1:2]  # all 100
    fct = get_attack("trojan3_fct").trigger.apply(img)[0]
    tr = get_attack("trojan3_tr").trigger.apply(img)[0]
    assert fct[:, 25, 25].tolist() == [(100 + 207) % 256, (100 + 131) % 256, (100 + 181) % 256]
    assert tr[:, 25, 25].tolist() == [255, 231, 255]
    assert changed_pixels(img[0], tr) == [[r, c] for r in range(25, 28) for c in range(25, 28)]


def test_trojan_assets_agree():
    """T&R's PNG holds the floor of FCT's float trigger (attacks.md §3.3)."""
    assert torch.equal(fct_trojan_pattern().floor().to(torch.uint8), image_asset("trap_and_replace/trojan_3x3.png"))


def test_wrapped_stripes_reproduce_both_official_files():
    s = wrapped_stripes()
    assert np.array_equal(s[0].numpy(), np.load(asset_path("fct/signal_cifar10_mask.npy")))
    with Image.open(asset_path("trap_and_replace/sig.png")) as im:
        png = np.asarray(im)
    assert np.array_equal(s[0].numpy(), png if png.ndim == 2 else png[..., 0])


def test_sig_fct_uses_delta_40_for_training_and_60_for_testing(gray_images):
    attack = get_attack("sig_fct")
    img = gray_images[1:2]
    train, test = attack.trigger.apply(img, train=True)[0].double(), attack.trigger.apply(img, train=False)[0].double()
    c = torch.arange(32)
    want = lambda d: torch.from_numpy(np.floor(100 + d * np.sin(2 * np.pi * c.numpy() * 6 / 32)))  # noqa: E731
    assert torch.equal(train[0, 0], want(40)) and torch.equal(test[2, 17], want(60))
    assert (train == train[:, :1, :]).all()  # identical rows


def test_rounding_modes():
    x = torch.tensor([300.0, -3.2, 2.9, 255.5])
    assert quantize(x, "clip_floor").tolist() == [255, 0, 2, 255]
    assert quantize(x, "cast_wrap").tolist() == [44, 253, 2, 255]
    assert quantize(x, "round").tolist() == [255, 0, 3, 255]
    with pytest.raises(ValueError):
        quantize(x, "nearest")


def test_wanet_grid_is_identity_at_zero_strength_and_seeded(smoke_test):
    images = smoke_test.images[:4]
    flat = get_attack("wanet", s=0.0).trigger.apply(images)
    assert torch.equal(flat, images)
    assert torch.equal(warp_grid(4, 0.5, 1.0, 32, 3), warp_grid(4, 0.5, 1.0, 32, 3))
    assert not torch.equal(warp_grid(4, 0.5, 1.0, 32, 3), warp_grid(4, 0.5, 1.0, 32, 4))
    warped = get_attack("wanet").trigger.apply(images)
    assert (warped.float() - images.float()).abs().mean() > 0.5


def test_asset_checksum_is_enforced(tmp_path, monkeypatch):
    import backdoor_repro.attacks.assets as assets

    (tmp_path / "dbd").mkdir()
    (tmp_path / "dbd" / "cifar_1.png").write_bytes(b"not the official file")
    monkeypatch.setattr(assets, "TRIGGERS_DIR", tmp_path)
    with pytest.raises(AssetMismatch):
        assets.asset_path("dbd/cifar_1.png")


def _hwc(images):
    return images.permute(0, 2, 3, 1).numpy()


# The official blend expressions, in numpy with the dtypes each code base has (attacks.md §3.2, §3.4)
def _fct_kitty(img, kitty_f32):  # FCT: (1 - a) * uint8 -> float64, a * float32 cv2 output -> float32
    return ((1 - 0.2) * img + 0.2 * kitty_f32).astype("uint8")


def _bb_kitty(img, kitty_f32):  # BackdoorBench: the same sum, then npToFloat32 and npClipAndToUint8
    return np.clip(((1 - 0.2) * img + 0.2 * kitty_f32).astype(np.float32), 0, 255).astype(np.uint8)


def _fct_strip(img, mask_u8):  # FCT signalTrigger: uint8 mask, everything float64
    return ((1 - 0.2) * img + 0.2 * mask_u8.reshape((32, 32, 1))).astype("uint8")


def _tr_sig(img, sig_u8):  # T&R sig: float64 0.8 x + 0.2 s, clip, truncate
    return np.clip(0.8 * img.astype(np.float64) + 0.2 * sig_u8.astype(np.float64).reshape(32, 32, 1), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("key, official, pattern", [
    ("blend_kitty_fct", _fct_kitty, lambda: blend.kitty_fct().permute(1, 2, 0).numpy()),
    ("blend_kitty_bb", _bb_kitty, lambda: blend.kitty_backdoorbench().permute(1, 2, 0).numpy().astype(np.float32)),
    ("blend_strip_fct", _fct_strip, lambda: np.load(asset_path("fct/signal_cifar10_mask.npy"))),
    ("sig_tr_wrapped", _tr_sig, lambda: np.asarray(Image.open(asset_path("trap_and_replace/sig.png")))),
])
def test_blends_reproduce_the_official_arithmetic_bit_for_bit(key, official, pattern, smoke_test):
    images = smoke_test.images[:300]
    got = _hwc(get_attack(key).trigger.apply(images))
    want = official(_hwc(images), pattern())
    assert want.dtype == np.uint8 and np.array_equal(got, want)


def test_the_blend_arithmetic_matters(smoke_test):
    """float32 x + a (t - x) (PIL's form) truncates differently from the numpy forms on a share of values:
    the reason each blend carries its code base's arithmetic."""
    images = smoke_test.images[:300]
    kitty = blend.kitty_fct()
    pil_form = _hwc(ops.blend(images, kitty, 0.2, "cast_wrap", "pil"))
    assert (pil_form != _fct_kitty(_hwc(images), kitty.permute(1, 2, 0).numpy())).mean() > 0.001


def test_fct_kitty_pattern_is_float32_bilinear_without_antialiasing():
    k = blend.kitty_fct()
    assert k.dtype == torch.float32 and k.shape == (3, 32, 32)
    full = image_asset("dbd/hello_kitty.png").float()
    # bilinear at scale 540/32 with half-pixel centres: output (0, 0) samples source x = y = 7.9375
    x = 0.5 * 540 / 32 - 0.5
    x0, f = int(x), x - int(x)
    want = ((1 - f) * ((1 - f) * full[:, x0, x0] + f * full[:, x0, x0 + 1])
            + f * ((1 - f) * full[:, x0 + 1, x0] + f * full[:, x0 + 1, x0 + 1]))
    assert torch.allclose(k[:, 0, 0], want, atol=1e-3)


def test_trigger_readme_checksums_match_the_files():
    """Every "first8…last" checksum abbreviation in the trigger README belongs to the file it names."""
    import re

    from backdoor_repro.attacks.assets import SHA256
    from backdoor_repro.paths import TRIGGERS_DIR

    text = (TRIGGERS_DIR / "README.md").read_text()
    for name, digest in SHA256.items():
        for head, tail in re.findall(r"([0-9a-f]{8})…([0-9a-f]{4,5})", text):
            if digest.startswith(head):
                assert digest.endswith(tail), (name, head, tail)

import pytest
import torch

from backdoor_repro.views import (adjust_hue, color_jitter, gaussian_blur, random_grayscale,
                                  random_resized_crop, simclr_views)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 16, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=_gen(123))


def test_view_shape_range_dtype():
    x = _images()
    for blur in (True, False):
        v = simclr_views(x, _gen(0), blur=blur)
        assert v.shape == x.shape and v.dtype == x.dtype and v.device == x.device
        assert v.min() >= 0 and v.max() <= 1 and torch.isfinite(v).all()


def test_seeded_determinism_and_per_seed_difference():
    x = _images()
    a, b, c = simclr_views(x, _gen(7)), simclr_views(x, _gen(7)), simclr_views(x, _gen(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    gen = _gen(7)
    assert not torch.allclose(simclr_views(x, gen), simclr_views(x, gen))  # two views differ


def test_full_scale_square_crop_is_identity():
    x = _images()
    out = random_resized_crop(x, _gen(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(out, x, atol=1e-5)


def test_default_crop_zooms_in():
    x = _images()
    out = random_resized_crop(x, _gen(0))
    assert not torch.allclose(out, x)
    assert out.var() < x.var()  # interpolated upsampling smooths the noise


def test_color_jitter_probability():
    x = _images()
    assert torch.equal(color_jitter(x, _gen(0), p=0.0), x)
    out = color_jitter(x, _gen(0), p=1.0)
    changed = (out - x).flatten(1).abs().amax(1) > 1e-3
    assert changed.all() and out.min() >= 0 and out.max() <= 1


def test_grayscale_always():
    x = _images()
    out = random_grayscale(x, _gen(0), p=1.0)
    gray = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for ch in range(3):
        assert torch.allclose(out[:, ch], gray, atol=1e-6)
    assert torch.equal(random_grayscale(x, _gen(0), p=0.0), x)


def test_gaussian_blur_constant_and_variance():
    const = torch.full((4, 3, 32, 32), 0.37)
    assert torch.allclose(gaussian_blur(const, _gen(0), p=1.0), const, atol=1e-6)
    x = _images()
    out = gaussian_blur(x, _gen(0), p=1.0)
    assert (out.flatten(1).var(1) < x.flatten(1).var(1)).all()
    assert torch.equal(gaussian_blur(x, _gen(0), p=0.0), x)


def test_gaussian_blur_small_images_fit_reflect_padding():
    x = torch.rand(2, 3, 5, 5, generator=_gen(1))
    assert gaussian_blur(x, _gen(0), p=1.0).shape == x.shape


def test_zero_hue_rotation_round_trip():
    x = _images()
    x[0] = 0.5  # grey (max == min) pixels
    x[1, :, :4] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)  # saturated primaries
    assert torch.allclose(adjust_hue(x, torch.zeros(x.shape[0])), x, atol=1e-5)
    full_turn = adjust_hue(x, torch.ones(x.shape[0]))
    assert torch.allclose(full_turn, x, atol=1e-5)


def test_hue_shift_matches_torchvision():
    tvf = pytest.importorskip("torchvision.transforms.functional")
    x = _images(4)
    for shift in (-0.1, 0.03, 0.1, 1 / 3):
        ours = adjust_hue(x, torch.full((4,), shift))
        assert torch.allclose(ours, tvf.adjust_hue(x, shift), atol=1e-4)


def test_large_cpu_batch_runs():
    x = torch.rand(512, 3, 32, 32, generator=_gen(2))
    gen = _gen(3)
    v1, v2 = simclr_views(x, gen), simclr_views(x, gen)
    assert v1.shape == v2.shape == x.shape and not torch.equal(v1, v2)

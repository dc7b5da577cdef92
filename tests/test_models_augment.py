import torch

from backdoor_repro.augment import random_crop, random_flip
from backdoor_repro.models import build_model


def test_resnet18_matches_the_cifar_architecture():
    model = build_model("resnet18", 10)
    n_params = sum(p.numel() for p in model.backbone.parameters())
    assert 11.0e6 < n_params < 11.3e6  # ≈ 11.17 M (DBD spec §3)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    assert model.backbone.conv1.kernel_size == (3, 3) and model.backbone.conv1.stride == (1, 1)
    assert model.backbone.out_features == 512


def test_width_multiplier_and_shapes():
    for name in ("resnet18", "preact_resnet18"):
        model = build_model(name, 10, width=8).eval()
        x = torch.rand(2, 3, 32, 32)
        assert model(x).shape == (2, 10) and model.features(x).shape == (2, 64)


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    gen = torch.Generator().manual_seed(0)
    out = random_crop(x, gen, padding=4)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(2):
        found = [(dy, dx) for dy in range(9) for dx in range(9) if torch.equal(padded[i, :, dy:dy + 32, dx:dx + 32], out[i])]
        assert len(found) == 1


def test_flip_is_per_sample_and_seeded():
    x = torch.rand(64, 3, 8, 8)
    a = random_flip(x, torch.Generator().manual_seed(1))
    b = random_flip(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    flipped = [(not torch.equal(a[i], x[i])) for i in range(64)]
    assert 10 < sum(flipped) < 54
    assert all(torch.equal(a[i], x[i].flip(2)) for i in range(64) if flipped[i])


def test_rotate15_turns_each_image_about_its_centre_by_at_most_15_degrees():
    """FCT's CIFAR-100 attacker augmentation: crop + flip + RandomRotation(15) (nearest, zeros): a white image keeps
    its centre, loses corner pixels on most images, but never more than a 15-degree turn leaves blank."""
    from backdoor_repro.augment import augment, random_rotation
    x = torch.ones(64, 3, 32, 32)
    turned = random_rotation(x, torch.Generator().manual_seed(0), 15.0)
    assert (turned[:, :, 16, 16] == 1).all()
    blank = (turned[:, 0] == 0).float().mean((1, 2))
    assert (blank > 0).float().mean() > 0.8  # corners cut on most images
    assert blank.max() < 0.25  # a 15-degree turn of a square leaves under a quarter blank (45 degrees: ~17 %+)
    assert torch.equal(random_rotation(x, torch.Generator().manual_seed(0), 0.0), x)
    a = augment(x, "crop_flip_rotate15", torch.Generator().manual_seed(1))
    b = augment(x, "crop_flip_rotate15", torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)

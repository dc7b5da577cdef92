"""BackdoorBench triggers used by FMP (grid_bb, lf_bb, lc_bb, wanet_bb), each checked against the official
formula written out in numpy on the same images (attacks.md §3.1, §3.5, §3.6, §3.9)."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from backdoor_repro.attacks import get_attack
from backdoor_repro.attacks.assets import array_asset, image_asset
from backdoor_repro.attacks.label_consistent import pgd_adversary

pytestmark = pytest.mark.timeout(120)


def random_images(n=6, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8))


def test_grid_bb_is_backdoorbench_mask_patch_and_differs_from_grid3_at_five_pixels():
    images = random_images()
    t = image_asset("backdoorbench/badnet_grid.png").numpy().astype(np.int64)
    x = images.numpy().astype(np.int64)
    official = x * (t == 0) + t * (t > 0)  # BackdoorBench AddMaskPatchTrigger
    ours = get_attack("grid_bb").trigger.apply(images)
    assert np.array_equal(ours.numpy(), official.astype(np.uint8))
    assert ours[0, 0, 29:32, 29:32].tolist() == [[255, 1, 255], [1, 255, 1], [255, 1, 255]]
    grid3 = get_attack("grid3").trigger.apply(images)
    differ = torch.nonzero((ours != grid3).any(1).any(0)).tolist()
    assert differ == [[29, 29], [29, 30], [30, 29], [30, 31], [31, 30]]


@pytest.mark.parametrize("variant", ["cifar10", "cifar100", "gtsrb"])
def test_lf_bb_adds_the_shipped_array_and_clips_like_simple_additive_trigger(variant):
    images = random_images()
    t = array_asset(f"backdoorbench/lf_{variant}_preactresnet18.npy").numpy()
    assert t.shape == (32, 32, 3) and t.dtype == np.uint8 and t.max() == 51
    hwc = images.permute(0, 2, 3, 1).numpy()
    official = np.clip(hwc.astype(np.float64) + t.astype(np.float64), 0, 255).astype(np.uint8)
    ours = get_attack("lf_bb", variant=variant).trigger.apply(images).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(ours, official)
    with pytest.raises(ValueError, match="variant"):
        get_attack("lf_bb", variant="tiny")


def test_lc_bb_patch_is_fmt_bottom_right_add_and_clip():
    images = random_images()
    signs = {(-1, -1): 1, (-1, -2): -1, (-1, -3): 1, (-2, -1): -1, (-2, -2): 1, (-2, -3): -1,
             (-3, -1): 1, (-3, -2): -1, (-3, -3): -1}  # FMT utils/bd_img_transform/lc.py "bottom-right"
    official = images.permute(0, 2, 3, 1).numpy().astype(np.float32).copy()
    for (r, c), v in signs.items():
        official[:, r, c] += 255 * v  # reduced_amplitude 1: the mask becomes an add mask
    official = np.clip(official, 0, 255).astype(np.uint8)
    ours = get_attack("lc_bb").trigger.apply(images).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(ours, official)


def test_lc_bb_pgd_is_torchattacks_pgd_without_random_start_then_truncated():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).eval()
    images, labels = random_images(4), torch.tensor([0, 1, 2, 3])
    pgd = get_attack("lc_bb").pgd
    assert pgd["random_start"] is False and pgd["steps"] == 100
    ours = pgd_adversary(model, seed=0, **{**pgd, "steps": 3})(images, labels)
    # torchattacks PGD (FMT craft_adv_dataset.py): no random start, step, project, clamp; then (x * 255).uint8
    x = images.float() / 255
    adv = x.clone()
    for _ in range(3):
        adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(adv), labels), adv)
        adv = adv.detach() + pgd["step"] * grad.sign()
        adv = (x + (adv - x).clamp(-pgd["eps"], pgd["eps"])).clamp(0, 1).detach()
    scaled = adv * 255
    official = scaled.to(torch.uint8)
    differ = ours != official  # only where float sums in another order land on either side of an integer
    assert (ours.int() - official.int()).abs().max() <= 1
    assert ((scaled[differ] - scaled[differ].round()).abs() < 1e-3).all()
    assert (ours != images).float().mean() > 0.5  # the perturbation moved most pixels, saturated ones included
    assert ((images == 255) & (ours < 255)).any() and ((images == 0) & (ours > 0)).any()


def test_wanet_bb_counts_targets_and_cross_samples(smoke_train):
    p = get_attack("wanet_bb").poison(smoke_train, data_seed=0)
    n = len(smoke_train)
    assert p.count == round(0.1 * n) and get_attack("wanet_bb").target == 0
    assert (smoke_train.labels[p.poison_mask] == 0).any()  # drawn from all classes, the target class included
    assert (p.labels[p.poison_mask] == 0).all()
    assert int(p.cross_mask.sum()) == 2 * p.count
    assert torch.equal(p.labels[p.cross_mask], smoke_train.labels[p.cross_mask])

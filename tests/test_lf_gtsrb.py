"""BackdoorBench's LF on GTSRB (lf_bb, variant "gtsrb"): the shipped file added and clipped like
SimpleAdditiveTrigger, and FMP's GTSRB table running it with that file."""
import numpy as np
import pytest
import torch

from backdoor_repro.attacks import get_attack
from backdoor_repro.attacks.assets import array_asset
from backdoor_repro.defenses import get_defense
from backdoor_repro.defenses.fmp import bb_attacks, fmp_attacks

pytestmark = pytest.mark.timeout(60)


def test_gtsrb_file_is_its_own_pattern():
    t = array_asset("backdoorbench/lf_gtsrb_preactresnet18.npy").numpy()
    assert t.shape == (32, 32, 3) and t.dtype == np.uint8 and (t.min(), t.max()) == (0, 51)
    assert not np.array_equal(t, array_asset("backdoorbench/lf_cifar10_preactresnet18.npy").numpy())


def test_gtsrb_lf_on_fixed_images():
    t = array_asset("backdoorbench/lf_gtsrb_preactresnet18.npy").numpy().astype(np.int64)
    ramp = np.broadcast_to(np.arange(32 * 32 * 3).reshape(32, 32, 3) % 256, (32, 32, 3))
    hwc = np.stack([np.zeros((32, 32, 3)), np.full((32, 32, 3), 210), ramp]).astype(np.uint8)
    ours = get_attack("lf_bb", variant="gtsrb").trigger.apply(torch.from_numpy(hwc).permute(0, 3, 1, 2))
    ours = ours.permute(0, 2, 3, 1).numpy().astype(np.int64)
    assert np.array_equal(ours[0], t)  # on black: the pattern itself
    assert np.array_equal(ours[1], np.minimum(210 + t, 255)) and (ours[1][t == 51] == 255).all()
    assert np.array_equal(ours[2], np.minimum(ramp + t, 255))  # x + t, clipped at 255, per pixel and channel


def test_fmp_runs_lf_on_gtsrb_with_the_gtsrb_file():
    fmp = get_defense("fmp")
    assert fmp.attack_overrides("lf_bb", "gtsrb") == {"variant": "gtsrb"}
    assert fmp.attack_overrides("lf_bb", "cifar100") == {"variant": "cifar100"}
    assert fmp.attack_overrides("lf_bb", "cifar10") == {} and fmp.attack_overrides("white3_bb", "gtsrb") == {}
    assert "lf_bb" in fmp_attacks("paper", "gtsrb") and "lf_bb" in bb_attacks("paper", "gtsrb")
    assert "lf_bb" not in bb_attacks("paper", "imagenet12")  # no LF file for it

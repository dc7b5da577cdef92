"""TrojanNN as BackdoorBench runs it (attacks/trojannn.py): the neuron selection, the masked sign-gradient steps,
the official pattern's quantisation, the wrapping addition and the poison counts, each against values worked out
by hand from the official formulas (BackdoorBench attack/trojannn.py) on fixed tiny inputs."""
import numpy as np
import pytest
import torch
from PIL import Image

from backdoor_repro.attacks.assets import asset_path
from backdoor_repro.attacks.trojannn import (TROJANNN_BB, most_connected_neurons, optimise_trigger,
                                             optimised_pattern, trojan_trigger, trojannn_bb_attack, trojannn_mask,
                                             untrained_head_weight)
from backdoor_repro.data import ImageSet
from backdoor_repro.models import build_model

pytestmark = pytest.mark.timeout(120)

A = torch.tensor([[1.0, 2.0], [3.0, -1.0], [-2.0, 1.0]], dtype=torch.float64)  # a fixed linear "feature layer"


def linear_features(x):
    return x.flatten(1) @ A


def row(*values):
    return torch.tensor(values, dtype=torch.float64).view(1, 1, 1, 3)


def test_official_settings():
    assert TROJANNN_BB == {"num_neurons": 2, "target_value": 100.0, "steps": 1000, "step": 0.1, "eps": 0.3,
                           "tolerance": 1e-3}


def test_most_connected_neurons_sums_abs_weights_over_outputs_and_kernel():
    linear = torch.tensor([[1.0, -5.0, 0.5], [2.0, 1.0, -3.0]])  # column sums of |W|: 3, 6, 3.5
    assert most_connected_neurons(linear, 2).tolist() == [1, 2]
    assert most_connected_neurons(linear, 3).tolist() == [1, 2, 0]
    conv = torch.tensor([[[[1.0, -1.0]], [[0.0, 0.5]], [[2.0, 2.0]]],
                         [[[-3.0, 0.0]], [[1.0, 1.0]], [[0.0, -0.5]]]])  # (2, 3, 1, 2): sums 2+3, 0.5+2, 4+0.5
    assert most_connected_neurons(conv, 2).tolist() == [0, 2]
    with pytest.raises(ValueError, match="linear or convolution"):
        most_connected_neurons(torch.ones(3), 1)


def test_untrained_head_follows_backdoorbench_construction_order():
    """PreActResNet18(num_classes=5) at width 2 after manual_seed(0): every convolution's kaiming-uniform draw
    (bound 1/sqrt(fan_in)) in construction order (a block's conv1, conv2, then its shortcut), then the linear layer."""
    shapes = [(2, 3, 3, 3)] + [(2, 2, 3, 3)] * 4
    for cin, cout in ((2, 4), (4, 8), (8, 16)):
        shapes += [(cout, cin, 3, 3), (cout, cout, 3, 3), (cout, cin, 1, 1), (cout, cout, 3, 3), (cout, cout, 3, 3)]
    state = torch.get_rng_state()
    torch.manual_seed(0)
    for shape in shapes:
        fan_in = shape[1] * shape[2] * shape[3]
        torch.empty(shape).uniform_(-fan_in ** -0.5, fan_in ** -0.5)
    expected = torch.empty(5, 16).uniform_(-16 ** -0.5, 16 ** -0.5)
    torch.set_rng_state(state)
    before = torch.get_rng_state()
    assert torch.equal(untrained_head_weight(width=2, num_classes=5, seed=0), expected)
    assert torch.equal(torch.get_rng_state(), before)  # the global stream is left alone


def test_official_neurons_at_seed_zero():
    """The 1000-way PreActResNet18 built after fix_random(0) (checked against BackdoorBench models/preact_resnet.py)."""
    assert most_connected_neurons(untrained_head_weight(64, 1000, 0), 2).tolist() == [442, 358]


@pytest.mark.parametrize("steps, expected", [(1, (0.4, 0.0, 0.85)), (2, (0.3, 0.0, 0.75)), (3, (0.2, 0.0, 0.65))])
def test_sign_steps_descend_the_neuron_cost_inside_the_mask(steps, expected):
    # x0 = (0.5, 0, 0.95), keep = (1, 0, 1), targets (1, 0): step 1 f = (-1.4, 1.95), grad = (3.0, 0, 13.5);
    # step 2 f = (-1.3, 1.65), grad = (2.0, 0, 12.5); step 3 f = (-1.2, 1.35), grad = (1.0, 0, 11.5): -0.1 each
    x = optimise_trigger(linear_features, row(0.5, 0.0, 0.95), [0, 1], [1.0, 0.0], steps, 0.1, 0.3, 1e-3)
    assert torch.allclose(x, row(*expected), atol=1e-12)


def test_iterates_stay_within_eps_of_the_mask_and_in_the_unit_interval():
    # eps 0.15: step 3 would reach (0.3, 0.75); f = (-1.25, 1.5) keeps both signs positive, so the projection holds
    x = optimise_trigger(linear_features, row(0.5, 0.0, 0.95), [0, 1], [1.0, 0.0], 3, 0.1, 0.15, 1e-3)
    assert torch.allclose(x, row(0.35, 0.0, 0.8), atol=1e-12)
    one = lambda x: x.flatten(1).sum(1, keepdim=True)  # noqa: E731  one neuron, the pixel sum; target 10: all up
    x = optimise_trigger(one, row(0.95, 0.0, 0.05), [0], [10.0], 1, 0.1, 0.3, 1e-3)
    assert torch.allclose(x, row(1.0, 0.0, 0.15), atol=1e-12)  # 1.05 clamped to 1; the masked-out pixel stays 0


def test_tolerance_stops_after_the_update_of_the_first_cheap_step():
    one = lambda x: x.flatten(1).sum(1, keepdim=True)  # noqa: E731
    # cost (0.75 - 0.76)^2 = 1e-4 < 1e-3: one update (+0.1), then stop
    x = optimise_trigger(one, row(0.5, 0.0, 0.25), [0], [0.76], 10, 0.1, 0.3, 1e-3)
    assert torch.allclose(x, row(0.6, 0.0, 0.35), atol=1e-12)
    # never stopping, it oscillates: up, down, ... ten steps end where it started
    x = optimise_trigger(one, row(0.5, 0.0, 0.25), [0], [0.76], 10, 0.1, 0.3, 0.0)
    assert torch.allclose(x, row(0.5, 0.0, 0.25), atol=1e-12)


def test_mask_is_torchvision_bilinear_resize_then_to_tensor():
    with Image.open(asset_path("backdoorbench/trojannn_apple4.png")) as im:
        assert im.mode == "RGB" and im.size == (224, 224)
        small = np.asarray(im.resize((32, 32), Image.BILINEAR), dtype=np.float32) / 255
    mask = trojannn_mask(32)
    assert mask.shape == (1, 3, 32, 32) and mask.dtype == torch.float32
    assert torch.equal(mask[0], torch.from_numpy(small).permute(2, 0, 1))
    assert 0 < (mask > 0).float().mean() < 0.5


def test_pattern_of_a_tiny_model_is_the_truncated_optimum_and_zero_outside_the_mask():
    torch.manual_seed(0)
    model = build_model("preact_resnet18", 10, width=4).train()
    out = optimised_pattern(model, seed=0, steps=3)
    assert model.training  # the mode is restored
    model.eval()
    mask = trojannn_mask(32)
    neurons = most_connected_neurons(untrained_head_weight(4, 1000, 0), 2)
    assert torch.equal(out["neurons"], neurons)
    x = optimise_trigger(model.backbone, mask, neurons.tolist(), [100.0, 100.0], 3, 0.1, 0.3, 1e-3)
    assert torch.equal(out["pattern"], (x[0] * 255).to(torch.uint8))  # ToPILImage: mul(255).byte()
    assert out["pattern"].dtype == torch.uint8 and (out["pattern"][(mask[0] == 0)] == 0).all()
    assert (out["pattern"] != (mask[0] * 255).to(torch.uint8)).any()


def test_trigger_adds_and_wraps_like_trojan_trigger():
    pattern = torch.zeros(3, 32, 32, dtype=torch.uint8)
    pattern[0, 0, 0], pattern[1, 0, 1], pattern[2, 1, 1] = 200, 56, 255
    out = trojan_trigger(pattern).apply(torch.full((1, 3, 32, 32), 100, dtype=torch.uint8))
    assert out[0, 0, 0, 0] == 44 and out[0, 1, 0, 1] == 156 and out[0, 2, 1, 1] == 99  # 300, 156, 355 mod 256
    assert (out[0, 0, 1:] == 100).all() and out.sum() == 100 * 3 * 32 * 32 - 300 + 44 + 156 + 99
    rng = np.random.default_rng(0)
    t = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    official = np.clip((t.astype(np.float64) + images.astype(np.float64)).astype(np.uint8), 0, 255)
    ours = trojan_trigger(torch.from_numpy(t).permute(2, 0, 1)).apply(torch.from_numpy(images).permute(0, 3, 1, 2))
    assert np.array_equal(ours.permute(0, 2, 3, 1).numpy(), official)


def test_poisons_a_tenth_of_all_classes_relabelled_to_zero(smoke_train):
    pattern = torch.zeros(3, 32, 32, dtype=torch.uint8)
    pattern[:, 10:20, 10:20] = 30
    attack = trojannn_bb_attack(pattern)
    p = attack.poison(smoke_train, data_seed=0)
    assert p.count == round(0.1 * len(smoke_train)) and (p.labels[p.poison_mask] == 0).all()
    assert torch.equal(p.images[p.poison_mask], attack.trigger.apply(smoke_train.images[p.poison_mask]))
    labels = torch.as_tensor(np.arange(50_000) % 10)
    cifar_like = ImageSet(torch.zeros(50_000, 3, 32, 32, dtype=torch.uint8), labels, tuple("abcdefghij"), "cifar10")
    idx = attack.poison_indices(cifar_like, data_seed=0)
    assert len(idx) == 5000 and (labels[idx] == 0).any()  # drawn from all classes, the target's included
    assert attack.sizes == (32,) and attack.key == "trojannn_bb"

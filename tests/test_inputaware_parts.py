"""Input-aware's networks and losses (attacks/inputaware.py) against values worked out by hand on tiny inputs."""
import math

import pytest
import torch

from backdoor_repro.attacks.inputaware import (EPSILON, PatternGenerator, apply_pattern, diversity_loss,
                                               mask_norm_loss, mask_pretraining_loss, threshold)

# (in, out) of every 3x3 conv block of the CIFAR generator, written out: 3 down steps from 32 channels, the middle
# block, 3 up steps; the pattern generator ends in 3 channels, the mask generator in 1
BLOCKS = [(3, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128), (128, 128),
          (128, 128), (128, 64), (64, 64), (64, 32), (32, 32)]


@pytest.mark.parametrize("out_channels,last", [(None, 3), (1, 1)])
def test_generator_blocks_and_parameter_count(out_channels, last):
    net = PatternGenerator(3, out_channels)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == BLOCKS + [(32, last)]
    expected = sum(9 * i * o + o + 2 * o for i, o in BLOCKS + [(32, last)])  # conv weight + bias, BN gamma + beta
    assert sum(p.numel() for p in net.parameters()) == expected
    relus = [m for m in net.modules() if isinstance(m, torch.nn.ReLU)]
    assert len(relus) == len(BLOCKS)  # every block but the last
    out = net(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, last, 32, 32)


def test_generator_output_is_a_double_tanh_squashed_to_the_middle():
    net = PatternGenerator(3, None)
    last_bn = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)][-1]
    with torch.no_grad():  # gamma 0: the last block outputs beta whatever the input
        last_bn.weight.zero_()
        last_bn.bias.copy_(torch.tensor([-3.0, 0.0, 0.7]))
    out = net(torch.rand(2, 3, 32, 32))
    for channel, z in enumerate((-3.0, 0.0, 0.7)):
        expected = math.tanh(math.tanh(z)) / (2 + 1e-7) + 0.5
        assert torch.allclose(out[:, channel], torch.full_like(out[:, channel], expected), atol=1e-6)
    big = PatternGenerator(3, None)
    assert 0.11 < big(torch.randn(2, 3, 32, 32) * 50).min() and big(torch.randn(2, 3, 32, 32) * 50).max() < 0.89


def test_threshold_by_hand():
    m = torch.tensor([0.0, 0.5, 0.55, 1.0])
    expected = [math.tanh(20 * v - 10) / (2 + 1e-7) + 0.5 for v in (0.0, 0.5, 0.55, 1.0)]
    assert torch.allclose(threshold(m), torch.tensor(expected), atol=1e-7)
    assert threshold(torch.tensor(0.5)).item() == 0.5


def test_losses_by_hand():
    x1, x2 = torch.zeros(2, 1, 1, 2), torch.tensor([[[[3.0, 4.0]]], [[[0.0, 2.0]]]])
    p1, p2 = torch.zeros(2, 1, 1, 2), torch.tensor([[[[1.0, 1.0]]], [[[0.0, 0.5]]]])
    # sample 1: sqrt((9 + 16) / 2) / (sqrt(1) + eps); sample 2: sqrt(4 / 2) / (sqrt(0.25 / 2) + eps)
    d1 = math.sqrt(12.5) / (1 + EPSILON)
    d2 = math.sqrt(2.0) / (math.sqrt(0.125) + EPSILON)
    assert diversity_loss(x1, x2, p1, p2).item() == pytest.approx((d1 + d2) / 2, rel=1e-6)
    masks = torch.tensor([0.0, 0.032, 0.5, 1.0]).view(1, 1, 2, 2)
    assert mask_norm_loss(masks, 0.032).item() == pytest.approx((0.468 + 0.968) / 4, rel=1e-6)
    total = mask_pretraining_loss(x1, x2, p1, p2, 0.032, 100.0, 2.0)
    assert total.item() == pytest.approx(100 * mask_norm_loss(p1, 0.032).item() + 2 * 2 * (d1 + d2) / 2, rel=1e-6)


def test_apply_pattern_by_hand():
    x, p, m = torch.tensor([0.2, 0.8]), torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.25])
    assert torch.allclose(apply_pattern(x, p, m), torch.tensor([0.6, 0.6]))

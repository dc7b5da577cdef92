"""Hand-computed checks of the DBD losses in ``backdoor_repro.losses``."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backdoor_repro.losses import (intra_class_separation, linear_rampup, mixmatch_losses, mixmatch_mix, sharpen,
                                   simclr_loss_dbd, supcon_loss, symmetric_cross_entropy)

LN3 = math.log(3.0)
RCE_SCALE = -math.log(1e-4)  # ≈ 9.2103


def test_sce_two_class_hand_case():
    logits = torch.tensor([[0.0, LN3], [0.0, LN3]])  # p = [0.25, 0.75] for both rows
    targets = torch.tensor([1, 0])
    per = symmetric_cross_entropy(logits, targets, alpha=0.1, beta=1.0, reduction="none")
    expected = [0.1 * -math.log(0.75) + 0.25 * RCE_SCALE, 0.1 * -math.log(0.25) + 0.75 * RCE_SCALE]
    assert per.tolist() == pytest.approx(expected, rel=1e-5)
    assert symmetric_cross_entropy(logits, targets).item() == pytest.approx(sum(expected) / 2, rel=1e-5)
    assert RCE_SCALE == pytest.approx(9.2103, abs=1e-4)


def test_sce_rce_part_and_reductions_on_random_logits():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(6, 5, generator=g), torch.randint(0, 5, (6,), generator=g)
    rce = symmetric_cross_entropy(logits, targets, alpha=0.0, beta=1.0, reduction="none")
    p_y = F.softmax(logits, 1).gather(1, targets[:, None]).squeeze(1)
    assert rce.tolist() == pytest.approx((RCE_SCALE * (1 - p_y)).tolist(), rel=1e-5)
    per = symmetric_cross_entropy(logits, targets, reduction="none")
    assert per.shape == (6,)
    assert per.mean().item() == pytest.approx(symmetric_cross_entropy(logits, targets).item(), rel=1e-6)
    with pytest.raises(ValueError):
        symmetric_cross_entropy(logits, targets, reduction="sum")


def test_simclr_dbd_hand_case():
    t = 0.5
    z1 = [[1.0, 0.0], [0.0, 1.0]]
    z2 = [[math.cos(0.3), math.sin(0.3)], [math.cos(1.2), math.sin(1.2)]]
    dot = lambda a, b: a[0] * b[0] + a[1] * b[1]  # noqa: E731
    losses = []
    for i in range(2):
        cands = [z1[j] for j in range(2) if j != i] + z2  # other view-1 rows and all view-2 rows
        denom = sum(math.exp(dot(z1[i], c) / t) for c in cands)
        losses.append(-math.log(math.exp(dot(z1[i], z2[i]) / t) / denom))
    got = simclr_loss_dbd(torch.tensor(z1), torch.tensor(z2), temperature=t).item()
    assert got == pytest.approx(sum(losses) / 2, rel=1e-6)


def _nt_xent_symmetric(z1, z2, t):
    z = torch.cat([z1, z2])
    n = z.shape[0]
    sim = (z @ z.T / t).masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
    return F.cross_entropy(sim, (torch.arange(n) + n // 2) % n)


def test_simclr_dbd_differs_from_symmetric_nt_xent_and_rewards_alignment():
    g = torch.Generator().manual_seed(1)
    z1 = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    z2 = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    random_loss = simclr_loss_dbd(z1, z2).item()
    assert random_loss != pytest.approx(_nt_xent_symmetric(z1, z2, 0.5).item(), rel=1e-3)
    eye = torch.eye(4, 8)  # perfectly aligned positives, orthogonal negatives
    aligned = simclr_loss_dbd(eye, eye.clone()).item()
    assert aligned == pytest.approx(math.log(1 + 6 * math.exp(-2.0)), rel=1e-6)  # 6 negatives at sim 0
    assert aligned < random_loss


def test_sharpen():
    assert sharpen(torch.tensor([[0.25, 0.75]]), 0.5)[0].tolist() == pytest.approx([0.1, 0.9])
    out = sharpen(torch.softmax(torch.randn(5, 4), 1), 0.5)
    assert out.sum(1).tolist() == pytest.approx([1.0] * 5)


def test_mixmatch_mix_lambda_and_shared_permutation():
    x = torch.eye(6)[torch.tensor([0, 1, 2, 3, 4, 5, 0, 3])]  # inputs == one-hot targets
    for seed in range(50):
        mx, mt, lam = mixmatch_mix(x, x.clone(), 0.75, np.random.default_rng(seed))
        assert 0.5 <= lam <= 1.0
        assert torch.allclose(mx, mt)  # same λ and permutation for inputs and targets
        assert mt.sum(1).tolist() == pytest.approx([1.0] * 8)
    rng = np.random.default_rng(7)
    lam_ref = rng.beta(0.75, 0.75)
    lam_ref, perm = max(lam_ref, 1 - lam_ref), torch.as_tensor(rng.permutation(8))
    xr = torch.randn(8, 3)
    mx, _, lam = mixmatch_mix(xr, x, 0.75, np.random.default_rng(7))
    assert lam == pytest.approx(lam_ref)
    assert torch.allclose(mx, lam_ref * xr + (1 - lam_ref) * xr[perm])


def test_mixmatch_losses_hand_case():
    logits = torch.tensor([[0.0, LN3], [0.0, 0.0]])  # softmax rows [0.25, 0.75] and [0.5, 0.5]
    lx, lu = mixmatch_losses(logits, torch.tensor([[0.5, 0.5], [1.0, 0.0]]),
                             logits, torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    expected_lx = (-(0.5 * math.log(0.25) + 0.5 * math.log(0.75)) + math.log(2.0)) / 2
    assert lx.item() == pytest.approx(expected_lx, rel=1e-6)
    assert lu.item() == pytest.approx((0.75 ** 2 + 0.75 ** 2 + 0.0 + 0.0) / 4, rel=1e-6)


def test_linear_rampup():
    assert linear_rampup(0, 190) == 0.0
    assert linear_rampup(95, 190) == pytest.approx(0.5)
    assert linear_rampup(10.5, 190) == pytest.approx(10.5 / 190)
    assert linear_rampup(500, 190) == 1.0
    assert linear_rampup(-3, 190) == 0.0
    assert linear_rampup(7, 0) == 1.0
    assert 15 * linear_rampup(19, 190) == pytest.approx(1.5)


def test_mixmatch_permutation_from_a_torch_generator_and_scatter_one_hot():
    import numpy as np

    from backdoor_repro.losses import mixmatch_mix, one_hot

    x = torch.eye(6)
    mixed_x, mixed_t, lam = mixmatch_mix(x, x.clone(), 0.75, np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert torch.allclose(mixed_x, mixed_t) and lam >= 0.5
    assert torch.equal(one_hot(torch.tensor([2, 0]), 3), torch.tensor([[0.0, 0, 1], [1, 0, 0]]))


@pytest.mark.parametrize("name", ["simclr", "supcon", "intra"])
def test_similarity_losses_stay_fp32_under_bf16_autocast(name):
    """Under bf16 autocast (the GPU profiles) the similarity matmuls would run in bf16 even on .float() inputs; the
    contrastive losses run in fp32, so the loss under autocast equals the fp32 one."""
    g = torch.Generator().manual_seed(0)
    z1 = F.normalize(torch.randn(16, 8, generator=g), dim=1)
    z2 = F.normalize(torch.randn(16, 8, generator=g), dim=1)
    labels = torch.randint(0, 4, (16,), generator=g)
    loss = {"simclr": lambda: simclr_loss_dbd(z1, z2, 0.5),
            "supcon": lambda: supcon_loss(z1, z2, (labels[:, None] == labels[None, :]).float(), 0.1),
            "intra": lambda: intra_class_separation(z1, labels, 4)}[name]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = loss()
    assert under.dtype == torch.float32
    assert torch.equal(under, loss())

"""ANP (a baseline of FMP's table) on tiny cases: the perturbed BatchNorm, the masks and their pruning, one mask
step against its formula. ANP runs end to end in the contract, resume and grid tests."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from backdoor_repro.defenses.anp import ANPConfig, PerturbedBatchNorm, optimize_masks, prune_by_threshold
from backdoor_repro.models import build_model


def test_perturbed_batchnorm_scales_gamma_and_beta():
    bn = nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        bn.bias.copy_(torch.tensor([0.5, -1.0, 0.0]))
        bn.running_mean.uniform_()
    w = PerturbedBatchNorm(bn).eval()
    x = torch.randn(2, 3, 4, 4)
    assert torch.allclose(w(x), bn(x))
    with torch.no_grad():
        w.mask.copy_(torch.tensor([1.0, 0.0, 0.5]))
        w.noise.copy_(torch.tensor([0.1, 0.2, -0.1]))
        w.noise_bias.copy_(torch.tensor([0.3, 0.0, 0.2]))
    w.perturbed = True
    xhat = (x - bn.running_mean.view(1, 3, 1, 1)) / torch.sqrt(bn.running_var.view(1, 3, 1, 1) + bn.eps)
    expected = xhat * (bn.weight * torch.tensor([1.1, 0.2, 0.4])).view(1, 3, 1, 1) + \
        (bn.bias * torch.tensor([1.3, 1.0, 1.2])).view(1, 3, 1, 1)
    assert torch.allclose(w(x), expected, atol=1e-6)


def test_anp_masks_stay_in_0_1_and_pruning_zeroes_gamma_below_the_threshold():
    torch.manual_seed(0)
    model = build_model("preact_resnet18", 4, 2).eval()
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 4, (16,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = optimize_masks(model, images, labels, ANPConfig(iterations=5, batch_size=8), torch.Generator().manual_seed(0))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the search runs on a copy
    assert set(masks) == {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert all(((m >= 0) & (m <= 1)).all() for m in masks.values())
    assert any((m < 1).any() for m in masks.values())  # the masks moved
    fake = {n: torch.linspace(0, 1, m.numel()) for n, m in masks.items()}
    count = prune_by_threshold(model, fake, 0.2)
    assert count == sum(int((m < 0.2).sum()) for m in fake.values())
    for n, m in fake.items():
        w = dict(model.named_modules())[n].weight
        assert (w[m < 0.2] == 0).all() and torch.equal(w[m >= 0.2], before[f"{n}.weight"][m >= 0.2])


def test_anp_mask_step_follows_its_formula_on_one_batch():
    """One iteration with eps = 0: the mask gradient is that of alpha * CE(clean), one SGD step of lr 0.2."""
    from backdoor_repro.augment import augment, to_float
    torch.manual_seed(1)
    model = build_model("preact_resnet18", 4, 2).eval()
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 4, (8,))
    cfg = ANPConfig(eps=0.0, iterations=1, batch_size=8, alpha=0.2)
    masks = optimize_masks(model, images, labels, cfg, torch.Generator().manual_seed(0))
    # by hand: the same loss with masks as leaf tensors, train-mode BatchNorm
    import copy
    from backdoor_repro.defenses.anp import wrap_batchnorms
    net = copy.deepcopy(model)
    layers = wrap_batchnorms(net)
    net.train()
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(8, generator=gen)
    x = augment(to_float(images[idx]), "crop_flip", gen)  # the search's first batch, augmented as the search does
    loss = cfg.alpha * F.cross_entropy(net(x), labels[idx])
    grads = torch.autograd.grad(loss, [w.mask for w in layers.values()])
    for (name, w), g in zip(layers.items(), grads):
        assert torch.allclose(masks[name], (1 - 0.2 * g).clamp(0, 1), atol=1e-6)

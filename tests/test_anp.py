"""ANP (a baseline of FMP's table) on tiny cases: the perturbed BatchNorm, the masks and their pruning, one mask
step against its formula, BackdoorBench's defaults, the threshold sweep and the two ways of choosing a threshold
(ours on the clean subset; BackdoorBench's on the test set, reported as test-selected). ANP runs end to end in the
contract, resume and grid tests."""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from backdoor_repro.cache import ArtifactCache
from backdoor_repro.defenses import get_defense
from backdoor_repro.defenses.anp import (ANPConfig, PerturbedBatchNorm, holdout_threshold, optimize_masks,
                                         oracle_threshold, prune_by_threshold, sweep_thresholds, threshold_sweep)
from backdoor_repro.models import build_model
from defense_fixtures import tiny_data, tiny_spec


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


def test_defaults_are_backdoorbenchs_as_fmps_code_base_runs_them():
    """FMT config/defense/anp/cifar10.yaml: lr 0.01, batch 256, anp_eps 0.4, anp_steps 1, anp_alpha 0.2, nb_iter 2000,
    pruning_by threshold up to 0.9 in steps of 0.05, acc_ratio 0.1; the threshold chosen by the clean-subset rule."""
    cfg = get_defense("anp").config("paper")
    assert (cfg.mask_lr, cfg.batch_size, cfg.eps, cfg.steps, cfg.alpha) == (0.01, 256, 0.4, 1, 0.2)
    assert cfg.iterations == 2000
    assert (cfg.pruning_max, cfg.pruning_step, cfg.acc_ratio, cfg.threshold) == (0.9, 0.05, 0.1, None)
    assert sweep_thresholds(cfg) == [round(0.05 * i, 2) for i in range(19)]
    with pytest.raises(ValueError):
        ANPConfig(threshold=1.5)
    with pytest.raises(ValueError):
        ANPConfig(acc_ratio=0.0)


def test_pruning_compares_the_masks_at_the_official_four_decimals():
    """np.arange's thresholds (0.15000000000000002, ...) against masks written with 4 decimals: the pruned sets are
    those of our rounded thresholds."""
    torch.manual_seed(0)
    masks = {"bn": torch.cat([torch.rand(500), torch.tensor([0.15, 0.150049, 0.15005, 0.3, 0.30004, 0.0, 0.9])])}
    official = np.arange(0, 0.9 + 0.05, 0.05)
    written = np.array([float(f"{v:.4f}") for v in masks["bn"].tolist()])
    for t_official, t in zip(official, sweep_thresholds(ANPConfig())):
        model = nn.Module()
        model.bn = nn.BatchNorm2d(masks["bn"].numel())
        with torch.no_grad():
            model.bn.weight.fill_(1.0)
        count = prune_by_threshold(model, masks, t)
        zeroed = (model.bn.weight == 0).numpy()
        assert np.array_equal(zeroed, written <= t_official) and count == int(zeroed.sum())


def test_anp_masks_stay_in_0_1_and_pruning_zeroes_gamma_below_the_threshold():
    torch.manual_seed(0)
    model = build_model("preact_resnet18", 4, 2).eval()
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 4, (16,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = optimize_masks(model, images, labels, ANPConfig(iterations=5, batch_size=8, mask_lr=0.2),
                           torch.Generator().manual_seed(0))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the search runs on a copy
    assert set(masks) == {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert all(((m >= 0) & (m <= 1)).all() for m in masks.values())
    assert any((m < 1).any() for m in masks.values())  # the masks moved
    fake = {n: torch.linspace(0, 1, m.numel()) for n, m in masks.items()}
    count = prune_by_threshold(model, fake, 0.2)
    assert count == sum(int((m.double().round(decimals=4) <= 0.2).sum()) for m in fake.values())
    for n, m in fake.items():
        w, off = dict(model.named_modules())[n].weight, m.double().round(decimals=4) <= 0.2
        assert (w[off] == 0).all() and torch.equal(w[~off], before[f"{n}.weight"][~off])


def test_anp_mask_step_follows_its_formula_on_one_batch():
    """One iteration with eps = 0: the mask gradient is that of alpha * CE(clean) on a batch drawn with replacement,
    one SGD step of the mask lr."""
    from backdoor_repro.augment import augment, to_float
    from backdoor_repro.defenses.anp import wrap_batchnorms
    torch.manual_seed(1)
    model = build_model("preact_resnet18", 4, 2).eval()
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 4, (8,))
    cfg = ANPConfig(eps=0.0, iterations=1, batch_size=8, alpha=0.2)
    masks = optimize_masks(model, images, labels, cfg, torch.Generator().manual_seed(0))
    # by hand: the same loss with masks as leaf tensors, train-mode BatchNorm
    net = copy.deepcopy(model)
    layers = wrap_batchnorms(net)
    net.train()
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(8, (8,), generator=gen)  # the official RandomSampler(replacement=True)
    x = augment(to_float(images[idx]), "crop_flip", gen)  # the search's first batch, augmented as the search does
    loss = cfg.alpha * F.cross_entropy(net(x), labels[idx])
    grads = torch.autograd.grad(loss, [w.mask for w in layers.values()])
    for (name, w), g in zip(layers.items(), grads):
        assert torch.allclose(masks[name], (1 - cfg.mask_lr * g).clamp(0, 1), atol=1e-6)


def test_the_sweep_prunes_growing_sets_without_retraining():
    """One mask set, every threshold: the first row is the unpruned model, each row's count is a fresh pruning's at
    that threshold, and nothing but BatchNorm γ ever changes (the model given is left as it was)."""
    from types import SimpleNamespace
    torch.manual_seed(0)
    model = build_model("preact_resnet18", 4, 2).eval()
    holdout = SimpleNamespace(images=torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8),
                              labels=torch.randint(0, 4, (12,)))
    masks = {n: torch.rand(m.num_features) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    before = copy.deepcopy(model.state_dict())
    sweep = threshold_sweep(model, masks, ANPConfig(), holdout)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [r["threshold"] for r in sweep] == [None, *sweep_thresholds(ANPConfig())]
    assert sweep[0]["pruned"] == 0 and all(a["pruned"] <= b["pruned"] for a, b in zip(sweep, sweep[1:]))
    for row in sweep[1:]:
        fresh = copy.deepcopy(model)
        assert prune_by_threshold(fresh, masks, row["threshold"]) == row["pruned"]
    assert "ASR" not in sweep[0] and all(0 <= r["holdout_ACC"] <= 100 for r in sweep)


def _sweep(rows):
    return [{"threshold": t, "holdout_ACC": h, "ACC": a, "ASR": s} for t, h, a, s in rows]


def test_the_two_threshold_rules():
    """Ours: the largest threshold whose clean-subset accuracy is within acc_ratio (relative, strict) of the unpruned
    model's, wherever it lies in the sweep. BackdoorBench's: from the unpruned model, the lowest test ASR (strictly
    lower replaces, so ties keep the smaller threshold) among the thresholds within acc_ratio of the test accuracy."""
    sweep = _sweep([(None, 100, 80, 95), (0.0, 100, 80, 95), (0.05, 95, 78, 40), (0.1, 89, 75, 10),
                    (0.15, 91, 72, 10), (0.2, 89.9, 71.9, 1), (0.25, 80, 60, 0)])
    assert holdout_threshold(sweep, 0.1) == 0.15  # 0.1 fails (11 % down) but 0.15 passes again; 0.2 fails
    assert oracle_threshold(sweep, 0.1)["threshold"] == 0.1  # 0.15 ties its ASR; 0.2 is 10.1 % down on test
    assert oracle_threshold(sweep, 0.2)["threshold"] == 0.2
    assert holdout_threshold(_sweep([(None, 100, 80, 95), (0.0, 50, 10, 5)]), 0.1) is None  # nothing pruned
    assert oracle_threshold(_sweep([(None, 100, 80, 95), (0.0, 50, 10, 5)]), 0.1)["threshold"] is None
    assert oracle_threshold([{"threshold": None, "holdout_ACC": 100.0}], 0.1) == {}  # no test metrics: no oracle


def test_anp_prunes_the_no_defense_model_at_the_holdout_rule_and_records_the_sweep(tiny, tmp_path):
    """End to end on the tiny protocol: the defended model is the No-Defense model with the γ of the masks at most
    the chosen threshold zeroed; the sweep (the stage's history) carries the test metrics the oracle reads."""
    d = get_defense("anp")
    spec = tiny_spec(d, tiny)
    cache = ArtifactCache(tmp_path)
    data = tiny_data(spec, tiny, cache)
    result = d.run(spec, data, d.small_config("smoke"), cache)
    record = result.stages["anp"]
    sweep = record.history
    assert record.extras["threshold"] == holdout_threshold(sweep, d.config("smoke").acc_ratio)
    assert {"ACC", "ASR", "RA", "holdout_ACC", "pruned"} <= set(sweep[0])
    from backdoor_repro.pipeline import no_defense_model
    expected, _ = no_defense_model(spec, None, cache, False, data=data)
    if record.extras["threshold"] is not None:
        prune_by_threshold(expected, record.extras["masks"], record.extras["threshold"])
    for (name, a), b in zip(expected.state_dict().items(), result.model.state_dict().values()):
        assert torch.equal(a, b), name

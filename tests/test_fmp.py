"""FMP and its baselines: hook order, the FGSM step, batched vs one-at-a-time ranking, pruning, the prune-order
switch, fine-pruning and ANP on tiny cases."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from backdoor_repro.defenses.anp import ANPConfig, PerturbedBatchNorm, optimize_masks, prune_by_threshold
from backdoor_repro.defenses.finetune_pruning import head_inputs, last_stage_activation, prune_until_accuracy_drops
from backdoor_repro.defenses.fmp import FMPConfig
from backdoor_repro.defenses.fmp_rank import (default_chunk, lowest_maps, prune_plan, random_start, rank_feature_maps,
                                              rank_one_at_a_time, zero_feature_maps)
from backdoor_repro.feature_maps import capture_output, conv_layers, feature_map_site, forward_to
from backdoor_repro.models import build_model, normalization_stats
from backdoor_repro.train import predict


def tiny(width=2, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return build_model("preact_resnet18", 10, width, *normalization_stats("backdoorbench", "cifar10")).to(dtype).eval()


def test_preact_resnet18_is_backdoorbench_shaped():
    model = build_model("preact_resnet18", 10, 64)
    layers = conv_layers(model)
    assert len(layers) == 20 and sum(layer.channels for layer in layers) == 4800
    assert not any(isinstance(m, nn.BatchNorm2d) and m.num_features == 512 and name.endswith("final_bn")
                   for name, m in model.named_modules())
    assert model.backbone.bn1 is None  # no BN / ReLU after the stem


def test_hook_order_is_forward_order_with_the_shortcut_first():
    model = build_model("preact_resnet18", 10, 4)
    forward = [layer.name for layer in conv_layers(model)]
    registered = [layer.name for layer in conv_layers(model, order="registration")]
    assert sorted(forward) == sorted(registered) and forward != registered
    for stage in ("layer2", "layer3", "layer4"):
        i = forward.index(f"backbone.{stage}.0.shortcut.0")
        assert forward[i + 1:i + 3] == [f"backbone.{stage}.0.conv1", f"backbone.{stage}.0.conv2"]
        j = registered.index(f"backbone.{stage}.0.conv1")
        assert registered[j:j + 3] == [f"backbone.{stage}.0.conv1", f"backbone.{stage}.0.conv2",
                                       f"backbone.{stage}.0.shortcut.0"]
    # the recorded order is the order the hooks fire in a real forward pass
    fired = []
    hooks = [m.register_forward_hook(lambda *a, n=n: fired.append(n)) for n, m in model.named_modules()
             if isinstance(m, nn.Conv2d)]
    model(torch.rand(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert fired == forward


def test_forward_to_stops_at_the_layer_and_matches_a_full_pass():
    model = tiny()
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64)
    with capture_output(model, "backbone.layer3.0.conv2") as captured:
        model(x)
    assert torch.equal(forward_to(model, "backbone.layer3.0.conv2", x), captured[0])


def test_random_start_is_plus_or_minus_alpha_then_clipped():
    x = torch.full((2, 3, 4, 4), 0.5, dtype=torch.float64)
    x[0, 0, 0, 0] = 0.99
    x0 = random_start(x, 0.02, torch.Generator().manual_seed(0))
    d = (x0 - x)[1]
    assert torch.allclose(d.abs(), torch.full_like(d, 0.02))
    corner = x0[0, 0, 0, 0].item()
    assert x0.max() <= 1 and (corner == 1.0 or abs(corner - 0.97) < 1e-6)


def test_the_fgsm_step_moves_the_targeted_map_more_than_the_start():
    model = tiny()
    x = torch.rand(4, 3, 32, 32, dtype=torch.float64)
    name, c = "backbone.layer2.0.conv1", 3
    x0 = random_start(x, 0.02, torch.Generator().manual_seed(1)).requires_grad_(True)
    clean = forward_to(model, name, x).detach()
    loss = ((forward_to(model, name, x0)[:, c] - clean[:, c]) ** 2).mean()
    grad, = torch.autograd.grad(loss, x0)
    adv = (x0 + 0.06 * grad.sign()).clamp(0, 1)
    moved = ((forward_to(model, name, adv)[:, c] - clean[:, c]) ** 2).mean()
    assert moved > 2 * loss.detach()


def test_batched_ranking_equals_the_one_at_a_time_ranking():
    model = tiny(width=2)
    x = torch.rand(6, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::2] = (y[::2] + 1) % 10
    for double_norm in (True, False):
        a = rank_feature_maps(model, x, y, 0.02, 0.06, torch.Generator().manual_seed(5), double_norm, chunk=5)
        b = rank_one_at_a_time(model, x, y, 0.02, 0.06, torch.Generator().manual_seed(5), double_norm)
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
        assert sum(v.numel() for v in a.values()) == 150
    auto = rank_feature_maps(model, x, y, 0.02, 0.06, torch.Generator().manual_seed(5), False)  # chunk by device
    assert all(torch.equal(auto[k], a[k]) for k in a)
    assert default_chunk(torch.device("cpu"), 32) == 4 and default_chunk(torch.device("cpu"), 1000) == 1
    with pytest.raises(ValueError, match="chunk"):
        rank_feature_maps(model, x, y, 0.02, 0.06, torch.Generator(), chunk=0)
        assert all(((v * 6).round() == v * 6).all() for v in a.values())  # multiples of 1 / batch


def test_lowest_maps_takes_floor_c_over_divisor_with_stable_ties():
    scores = {"a": torch.tensor([0.5, 0.25, 0.25, 0.75, 0.0, 1.0, 0.25, 0.5]), "b": torch.tensor([0.1, 0.2, 0.3])}
    assert lowest_maps(scores, 4) == {"a": [4, 1], "b": []}
    assert lowest_maps(scores, 2)["a"] == [4, 1, 2, 6]


def test_pruning_zeroes_exactly_the_planned_filters_and_gammas():
    model = tiny(width=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = {"backbone.layer1.0.conv1": [1], "backbone.layer1.0.bn2": [1], "backbone.layer2.0.shortcut.0": [0, 3],
            "backbone.layer2.1.bn1": []}
    assert zero_feature_maps(model, plan) == 3
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed == {"backbone.layer1.0.conv1.weight", "backbone.layer1.0.bn2.weight",
                       "backbone.layer2.0.shortcut.0.weight"}
    assert (after["backbone.layer1.0.conv1.weight"][1] == 0).all() and after["backbone.layer1.0.bn2.weight"][1] == 0
    assert torch.equal(after["backbone.layer1.0.conv1.weight"][0], before["backbone.layer1.0.conv1.weight"][0])
    assert torch.equal(after["backbone.layer1.0.bn2.bias"], before["backbone.layer1.0.bn2.bias"])  # beta kept
    assert (after["backbone.layer2.0.shortcut.0.weight"][[0, 3]] == 0).all()


def test_conv2_maps_are_read_after_the_residual_sum():
    model = tiny(width=2)
    assert feature_map_site(model, "backbone.layer2.0.conv2") == "backbone.layer2.0"
    assert feature_map_site(model, "backbone.layer2.0.conv1") == "backbone.layer2.0.conv1"
    assert feature_map_site(model, "backbone.layer2.0.shortcut.0") == "backbone.layer2.0.shortcut.0"
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    with capture_output(model, "backbone.layer2.0.conv2") as conv_out, \
            capture_output(model, "backbone.layer2.0.shortcut.0") as shortcut_out:
        model(x)
    assert torch.allclose(forward_to(model, "backbone.layer2.0", x), conv_out[0] + shortcut_out[0])


def test_the_official_prune_order_hands_each_list_to_the_documented_module():
    model = tiny(width=2)
    chosen = {layer.name: [i % layer.channels] for i, layer in enumerate(conv_layers(model))}
    official = prune_plan(model, chosen, "official")
    by_name = prune_plan(model, chosen, "by_name")
    assert all(by_name[n] == chosen[n] for n in chosen)
    assert by_name["backbone.layer1.0.bn1"] == chosen["backbone.conv1"]
    assert by_name["backbone.layer1.0.bn2"] == chosen["backbone.layer1.0.conv1"]
    assert by_name["backbone.layer2.1.bn1"] == chosen["backbone.layer2.0.conv2"]  # normalises the residual sum
    for stage, prev in (("layer2", "layer1.1"), ("layer3", "layer2.1"), ("layer4", "layer3.1")):
        b = f"backbone.{stage}.0"
        assert official[f"{b}.bn1"] == chosen[f"backbone.{prev}.conv2"]
        assert official[f"{b}.conv1"] == official[f"{b}.bn2"] == chosen[f"{b}.shortcut.0"]
        assert official[f"{b}.conv2"] == chosen[f"{b}.conv1"]
        assert official[f"{b}.shortcut.0"] == chosen[f"{b}.conv2"]
    assert official["backbone.layer2.1.bn1"] == chosen["backbone.layer2.0.conv2"]
    first_blocks = ("backbone.layer2.0.", "backbone.layer3.0.", "backbone.layer4.0.")
    same = [n for n in official if not n.startswith(first_blocks)]
    assert all(official[n] == by_name[n] for n in same)
    assert set(official) == set(by_name) and len(official) == 20 + 16


def test_fine_pruning_switches_off_the_least_active_channels_until_accuracy_drops():
    torch.manual_seed(0)
    model = build_model("preact_resnet18", 4, 2).eval()
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 4, (40,))
    act = last_stage_activation(model, images)
    assert act.shape == (16,)
    original = model.head.weight.detach().clone()
    pruned, path = prune_until_accuracy_drops(model, images, labels, acc_ratio=1.0 - 1e-9)
    assert pruned == torch.argsort(act, stable=True).tolist()[:len(pruned)]
    assert (model.head.weight[:, pruned] == 0).all()
    # 16 channels: a step of max(1, int(16 x 0.01)) = 1, and step n switches off n - 1 channels (the code's slice)
    assert [p["pruned"] for p in path] == [0] + list(range(len(path) - 1))
    # each step's accuracy is the full model's with those columns zeroed (the features are computed once)
    for step in path[1:6]:
        with torch.no_grad():
            model.head.weight.copy_(original)
            model.head.weight[:, torch.argsort(act, stable=True)[:step["pruned"]]] = 0
        full = 100 * (predict(model, images) == labels).float().mean().item()
        assert step["accuracy"] == pytest.approx(full, abs=1e-6)
    with pytest.raises(ValueError):
        from backdoor_repro.defenses.finetune_pruning import FPConfig
        FPConfig(acc_ratio=1.5)


def test_fine_pruning_steps_and_keeps_the_failing_steps_mask_as_backdoorbench():
    """BackdoorBench's loop on 512 channels (once_prune_ratio 0.01): steps of 5, step n switches off n - 1
    channels, and the first step whose accuracy moves by acc_ratio or more is the one kept (its last_net is the
    pruned network itself). Hand-built head: every image is right only while one chosen channel is on."""
    torch.manual_seed(0)
    model = build_model("preact_resnet18", 4, 64).eval()
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    features = head_inputs(model, images)
    order = torch.argsort(features.mean(0).cpu(), stable=True)
    signed = features[:, order] * features[:, order].sign()[:1]  # each channel times its sign on the first image
    position = next(p for p in range(5, 60) if signed[:, p].min() > 1e-3)  # one sign and non-zero on every image
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[1] = 1.0
        model.head.weight[0, order[position]] = 1e4 * features[0, order[position]].sign()
    pruned, path = prune_until_accuracy_drops(model, images, torch.zeros(8, dtype=torch.long), acc_ratio=0.1)
    failing = 5 * -(-(position + 2) // 5)  # the first step n with n - 1 > position
    assert [p["pruned"] for p in path] == [0] + [n - 1 for n in range(5, failing + 1, 5)]
    assert pruned == order[:failing - 1].tolist()  # the failing step's channels stay off, not the last passing ones
    assert path[-1]["accuracy"] == 0 and all(p["accuracy"] == 100 for p in path[:-1])


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


def test_fmp_config_rejects_bad_values_before_compute():
    with pytest.raises(ValueError):
        FMPConfig(prune_order="sideways")
    with pytest.raises(ValueError):
        FMPConfig(divisor=0)
    assert FMPConfig().intended.double_norm is False and FMPConfig().intended.prune_order == "by_name"

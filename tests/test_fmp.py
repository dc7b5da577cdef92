"""FMP on tiny cases: hook order, the FGSM step, batched vs one-at-a-time ranking, pruning, the prune-order switch,
the conv2 read-out switch and the GTSRB clean-ratio switch (its baselines: test_finetune_pruning.py, test_anp.py)."""
import dataclasses

import pytest
import torch
import torch.nn as nn

from backdoor_repro.defenses import fmp
from backdoor_repro.defenses.fmp import FMPConfig
from backdoor_repro.defenses.fmp_rank import (default_chunk, lowest_maps, prune_plan, random_start, rank_feature_maps,
                                              rank_one_at_a_time, ranking_site, zero_feature_maps)
from backdoor_repro.feature_maps import capture_output, conv_layers, feature_map_site, forward_to
from backdoor_repro.models import build_model, normalization_stats


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


def test_fmp_config_rejects_bad_values_before_compute():
    with pytest.raises(ValueError):
        FMPConfig(prune_order="sideways")
    with pytest.raises(ValueError):
        FMPConfig(divisor=0)
    assert FMPConfig().intended.double_norm is False and FMPConfig().intended.prune_order == "by_name"


def test_conv2_own_output_switch_reads_conv2_itself_and_changes_only_conv2_scores():
    """The official in-place ``out += shortcut`` makes the conv2 hook read the residual sum; ``own_output`` ranks
    conv2's own output. Batched equals the reference loop under both; every other convolution scores the same."""
    model = tiny(width=2)
    x = torch.rand(6, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::2] = (y[::2] + 1) % 10
    conv2 = "backbone.layer2.0.conv2"
    assert ranking_site(model, conv2) == "backbone.layer2.0" and ranking_site(model, conv2, "own_output") == conv2
    assert ranking_site(model, "backbone.layer2.0.conv1", "own_output") == "backbone.layer2.0.conv1"
    with capture_output(model, conv2) as own:
        model(x)
    assert torch.equal(forward_to(model, ranking_site(model, conv2, "own_output"), x), own[0])
    summed = rank_feature_maps(model, x, y, 0.02, 0.06, torch.Generator().manual_seed(5), False, chunk=5)
    mine = rank_feature_maps(model, x, y, 0.02, 0.06, torch.Generator().manual_seed(5), False, chunk=5,
                             conv2_map="own_output")
    reference = rank_one_at_a_time(model, x, y, 0.02, 0.06, torch.Generator().manual_seed(5), False, "own_output")
    assert all(torch.equal(mine[k], reference[k]) for k in mine)
    convs2 = [k for k in mine if k.endswith(".conv2")]
    assert len(convs2) == 8 and all(torch.equal(mine[k], summed[k]) for k in mine if k not in convs2)
    # the official view: conv2's map plus the shortcut, so the targeted quantity differs wherever the shortcut is not 0
    with capture_output(model, "backbone.layer2.0") as block:
        model(x)
    assert not torch.allclose(block[0], own[0])
    with pytest.raises(ValueError, match="conv2_map"):
        rank_feature_maps(model, x, y, 0.02, 0.06, torch.Generator(), conv2_map="sum")


def test_new_switches_default_to_the_official_behaviour_and_keep_the_stage_keys():
    """``conv2_map`` and ``gtsrb_clean_ratio`` default as the runs before them; at their defaults the rank and fmp
    stage keys are those of a config without them, and setting ``own_output`` gives new keys."""
    from backdoor_repro.graph import Stage
    cfg = FMPConfig()
    assert (cfg.conv2_map, cfg.gtsrb_clean_ratio) == ("residual_sum", 0.1)
    assert cfg.intended.conv2_map == "residual_sum"
    spec = tiny_spec_for_fmp()
    old_rank = {"alpha": cfg.alpha, "epsilon": cfg.epsilon, "ranking_images": cfg.ranking_images,
                "double_norm": cfg.double_norm, "augmentation": cfg.finetune.augmentation}
    assert fmp.rank_graph(spec, cfg).key == Stage("fmp_rank", old_rank, fmp.VERSIONS["rank"],
                                                  (spec.no_defense_stage(), spec.granted_stage())).key
    later = ("chunk", "conv2_map", "gtsrb_clean_ratio")
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in later}
    assert fmp.fmp_graph(spec, cfg).key == Stage("fmp", settings, fmp.VERSIONS["fmp"], (fmp.rank_graph(spec, cfg),)).key
    own = cfg.with_(conv2_map="own_output")
    assert fmp.rank_graph(spec, own).key != fmp.rank_graph(spec, cfg).key
    assert fmp.fmp_graph(spec, own).key != fmp.fmp_graph(spec, cfg).key
    assert fmp.fmp_graph(spec, cfg.with_(gtsrb_clean_ratio=0.05)).key == fmp.fmp_graph(spec, cfg).key  # a parent's
    for bad in ({"conv2_map": "sum"}, {"gtsrb_clean_ratio": 0.0}, {"gtsrb_clean_ratio": 1.0}):
        with pytest.raises(ValueError):
            FMPConfig(**bad)


def test_gtsrb_clean_ratio_switch_sets_every_methods_holdout_and_its_deviation(monkeypatch):
    """On GTSRB the clean subset of FMP's table (FMP, FT, FP, ANP) is the FMP config's ``gtsrb_clean_ratio``: 10 % by
    default, listed as a deviation; the official 5 % when switched, and then not listed."""
    from backdoor_repro.defenses import get_defense
    keys = ("fmp", "ft", "fp", "anp")
    assert all(get_defense(k).holdout_for("paper", "gtsrb").fraction == 0.1 for k in keys)
    assert all(get_defense(k).holdout_for("paper", "cifar10") == fmp.FMP_HOLDOUT for k in keys)
    assert any("GTSRB: a 10 % clean subset" in line for line in get_defense("fmp").deviations["paper"])
    official = FMPConfig(gtsrb_clean_ratio=fmp.OFFICIAL_GTSRB_CLEAN_RATIO)
    monkeypatch.setitem(fmp.FMP_PROFILES, "paper", official)
    assert all(get_defense(k).holdout_for("paper", "gtsrb").fraction == 0.05 for k in keys)
    assert get_defense("anp").holdout_for("paper", "gtsrb").rule == "clean_subset"
    assert fmp.gtsrb_ratio_deviation(official) == () and fmp.gtsrb_ratio_deviation(FMPConfig())


def tiny_spec_for_fmp():
    from backdoor_repro.spec import RunSpec
    from defense_fixtures import TINY_NO_DEFENSE
    return RunSpec("cifar10-smoke", 20, "preact_resnet18", 4, 10, "grid3", {"rate": 0.2}, 0, 0, TINY_NO_DEFENSE,
                   fmp.FMP_HOLDOUT)

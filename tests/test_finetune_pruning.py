"""FMP's table's fine-pruning baseline (FP) on tiny cases: the channels switched off in order of activation until
the clean-subset accuracy drops, stepped and kept as BackdoorBench does. FT and FP run end to end in the contract,
resume and grid tests."""
import pytest
import torch

from backdoor_repro.defenses.finetune_pruning import head_inputs, last_stage_activation, prune_until_accuracy_drops
from backdoor_repro.models import build_model
from backdoor_repro.train import predict


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


def test_ft_and_fp_take_backdoorbenchs_defaults_as_fmps_code_base_runs_them():
    """FMT config/defense/{ft,fp}/cifar10.yaml with train_settings_generate.py (CosineAnnealingLR, T_max 100, per
    epoch) and BackdoorBench's once_prune_ratio 0.01: 100 epochs, batch 256 (no drop_last), SGD 0.01, momentum 0.9,
    wd 5e-4, the train transform; FP's acc_ratio 0.1."""
    from backdoor_repro.defenses import get_defense
    ft, fp = get_defense("ft").config("paper"), get_defense("fp").config("paper")
    for cfg in (ft.finetune, fp.finetune):
        assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay) == (100, 256, 0.01, 0.9, 5e-4)
        assert (cfg.schedule, cfg.schedule_epochs, cfg.min_lr_ratio) == ("cosine_epoch", None, 0.0)
        assert not cfg.drop_last
        assert cfg.augmentation == "crop_flip" and cfg.optimizer == "sgd" and not cfg.nesterov
    assert (fp.acc_ratio, fp.once_prune_ratio) == (0.1, 0.01)

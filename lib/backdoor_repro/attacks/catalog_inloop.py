"""The training-controlled attacks: each poisons inside the attacker's own training loop (``attack_training.py``), so
its No-Defense model is the product of that loop and it has no fixed poisoned training set."""
from __future__ import annotations

from . import inputaware_loop, wanet_inloop
from .base import assemble
from .post_tensor import PostTensorConfig
from .registry import register


@register("wanet_bb_inloop", "WaNet", "FMP", "BackdoorBench's WaNet as it trains it: every batch, the first "
          "int(bs x 0.1) warped to target 0, the next x2 noise-warped with true labels; per-batch crop, rotation, flip")
def _wanet_bb_inloop(data_seed=0, k=4, s=0.5, grid_rescale=1.0, cross_ratio=2.0, crop_padding=5, rotation=10.0,
                     milestones=(100, 200, 300, 400), normalization="cifar10", **common):
    transform = PostTensorConfig(crop_padding=crop_padding, rotation=rotation)
    loop = wanet_inloop.WanetLoop(k, s, grid_rescale, cross_ratio, transform, milestones)
    attack = assemble("wanet_bb_inloop", wanet_inloop.test_trigger(loop, data_seed, normalization), common,
                      target=0, selection="random_all", rate=0.1, training=loop,
                      source="BackdoorBench attack/wanet.py, config/attack/wanet/default.yaml (training-controlled)")
    if attack.rate * (1 + cross_ratio) > 1:
        raise ValueError(f"wanet_bb_inloop: rate {attack.rate} with cross_ratio {cross_ratio} asks for more than a "
                         "whole batch")
    return attack


@register("inputaware_bb", "Input-aware", "FMP", "BackdoorBench's Input-aware dynamic backdoor as it trains it: 25 "
          "epochs of mask pre-training, then every batch int(bs x 0.1) images with their own generated pattern and "
          "mask to target 0, as many with another image's pattern and mask (true labels), the rest clean")
def _inputaware_bb(data_seed=0, lr_c=0.01, lr_g=0.01, lr_m=0.01, lambda_div=1.0, lambda_norm=100.0,
                   mask_density=0.032, mask_epochs=25, milestones_c=(100, 200, 300, 400),
                   milestones_g=(200, 300, 400, 500), milestones_m=(10, 20), accumulate_generator_grads=True,
                   double_mask_forward=True, augmentation=None, normalization="cifar10", generator_base=32,
                   generator_steps=3, **common):
    loop = inputaware_loop.InputAwareLoop(
        lr_c=lr_c, lr_g=lr_g, lr_m=lr_m, lambda_div=lambda_div, lambda_norm=lambda_norm, mask_density=mask_density,
        mask_epochs=mask_epochs, milestones_c=tuple(milestones_c), milestones_g=tuple(milestones_g),
        milestones_m=tuple(milestones_m), accumulate_generator_grads=accumulate_generator_grads,
        double_mask_forward=double_mask_forward, augmentation=augmentation, normalization=normalization,
        generator_base=generator_base, generator_steps=generator_steps)
    attack = assemble("inputaware_bb", inputaware_loop.learned_trigger("inputaware_bb"), common, target=0,
                      selection="random_all", rate=0.1, training=loop,
                      source="BackdoorBench attack/inputaware.py, config/attack/inputaware/default.yaml "
                             "(training-controlled; its quirks: InputAwareLoop.notes())")
    if attack.rate * 2 > 1:
        raise ValueError(f"inputaware_bb: rate {attack.rate} with as many cross samples asks for more than a batch")
    if attack.label_mode == "clean_label":
        raise ValueError("inputaware_bb: the official code implements all2one and all2all only")
    return attack

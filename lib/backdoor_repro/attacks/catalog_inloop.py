"""The training-controlled attacks: each poisons inside the attacker's own training loop (``attack_training.py``), so
its No-Defense model is the product of that loop and it has no fixed poisoned training set."""
from __future__ import annotations

from . import wanet_inloop
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

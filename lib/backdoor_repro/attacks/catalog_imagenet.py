"""The papers' ImageNet-scale attacks, registered by key (triggers in :mod:`.imagenet`).

T&R ImageNet-12 keys are defined at 256 px (official) and 224 px (the 256-px pattern's centre crop); FCT ImageNet
keys at 224 px. DBD's code has no ImageNet configuration: its Blend rule resizes the kitty to any image size
(``blend_kitty_dbd``); ``blend_noise`` and ``wanet`` scale too, unverified; no DBD ImageNet BadNets patch is
registered (the paper's is not in the code and no file of it is shipped).

Deviations, listed: T&R's selection (the first 10 % of N of an unseeded shuffle) is our ``first_n_nontarget`` on
our order; T&R trains on RandomResizedCrop(224) views of the 256-px poisoned image, which a 224-px data set
cannot give. FCT's triggers are stamped before Resize(224) at the stored size (see :mod:`.imagenet`).
"""
from __future__ import annotations

from functools import partial

from . import imagenet
from .base import assemble
from .registry import register

TR = "T&R (ImageNet-12)"
FCT = "FCT (ImageNet subset)"


@register("grid_tr_imagenet", "BadNets", TR, "3x3 grid of 10-px cells at rows/cols 32-61 of 256 px, values "
          "[[255,0,255],[0,255,0],[255,0,0]]; 16-45 at 224 px (T&R ImageNet badnet_grid)")
def _grid_tr_imagenet(data_seed=0, **common):
    return assemble("grid_tr_imagenet", imagenet.tr_sized(imagenet.tr_grid), common, target=0,
                 selection="first_n_nontarget", rate=0.1, source="T&R datasets/imagenet.py badnet_grid")


@register("blend_kitty_tr_imagenet", "Blended", TR, "Hello Kitty resized to 256 px (bicubic), PIL blend 0.2; "
          "centre crop at 224 px (T&R ImageNet blend)")
def _blend_kitty_tr_imagenet(data_seed=0, alpha=0.2, **common):
    return assemble("blend_kitty_tr_imagenet", imagenet.tr_sized(partial(imagenet.tr_blend, alpha)), common, target=0,
                 selection="first_n_nontarget", rate=0.1, source="T&R datasets/imagenet.py blend, triggers/blend.png")


@register("trojan_wm_tr_imagenet", "Trojan", TR, "Trojan watermark resized to 256 px (bicubic), added as uint8 "
          "(sums wrap); centre crop at 224 px (T&R ImageNet trojan_wm)")
def _trojan_wm_tr_imagenet(data_seed=0, **common):
    return assemble("trojan_wm_tr_imagenet", imagenet.tr_sized(imagenet.tr_trojan_wm), common, target=0,
                 selection="first_n_nontarget", rate=0.1, source="T&R datasets/imagenet.py trojan_wm")


@register("sig_tr_imagenet", "SIG", TR, "wrapped stripes sig.png resized to 256 px (bicubic), 0.8 x + 0.2 s, clean "
          "label, the target-class images; centre crop at 224 px (T&R ImageNet sig)")
def _sig_tr_imagenet(data_seed=0, alpha=0.2, **common):
    return assemble("sig_tr_imagenet", imagenet.tr_sized(partial(imagenet.tr_sig, alpha)), common, target=0,
                 label_mode="clean_label", selection="first_n_target", rate=0.1,
                 source="T&R datasets/imagenet.py sig, triggers/sig.png")


@register("white22_fct_imagenet", "BadNets", FCT, "white 22x22 square at rows/cols 202-223 of 224 px, no margin "
          "(FCT squareTrigger_imagenet, BadNets-all2one on ImageNet)")
def _white22_fct_imagenet(data_seed=0, **common):
    return assemble("white22_fct_imagenet", imagenet.fct_square(), common, target=0, selection="random_nontarget",
                 rate=0.1, official_stream="fct", source="FCT utils/dataloader_bd.py _squareTrigger_imagenet")


@register("blend_strip_fct_imagenet", "Blended", FCT, "0.8 x + 0.2 (20 sin(2 pi 6 c / 224)), clip: a 20% dimming "
          "plus a +-4 ripple (FCT signalTrigger_imagenet, Blend-Strip on ImageNet)")
def _blend_strip_fct_imagenet(data_seed=0, alpha=0.2, **common):
    return assemble("blend_strip_fct_imagenet", imagenet.fct_sine(alpha), common, target=0, selection="random_nontarget",
                 rate=0.1, official_stream="fct", source="FCT utils/dataloader_bd.py _signalTrigger_imagenet")

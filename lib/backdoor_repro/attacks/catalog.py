"""The papers' attacks at CIFAR / GTSRB scale, registered by key (:mod:`.registry`); the ImageNet-scale keys are in
:mod:`.catalog_imagenet`. Each attack is defined at the square image sizes its trigger declares (``Attack.sizes``;
``None``: any, by a stated rule); ``sizes.check_attack_size`` is the preflight check."""
from __future__ import annotations

from functools import partial

from . import additive, blend, patch, trojannn, wanet
from .assets import array_asset, fct_trojan_pattern, image_asset, wrapped_stripes
from .base import assemble
from .lc_files import with_file_images
from .registry import register


# ---------------------------------------------------------------- BadNets (§3.1)
@register("badnets_dbd_2x2", "BadNets", "DBD", "4 coloured pixels at rows/cols 4-5 (DBD cifar_1.png)")
def _badnets_dbd(data_seed=0, **common):
    return assemble("badnets_dbd_2x2", patch.dbd_2x2(), common, target=3, selection="bernoulli_nontarget", rate=0.05,
                 official_stream="dbd", source="SCLBD/DBD data/backdoor.py")


@register("grid3", "BadNets", "T&R, FCT", "3x3 grid, rows/cols 29-31 (T&R badnet_grid, FCT gridTrigger)")
def _grid3(data_seed=0, **common):
    return assemble("grid3", patch.grid3(), common, target=0, selection="random_nontarget", rate=0.1,
                 official_stream="fct", source="FCT utils/dataloader_bd.py; T&R datasets/cifar.py")


@register("grid3_tr", "BadNets", "T&R", "3x3 grid, rows/cols 29-31, the first int(0.1 N) non-target images (T&R badnet_grid)")
def _grid3_tr(data_seed=0, **common):
    return assemble("grid3_tr", patch.grid3(), common, target=0, selection="first_n_nontarget", rate=0.1,
                 source="T&R datasets/cifar.py")


@register("white4_tr", "BadNets", "T&R", "white 4x4, rows/cols 27-30 (T&R badnet_sq)")
def _white4_tr(data_seed=0, **common):
    return assemble("white4_tr", patch.white_square(27, 4), common, target=0, selection="first_n_nontarget", rate=0.1,
                 source="T&R datasets/cifar.py")


@register("white3_fct", "BadNets", "FCT", "white 3x3, rows/cols 28-30, all-to-all (FCT squareTrigger)")
def _white3_fct(data_seed=0, **common):
    return assemble("white3_fct", patch.white_square(28, 3), common, target=0, label_mode="all2all",
                 selection="random_all_floor", rate=0.1, official_stream="fct", source="FCT utils/dataloader_bd.py")


@register("white3_bb", "BadNets", "FMP", "white 3x3, rows/cols 29-31 (BackdoorBench badnet)")
def _white3_bb(data_seed=0, **common):
    return assemble("white3_bb", patch.backdoorbench_white3(), common, target=0, selection="random_all", rate=0.1,
                 official_stream="backdoorbench", source="BackdoorBench resource/badnet; FMT utils/bd_img_transform/patch.py")


@register("grid_bb", "BadNets", "FMP", "3x3 grid, rows/cols 29-31, 255 on corners and centre, 1 elsewhere "
          "(BackdoorBench badnet_grid.png; differs from grid3 at five pixels)")
def _grid_bb(data_seed=0, **common):
    return assemble("grid_bb", patch.backdoorbench_grid(), common, target=0, selection="random_all", rate=0.1,
                 official_stream="backdoorbench", source="BackdoorBench resource/badnet/grid; FMT utils/bd_img_transform/patch.py")


# ---------------------------------------------------------------- Blended (§3.2)
@register("blend_kitty_dbd", "Blended", "DBD", "Hello Kitty, PIL bicubic resize to the image (any size), alpha 0.1, "
          "PIL blend")
def _blend_kitty_dbd(data_seed=0, alpha=0.1, **common):
    trigger = blend.at_any_size(blend.kitty_dbd, "DBD data/backdoor.py Blend: the Hello Kitty PNG resized to the "
                                "image's size with PIL's default filter (bicubic), then Image.blend", alpha=alpha)
    return assemble("blend_kitty_dbd", trigger, common, target=3,
                 selection="bernoulli_nontarget", rate=0.05, official_stream="dbd", source="SCLBD/DBD data/backdoor.py")


@register("blend_kitty_fct", "Blended", "FCT", "Hello Kitty, bilinear resize (no anti-aliasing), alpha 0.2, "
          "float64 image term + float32 pattern term")
def _blend_kitty_fct(data_seed=0, alpha=0.2, **common):
    trigger = blend.BlendTrigger(blend.kitty_fct(), alpha, rounding="cast_wrap", arithmetic="float64_plus_float32")
    return assemble("blend_kitty_fct", trigger, common, target=0, selection="random_nontarget", rate=0.1,
                 official_stream="fct", source="FCT utils/dataloader_bd.py")


@register("blend_kitty_bb", "Blended", "FMP", "BackdoorBench hello_kitty.jpeg, PIL bilinear resize, alpha 0.2, "
          "float64 + float32 terms cast to float32")
def _blend_kitty_bb(data_seed=0, alpha=0.2, **common):
    trigger = blend.at_any_size(blend.kitty_backdoorbench, "BackdoorBench blended: hello_kitty.jpeg resized to the "
                                "image size (torchvision Resize, PIL bilinear)", alpha=alpha,
                                arithmetic="float64_plus_float32_as_float32")
    return assemble("blend_kitty_bb", trigger, common, target=0, selection="random_all", rate=0.1,
                 official_stream="backdoorbench", source="FMT utils/aggregate_block/bd_attack_generate.py")


@register("blend_kitty_tr", "Blended", "T&R", "Hello Kitty, scikit-image anti-aliased resize, 0.8 x + 0.2 t in "
          "float64 (T&R blend)")
def _blend_kitty_tr(data_seed=0, alpha=0.2, **common):
    trigger = blend.BlendTrigger(blend.kitty_tr(), alpha, arithmetic="float64")
    return assemble("blend_kitty_tr", trigger, common, target=0, selection="first_n_nontarget", rate=0.1,
                 source="T&R datasets/cifar.py, triggers/blend.png")


@register("blend_strip_fct", "Blended", "FCT", "wrapped stripe pattern s, alpha 0.2, dirty label (Blend-Strip)")
def _blend_strip_fct(data_seed=0, alpha=0.2, **common):
    trigger = blend.BlendTrigger(wrapped_stripes(), alpha, rounding="cast_wrap", arithmetic="float64")
    return assemble("blend_strip_fct", trigger, common, target=0, selection="random_nontarget", rate=0.1,
                 official_stream="fct", source="FCT utils/dataloader_bd.py signalTrigger")


@register("blend_noise", "Blended", "DBD (ImageNet, unverified)", "uniform random-noise pattern from data_seed, "
          "drawn at the image size, alpha 0.1")
def _blend_noise(data_seed=0, alpha=0.1, **common):
    trigger = blend.at_any_size(partial(blend.uniform_noise, data_seed), "ours: a uniform noise image of the image's "
                                "size drawn from data_seed (the DBD paper's ImageNet pattern is not in its code)",
                                alpha=alpha)
    return assemble("blend_noise", trigger, common, target=3,
                 selection="bernoulli_nontarget", rate=0.05, source="DBD paper (not in official code)")


# ---------------------------------------------------------------- Trojan (§3.3)
@register("trojan3_fct", "Trojan", "FCT", "3x3 Trojan at rows/cols 25-27, added, sums > 255 wrap (FCT)")
def _trojan3_fct(data_seed=0, **common):
    trigger = additive.AdditiveTrigger(fct_trojan_pattern().floor(), rounding="cast_wrap")
    return assemble("trojan3_fct", trigger, common, target=0, selection="random_nontarget", rate=0.1,
                 official_stream="fct", source="FCT trigger/best_square_trigger_cifar10.npz")


@register("trojan3_tr", "Trojan", "T&R", "same 3x3 Trojan, added, saturating (T&R trojan_3x3.png)")
def _trojan3_tr(data_seed=0, **common):
    trigger = additive.AdditiveTrigger(image_asset("trap_and_replace/trojan_3x3.png").float())
    return assemble("trojan3_tr", trigger, common, target=0, selection="first_n_nontarget", rate=0.1,
                 source="T&R triggers/trojan_3x3.png")


@register("trojan8_tr", "Trojan", "T&R", "8x8 Trojan (I-BAU trojan_sq), rows/cols 21-29, added, saturating (T&R trojan_8x8)")
def _trojan8_tr(data_seed=0, **common):
    trigger = additive.AdditiveTrigger(image_asset("trap_and_replace/trojan_8x8.png").float())
    return assemble("trojan8_tr", trigger, common, target=0, selection="first_n_nontarget", rate=0.1,
                 source="T&R triggers/trojan_8x8.png")


@register("trojan_wm_tr", "Trojan", "T&R", "Trojan watermark, 321 pixels in rows/cols 0-29, added, saturating (T&R trojan_wm)")
def _trojan_wm_tr(data_seed=0, **common):
    trigger = additive.AdditiveTrigger(image_asset("trap_and_replace/trojan_wm.png").float())
    return assemble("trojan_wm_tr", trigger, common, target=0, selection="first_n_nontarget", rate=0.1,
                 source="T&R triggers/trojan_wm.png")


@register("trojannn_bb", "TrojanNN", "FMP", "BackdoorBench's TrojanNN: a pattern optimised on the clean model (2 "
          "neurons of an untrained 1000-way head driven to 100 by 1,000 sign steps inside the apple mask), added with "
          "uint8 wrap-around to a random round(0.1 N) of all classes, relabelled to 0; the pattern is the spec's "
          "trigger_stage")
def _trojannn_bb(data_seed=0, num_neurons=2, target_value=100.0, steps=1000, step=0.1, eps=0.3, tolerance=1e-3,
                 **common):
    search = trojannn.TrojanSearch(num_neurons, target_value, steps, step, eps, tolerance)
    return trojannn.unoptimised_attack(search, **common)


# ---------------------------------------------------------------- l0 / l2 invisible, smooth (§3.7, §3.8; T&R only)
@register("l0_inv", "Invisible", "T&R", "9 pixels of row 31 (cols 23-31) replaced: x (1 - M) + t (T&R l0_inv)")
def _l0_inv(data_seed=0, **common):
    keep = 1 - array_asset("trap_and_replace/mask.npy").double()
    trigger = additive.MaskAddTrigger(keep, image_asset("trap_and_replace/l0_inv.png").double())
    return assemble("l0_inv", trigger, common, target=0, selection="first_n_nontarget", rate=0.1,
                 source="T&R triggers/l0_inv.png, mask.npy")


@register("l2_inv", "Invisible", "T&R", "full-image pattern (905 non-zero pixels, max 68), added, saturating (T&R l2_inv)")
def _l2_inv(data_seed=0, **common):
    trigger = additive.AdditiveTrigger(image_asset("trap_and_replace/l2_inv.png").float())
    return assemble("l2_inv", trigger, common, target=0, selection="first_n_nontarget", rate=0.1,
                 source="T&R triggers/l2_inv.png")


@register("smooth_tr", "Smooth", "T&R", "low-frequency pattern added, then each image min-max rescaled to [0, 255] "
          "(T&R smooth; variant='gtsrb' for its GTSRB pattern)")
def _smooth_tr(data_seed=0, variant="cifar10", **common):
    if variant not in ("cifar10", "gtsrb"):
        raise ValueError(f"smooth_tr: variant must be 'cifar10' or 'gtsrb', got {variant!r}")
    trigger = additive.MinMaxAddTrigger(image_asset(f"trap_and_replace/smooth_{variant}.png").double())
    return assemble("smooth_tr", trigger, common, target=0, selection="first_n_nontarget", rate=0.1,
                 source=f"T&R triggers/smooth_{variant}.png")


# ---------------------------------------------------------------- SIG (§3.4)
@register("sig_fct", "SIG", "FCT", "additive sinusoid f=6, delta 40 train / 60 test, clean label, 10% of the target class")
def _sig_fct(data_seed=0, delta=40.0, delta_test=60.0, **common):
    trigger = additive.sig_any_size(delta, delta_test)
    return assemble("sig_fct", trigger, common, target=0, label_mode="clean_label", selection="target_fraction",
                 rate=0.1, official_stream="fct", source="FCT utils/dataloader_bd.py _sigTrigger")


@register("sig_bb", "SIG", "FMP", "additive sinusoid f=6, delta 40, clean label, round(0.1 N) target-class images "
          "(all of them on CIFAR-10)")
def _sig_bb(data_seed=0, delta=40.0, **common):
    return assemble("sig_bb", additive.AdditiveTrigger(additive.sinusoid(delta)), common, target=0,
                 label_mode="clean_label", selection="random_target_of_all", rate=0.1, official_stream="backdoorbench",
                 source="FMT utils/bd_img_transform/sig.py")


@register("sig_tr_wrapped", "SIG", "T&R", "blend 0.2 with the wrapped stripe pattern s, clean label, the first "
          "min(#target, int(0.1 N)) target-class images (T&R sig)")
def _sig_tr(data_seed=0, alpha=0.2, **common):
    return assemble("sig_tr_wrapped", blend.BlendTrigger(wrapped_stripes(), alpha, arithmetic="float64"), common, target=0,
                 label_mode="clean_label", selection="first_n_target", rate=0.1, source="T&R datasets/cifar.py")


# ---------------------------------------------------------------- LF (§3.9)
@register("lf_bb", "LF", "FMP", "BackdoorBench's shipped low-frequency universal perturbation for PreAct-ResNet-18 "
          "(0-51), added and clipped, dirty label")
def _lf_bb(data_seed=0, variant="cifar10", **common):
    if variant not in ("cifar10", "cifar100", "gtsrb"):
        raise ValueError(f"lf_bb: variant must be 'cifar10', 'cifar100' or 'gtsrb', got {variant!r}")
    pattern = array_asset(f"backdoorbench/lf_{variant}_preactresnet18.npy").permute(2, 0, 1).double()
    return assemble("lf_bb", additive.AdditiveTrigger(pattern), common, target=0, selection="random_all", rate=0.1,
                 official_stream="backdoorbench",
                 source=f"BackdoorBench resource/lowFrequency/{variant}_preactresnet18_0_255.npy; SimpleAdditiveTrigger")


# ---------------------------------------------------------------- WaNet (§3.6)
@register("wanet", "WaNet", "DBD, FMP", "warp k=4, s=0.5 at the image size, fixed poisoned indices, noise mode x2 "
          "with true labels (DBD's ImageNet k, s are not in its code: unverified)")
def _wanet(data_seed=0, k=4, s=0.5, grid_rescale=1.0, cross_ratio=2.0, **common):
    trigger, noisy = wanet.sized_triggers(k, s, grid_rescale, data_seed)
    return assemble("wanet", trigger, common, target=3, selection="bernoulli_nontarget", rate=0.05,
                 cross_ratio=cross_ratio, cross_trigger=noisy,
                 source="BackdoorBench attack/wanet.py (as data poisoning)")


@register("wanet_bb", "WaNet", "FMP", "BackdoorBench's warp (k=4, s=0.5) as fixed-index data poisoning: round(0.1 N) "
          "from all classes, target 0, noise mode x2 with true labels (BackdoorBench re-draws both every batch)")
def _wanet_bb(data_seed=0, k=4, s=0.5, grid_rescale=1.0, cross_ratio=2.0, **common):
    trigger, noisy = wanet.sized_triggers(k, s, grid_rescale, data_seed)
    return assemble("wanet_bb", trigger, common, target=0, selection="random_all", rate=0.1,
                 cross_ratio=cross_ratio, cross_trigger=noisy,
                 official_stream="backdoorbench", source="BackdoorBench attack/wanet.py (as data poisoning)")


# ---------------------------------------------------------------- Label-consistent (§3.5)
@register("lc_dbd", "Label-consistent", "DBD (paper only)",
          "PGD l_inf 16/255 on a clean model, then the 3x3 grid at rows/cols 29-31; 25% of the target class")
def _lc_dbd(data_seed=0, eps=16 / 255, step=2 / 255, steps=20, **common):
    return assemble("lc_dbd", patch.grid3(), common, target=3, label_mode="clean_label", selection="target_fraction",
                 rate=0.25, pgd={"eps": eps, "step": step, "steps": steps},
                 source="DBD paper (not in official code); LC per attacks.md")


@register("cl_tr", "Label-consistent", "T&R", "target-class images made hard by PGD (our substitute for MadryLab's "
          "inf_16 images), then grid3 at all four corners; test: the corners only (T&R cl); "
          "adv_images=lc_files.adversarial_images(path): the official inf_16.npy instead of our PGD")
def _cl_tr(data_seed=0, eps=16 / 255, step=2 / 255, steps=20, adv_images=None, **common):
    attack = assemble("cl_tr", patch.four_corner_grid3(), common, target=0, label_mode="clean_label",
                      selection="first_n_target", rate=0.1, pgd={"eps": eps, "step": step, "steps": steps},
                      source="T&R datasets/cifar.py (adversarial images: PGD substitute, see attacks.md §5)")
    return with_file_images(attack, adv_images)


@register("cl_fct", "Label-consistent", "FCT", "PGD 8/255 x 4 steps on the unnormalised input of a clean model, no clamp, "
          "uint8 wrap, then four 3x3 corner patches; 10% of the target class; test: the patches only (FCT CL)")
def _cl_fct(data_seed=0, eps=8 / 255, step=2 / 255, steps=4, **common):
    pgd = {"eps": eps, "step": step, "steps": steps, "clamp": False, "normalized_input": False, "rounding": "cast_wrap"}
    return assemble("cl_fct", patch.fct_four_corners(), common, target=0, label_mode="clean_label",
                 selection="target_fraction", rate=0.1, pgd=pgd, official_stream="fct",
                 source="FCT utils/dataloader_bd.py fourCornerTrigger, utils/torchattacks/attacks/pgd.py")


@register("lc_bb", "Label-consistent", "FMP", "PGD l_inf 8/255, step 1.5/255, 100 steps, no random start, on a "
          "clean model, then the grid3 patch at rows/cols 29-31 at full amplitude (FMT lc.py 'bottom-right': +-255, "
          "clip); round(0.1 N) target-class images (all of them on CIFAR-10); test: clean images + the patch "
          "(BackdoorBench tests on adversarial images); adv_images=lc_files.adversarial_images(path): a "
          "craft_adv_dataset.py <dataset>_train.npy instead of our PGD")
def _lc_bb(data_seed=0, eps=8 / 255, step=1.5 / 255, steps=100, adv_images=None, **common):
    attack = assemble("lc_bb", patch.grid3(), common, target=0, label_mode="clean_label",
                      selection="random_target_of_all", rate=0.1, official_stream="backdoorbench",
                      pgd={"eps": eps, "step": step, "steps": steps, "random_start": False, "rounding": "clip_floor"},
                      source="FMT resource/label-consistent/craft_adv_dataset.py, utils/bd_img_transform/lc.py "
                             "(adversarial images: our PGD on a standard clean model)")
    return with_file_images(attack, adv_images)


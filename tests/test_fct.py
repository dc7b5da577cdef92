"""FCT (D-ST, D-BR): the losses against hand-computed values, the transformation τ, the thresholds and split
sizes, the mixed cross-entropy's guard, that unlearning ascends the D_p loss, FCT's CL trigger and PGD, and
the three networks' shapes and parameter counts."""
import math

import pytest
import torch
import torch.nn.functional as F

from backdoor_repro.attacks import get_attack, pgd_adversary
from backdoor_repro.augment import rotate_translate
from backdoor_repro.defenses.fct import BRConfig, _pass
from backdoor_repro.defenses.fct_sd import SDConfig, SDObjective, split_quality, split_samples, split_used
from backdoor_repro.losses import (FLAG_CLEAN, FLAG_POISONED, FLAG_UNCERTAIN, intra_class_separation,
                                   mixed_cross_entropy, supcon_loss, supcon_positive_mask)
from backdoor_repro.models import ContrastiveEncoder, build_model


def test_intra_class_separation_by_hand():
    features = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 2])  # class 3 of 4 is absent: 3 centres
    # centres (2,0) (0,2) (1,1) -> normalised (1,0) (0,1) (.707,.707); off-diagonal cosines 0, .707, .707 (twice)
    want = (2 * 0 + 4 * (1 / math.sqrt(2))) / 9
    assert intra_class_separation(features, labels, 4).item() == pytest.approx(want, rel=1e-6)


def _supcon_by_hand(z1, z2, positives, t=0.1, base=0.07):
    """SupCon 'all' mode written out sample by sample: anchors are all 2B views."""
    views = torch.cat([z1, z2])
    b, losses = z1.shape[0], []
    for i in range(2 * b):
        others = [j for j in range(2 * b) if j != i]
        denominator = sum(math.exp(float(views[i] @ views[j]) / t) for j in others)
        pos = [j for j in others if positives[i % b][j % b]]
        losses.append(-sum(float(views[i] @ views[j]) / t - math.log(denominator) for j in pos) / len(pos))
    return t / base * sum(losses) / len(losses)


@pytest.mark.parametrize("mode", ["simclr", "supervised", "code", "symmetric"])
def test_supcon_loss_matches_the_formula_for_each_mask(mode):
    gen = torch.Generator().manual_seed(0)
    z1, z2 = (F.normalize(torch.randn(5, 4, generator=gen), dim=1) for _ in range(2))
    labels = torch.tensor([0, 0, 1, 1, 0])
    flags = torch.tensor([FLAG_CLEAN, FLAG_POISONED, FLAG_CLEAN, FLAG_UNCERTAIN, FLAG_CLEAN])
    mask = supcon_positive_mask(labels, flags, mode)
    assert supcon_loss(z1, z2, mask).item() == pytest.approx(_supcon_by_hand(z1, z2, mask.bool().tolist()), rel=1e-5)


def test_ssctl_masks_follow_the_official_asymmetry():
    labels = torch.tensor([0, 0, 1])
    flags = torch.tensor([FLAG_CLEAN, FLAG_POISONED, FLAG_CLEAN])
    code = supcon_positive_mask(labels, flags, "code")
    assert code.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]  # the clean anchor 0 still attracts poisoned 1
    assert supcon_positive_mask(labels, flags, "symmetric").tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert supcon_positive_mask(labels, flags, "supervised").tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    with pytest.raises(ValueError, match="mask"):
        supcon_positive_mask(labels, flags, "cosine")


def test_mixed_cross_entropy_and_its_guard():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 0])
    ce = F.cross_entropy(logits, labels, reduction="none")
    flags = torch.tensor([FLAG_CLEAN, FLAG_CLEAN, FLAG_POISONED])
    assert mixed_cross_entropy(logits, labels, flags, 0.001).item() == pytest.approx(ce[:2].mean() - 0.001 * ce[2])
    no_poisoned = torch.tensor([FLAG_CLEAN, FLAG_UNCERTAIN, FLAG_CLEAN])  # the official code gives NaN here
    value = mixed_cross_entropy(logits, labels, no_poisoned, 0.001)
    assert torch.isfinite(value) and value.item() == pytest.approx(ce[[0, 2]].mean())


def test_fct_transformation_rotates_and_shifts_by_whole_pixels():
    x = torch.rand(6, 3, 32, 32)
    assert torch.equal(rotate_translate(x, torch.Generator().manual_seed(0), degrees=0.0, translate=0.0), x)
    dot = torch.zeros(1, 3, 32, 32)
    dot[..., 16, 16] = 1
    for seed in range(20):
        moved = rotate_translate(dot, torch.Generator().manual_seed(seed), degrees=0.0, translate=0.2)
        (r, c), = torch.nonzero(moved[0, 0]).tolist()
        assert abs(r - 16) <= 6 and abs(c - 16) <= 6  # round(U(-6.4, 6.4)) pixels
    turned = rotate_translate(torch.rand(64, 3, 32, 32), torch.Generator().manual_seed(1))
    assert 0.05 < (turned == 0).float().mean() < 0.6  # rotated corners and shifted edges are filled with 0


def test_thresholds_and_split_sizes():
    scores = torch.arange(100, dtype=torch.float32)[torch.randperm(100, generator=torch.Generator().manual_seed(0))]
    cfg = SDConfig(alpha_c=0.2, alpha_p=0.05)
    flags, gamma_c, gamma_p = split_samples(scores, scores, cfg)
    assert (gamma_c, gamma_p) == (20.0, 95.0)  # sorted[int(0.2 N)], sorted[N - int(0.05 N)]
    assert int((flags == FLAG_CLEAN).sum()) == 21 and int((flags == FLAG_POISONED).sum()) == 5  # <= and >=
    ranked, _, _ = split_samples(scores, torch.zeros(100), SDConfig(split="rank"))
    assert int((ranked == FLAG_CLEAN).sum()) == 20 and int((ranked == FLAG_POISONED).sum()) == 5
    second = scores.flip(0)  # the two-pass split takes membership from the second pass
    moved, _, _ = split_samples(scores, second, cfg)
    assert torch.equal(moved == FLAG_CLEAN, second <= 20)
    quality = split_quality(flags, scores >= 95)
    assert quality["D_p precision"] == 100 and quality["D_p recall"] == 100 and quality["D_c purity"] == 100


def test_the_optional_collapse_guard_falls_back_to_the_rank_split():
    # 30 of 100 scores exactly 0 (the collapse users of the code report): two-pass puts all 30 in D_c
    scores = torch.cat([torch.zeros(30), torch.arange(1, 71, dtype=torch.float32)])
    cfg = SDConfig(alpha_c=0.2, alpha_p=0.05, rank_if_ties_above=0.01)
    flags, gamma_c, _ = split_samples(scores, scores, cfg)
    assert gamma_c == 0 and split_used(scores, gamma_c, 66.0, cfg) == "rank"
    assert int((flags == FLAG_CLEAN).sum()) == 20 and torch.equal(torch.nonzero(flags == FLAG_CLEAN).flatten(),
                                                                  torch.arange(20))  # ties by index
    code, _, _ = split_samples(scores, scores, SDConfig(alpha_c=0.2, alpha_p=0.05))  # the default: guard off
    assert int((code == FLAG_CLEAN).sum()) == 30 and split_used(scores, gamma_c, 66.0, SDConfig()) == "two_pass"
    distinct = torch.arange(100, dtype=torch.float32)
    assert split_used(distinct, 20.0, 95.0, cfg) == "two_pass"  # no score ties with a threshold
    one_tie = torch.cat([distinct[:50], torch.tensor([20.0]), distinct[51:]])  # 20 twice: 1 % besides itself
    assert split_used(one_tie, 20.0, 95.0, cfg) == "two_pass"
    two_ties = torch.cat([distinct[:50], torch.tensor([20.0, 20.0]), distinct[52:]])  # 2 %: over the guard
    assert split_used(two_ties, 20.0, 95.0, cfg) == "rank"
    with pytest.raises(ValueError, match="rank_if_ties_above"):
        SDConfig(rank_if_ties_above=1.5)


def test_sd_objective_switches_from_cross_entropy_to_l_intra():
    model = build_model("resnet18_maxpool", 10, 4)
    objective = SDObjective(warmup_epochs=2, num_classes=10)
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 10
    objective.start_epoch(1)
    ce, _ = objective.loss(model, x, y, None, None)
    assert ce.item() == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-5)
    objective.start_epoch(2)
    intra, _ = objective.loss(model, x, y, None, None)
    assert intra.item() == pytest.approx(intra_class_separation(model.features(x), y, 10).item(), rel=1e-5)


def test_unlearning_steps_ascend_the_loss_of_the_poisoned_samples():
    torch.manual_seed(0)
    model = build_model("resnet18_maxpool", 10, 4)
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    labels = torch.zeros(32, dtype=torch.long)

    def loss():
        model.eval()
        with torch.no_grad():
            return F.cross_entropy(model(images.float() / 255), labels).item()

    before = loss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    cfg = BRConfig(batch_size=16, augmentation="none")
    for _ in range(3):
        model.train()
        _pass(model, opt, images, labels, cfg, torch.Generator().manual_seed(0), sign=-1.0)
    assert loss() > before + 0.1


def test_networks_shapes_and_parameter_counts():
    maxpool, plain = build_model("resnet18_maxpool", 10, 64), build_model("resnet18", 100, 64)
    assert sum(p.numel() for p in maxpool.parameters()) == 11_173_962  # huyvnphan's CIFAR-10 ResNet-18
    assert sum(p.numel() for p in plain.parameters()) == 11_220_132  # no max-pool, 100 classes
    x = torch.rand(2, 3, 32, 32)
    stem = maxpool.backbone.maxpool(torch.relu(maxpool.backbone.bn1(maxpool.backbone.conv1(x))))
    assert stem.shape == (2, 64, 16, 16) and maxpool.features(x).shape == (2, 512)
    encoder = ContrastiveEncoder(build_model("resnet18", 10, 64).backbone, plain.normalize, 128, batch_norm=False)
    assert sum(p.numel() for p in encoder.projector.parameters()) == 512 * 512 + 512 + 512 * 128 + 128
    z = encoder(x)
    assert z.shape == (2, 128) and torch.allclose(z.norm(dim=1), torch.ones(2))
    # a max-pool has no parameters: the counts cannot tell it apart; the last stage's map size does (4x4 without it)
    for backbone, side in ((maxpool.backbone, 2), (plain.backbone, 4), (encoder.backbone, 4)):
        seen = []
        handle = backbone.layer4.register_forward_hook(lambda m, i, o: seen.append(o.shape))
        backbone(x)
        handle.remove()
        assert seen == [(2, 512, side, side)] and (backbone.maxpool is None) == (side == 4)


def test_cl_fct_corners_and_pgd_without_clamp_wrap_like_the_official_cast():
    attack = get_attack("cl_fct")
    gray = torch.full((1, 3, 32, 32), 100, dtype=torch.uint8)
    out = attack.trigger.apply(gray)[0]
    assert out[0, 29:32, 29:32].tolist() == [[0, 0, 255], [0, 255, 0], [255, 0, 255]]
    assert out[1, 1:4, 1:4].tolist() == [[255, 0, 255], [0, 255, 0], [255, 0, 0]]
    assert out[2, 29:32, 1:4].tolist() == [[255, 0, 0], [0, 255, 0], [255, 0, 255]]
    assert out[0, 1:4, 29:32].tolist() == [[255, 0, 255], [0, 255, 0], [0, 0, 255]]
    assert int((out != 100).any(0).sum()) == 36 and out[:, 0, :].eq(100).all()  # 1-px margin on top and left
    model = build_model("resnet18_maxpool", 10, 4)
    perturb = pgd_adversary(model, seed=0, **attack.pgd)
    white = torch.full((8, 3, 32, 32), 255, dtype=torch.uint8)
    adversarial = perturb(white, torch.zeros(8, dtype=torch.long)).int()
    # 1 + delta (delta up to 8/255) times 255, truncated: values above 255 wrap to 0..8
    assert ((adversarial >= 247) | (adversarial <= 8)).all() and (adversarial <= 8).any()


def test_fct_networks_normalise_with_fcts_statistics_of_each_dataset():
    from backdoor_repro.defenses.fct import FCT_SPECS
    from backdoor_repro.models import normalization_stats
    from backdoor_repro.spec import RunSpec
    assert all(changes["normalization"] == "fct" for changes in FCT_SPECS.values())
    for dataset, classes in (("cifar10", 10), ("cifar100", 100)):
        spec = RunSpec(dataset, None, "resnet18_maxpool", 4, classes, "grid3", normalization="fct")
        mean, std = normalization_stats("fct", dataset)
        norm = spec.new_model().normalize
        assert torch.allclose(norm.mean.flatten(), torch.tensor(mean)) and torch.allclose(norm.std.flatten(), torch.tensor(std))
    assert normalization_stats("fct", "cifar100")[0][0] != normalization_stats("fct", "cifar10")[0][0]


def test_fct_tables_use_fcts_acc_and_join_the_test_selected_dbr_row():
    """ACC as FCT measures it (non-target images; all of them for all-to-all), and the test-selected D-BR row
    joined with the README's D-BR numbers as the last-epoch row is."""
    import pandas as pd

    from backdoor_repro.fct_tables import TEST_SELECTED, compare_t1, compare_t4
    from backdoor_repro.reported import claims

    rows = []
    for attack, has_target in (("grid3", True), ("white3_fct", False)):
        for defense in ("none", "fct_dbr", "fct_dbr" + TEST_SELECTED):
            metrics = {"ACC": 90.0, "ASR": 5.0, **({"ACC_no_target": 89.0} if has_target else {})}
            rows += [{"dataset": "CIFAR-10", "attack": attack, "defense": defense, "metric": m, "value": v}
                     for m, v in metrics.items()]
    joined = compare_t1(pd.DataFrame(rows), claims("fct", table="readme_results", dataset="CIFAR-10"))
    acc = joined[joined["metric"] == "ACC"].set_index(["attack", "defense"])["ours"]
    assert acc[("grid3", "none")] == 89.0 and acc[("white3_fct", "none")] == 90.0  # all2all: the full test set
    assert joined["reported"].notna().all(), joined  # every row, the test-selected D-BR too, has its number
    oracle = joined[joined["defense"] == "fct_dbr" + TEST_SELECTED].set_index(["attack", "metric"])["reported"]
    last = joined[joined["defense"] == "fct_dbr"].set_index(["attack", "metric"])["reported"]
    assert oracle.equals(last)
    t4 = pd.DataFrame([{"dataset": "CIFAR-10", "attack": "grid3", "defense": "fct_dst", "encoder": e, "metric": m,
                        "value": 1.0} for e in ("CTL", "S-CTL", "SS-CTL") for m in ("ACC_no_target", "ASR")])
    ablation = compare_t4(t4, claims("fct", table="ssctl_ablation", dataset="CIFAR-10"))
    assert len(ablation) == 6 and ablation["reported"].notna().all(), ablation

"""Trap and Replace: WRN-16-1 shapes and parameter count, the block's official quirks, the losses and CutMix
against hand-computed values, and what each stage may change (stage 2: only the head; stem weights and
BatchNorm statistics untouched; the holdout never poisoned and never seen by stage 1)."""
import math

import numpy as np

import pytest
import torch
import torch.nn.functional as F

from backdoor_repro.augment import cutmix
from backdoor_repro.cache import ArtifactCache
from backdoor_repro.data import ImageSet
from backdoor_repro.defenses import get_defense
from backdoor_repro.defenses.trap_and_replace import (PatchConfig, PatchObjective, TRConfig, TrapObjective,
                                                      patch_stage, trap_stage)
from backdoor_repro.losses import label_smoothing_cross_entropy, total_variation
from backdoor_repro.models import build_model
from backdoor_repro.models.wrn import WRNBlock
from backdoor_repro.pipeline import run_data
from backdoor_repro.spec import Holdout, RunSpec
from backdoor_repro.train import TrainConfig, train_model


@pytest.mark.parametrize("stem_end, stem_shape, head_params", [(4, (32, 16, 16), 132618), (5, (64, 8, 8), 74890),
                                                                (6, (64, 8, 8), 778)])
def test_wrn16_1_shapes_and_parameter_count(stem_end, stem_shape, head_params):
    model = build_model("wrn16", 10, 16, stem_end_block=stem_end, decoder=True)
    assert sum(p.numel() for n, p in model.named_parameters() if not n.startswith("decoder")) == 175_626  # ~0.17 M
    x = torch.rand(3, 3, 32, 32)
    logits, rec = model.forward_with_reconstruction(x)
    assert model.stem(x).shape == (3, *stem_shape) and logits.shape == (3, 10) and rec.shape == x.shape
    assert sum(p.numel() for p in model.head.parameters()) == head_params
    assert sum(p.numel() for p in model.fresh_head().parameters()) == head_params  # same shape, fresh weights
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.decoder) and isinstance(model.decoder[-1], torch.nn.Sigmoid)


def test_decoder_output_is_an_image_in_the_unit_interval():
    model = build_model("wrn16", 10, 8, decoder=True)
    _, rec = model.forward_with_reconstruction(torch.randn(4, 3, 32, 32) * 50)
    assert rec.min() >= 0 and rec.max() <= 1


def test_block_follows_the_official_preactivation_quirks():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    equal = WRNBlock(4, 4, 1).eval()
    want = x + equal.conv2(F.leaky_relu(equal.bn2(equal.conv1(F.leaky_relu(equal.bn1(x), 0.1))), 0.1))
    assert torch.allclose(equal(x), want, atol=1e-6)
    widening = WRNBlock(4, 8, 2).eval()  # conv1 and the shortcut read the raw input, bn1's output is unused
    want = widening.shortcut(x) + widening.conv2(F.leaky_relu(widening.bn2(widening.conv1(x)), 0.1))
    assert torch.allclose(widening(x), want, atol=1e-6)
    pre = WRNBlock(4, 8, 2, activate_before_residual=True).eval()
    a = F.leaky_relu(pre.bn1(x), 0.1)
    assert torch.allclose(pre(x), pre.shortcut(a) + pre.conv2(F.leaky_relu(pre.bn2(pre.conv1(a)), 0.1)), atol=1e-6)
    assert all(c.bias is not None for c in (equal.conv1, equal.conv2, widening.shortcut))


def test_fresh_head_has_in_block_dropout_and_resplit_keeps_the_function():
    model = build_model("wrn16", 10, 8).eval()
    head = model.fresh_head(0.5)
    assert [b.drop_rate for b in head.blocks] == [0.5]
    x = torch.rand(2, 3, 32, 32)
    before = model(x)
    assert torch.allclose(before, model.resplit(4)(x), atol=1e-6) and len(model.head.blocks) == 2
    assert torch.allclose(before, model.resplit(6)(x), atol=1e-6) and len(model.head.blocks) == 0


def test_total_variation_and_mse_by_hand():
    img = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])  # B=C=1, 2x2
    # vertical: (2-0)^2 + (4-1)^2 = 13; horizontal: (1-0)^2 + (4-2)^2 = 5; / (1*1*2*2)
    assert total_variation(img).item() == pytest.approx(18 / 4)
    model = build_model("wrn16", 10, 4, decoder=True)
    x = torch.rand(2, 3, 32, 32)
    loss, logits = TrapObjective(10.0, 1.0).loss(model, x, torch.tensor([1, 2]), None, None)
    _, rec = model.forward_with_reconstruction(x)
    want = F.cross_entropy(logits, torch.tensor([1, 2])) + 10 * ((rec - x) ** 2).mean() + total_variation(rec)
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)


def test_total_variation_divides_by_every_element_of_the_batch():
    img = torch.zeros(2, 2, 2, 3)
    img[0, 0] = torch.tensor([[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]])  # vertical 4 + 1 + 1, horizontal 1 + 4: 11
    img[0, 1] = 1.0  # constant: 0
    img[1, 0, 0, 0] = 1.0  # one corner: 1 + 1
    img[1, 1, 1, 2] = 5.0  # the other corner: 25 + 25
    assert total_variation(img).item() == pytest.approx(63 / 24)  # / (B·C·H·W), not per image or per batch


class _FixedOutputs(torch.nn.Module):
    """Zero logits and a fixed reconstruction, whatever the input."""

    def __init__(self, rec):
        super().__init__()
        self.rec = rec

    def forward_with_reconstruction(self, x):
        return torch.zeros(x.shape[0], 10), self.rec


def test_trap_loss_by_hand():
    x = torch.zeros(1, 3, 2, 2)
    rec = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).expand(1, 3, 2, 2)  # MSE to x: 0.5; TV: 3 x 2 x 1 / 12 = 0.5
    loss, _ = TrapObjective(10.0, 1.0).loss(_FixedOutputs(rec), x, torch.tensor([4]), None, None)
    assert loss.item() == pytest.approx(math.log(10) + 10 * 0.5 + 0.5)  # CE of zero logits over 10 classes: ln 10
    no_rec, _ = TrapObjective(0.0, 0.0).loss(_FixedOutputs(rec), x, torch.tensor([4]), None, None)
    assert no_rec.item() == pytest.approx(math.log(10))


def test_the_reconstruction_target_is_the_augmented_input():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=gen)
    seen = []

    class Recording(TrapObjective):
        """The loss the loop trains on, beside the formula with the augmented input and with the raw images."""

        def loss(self, model, x, y, gen, idx):
            loss, logits = super().loss(model, x, y, gen, idx)
            with torch.no_grad():  # the same parameters, before the step (no dropout in the trap network)
                out, rec = model.forward_with_reconstruction(x)
                rest = F.cross_entropy(out.float(), y) + total_variation(rec.float())
                raw = images[idx].float() / 255
                seen.append((loss.item(), (rest + 10 * F.mse_loss(rec.float(), x)).item(),
                             (rest + 10 * F.mse_loss(rec.float(), raw)).item()))
            return loss, logits

    model = build_model("wrn16", 10, 4, decoder=True)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-3, optimizer="adam", augmentation="crop_flip")
    train_model(model, images, torch.zeros(8, dtype=torch.long), cfg, progress=False,
                     objective=Recording(10.0, 1.0))
    (trained, with_augmented, with_raw), = seen
    assert trained == pytest.approx(with_augmented, rel=1e-5)  # the target is what the model saw (crop + flip)...
    assert abs(trained - with_raw) > 1e-3  # ...not the stored image


def test_label_smoothing_cross_entropy_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    logp = [2 - math.log(math.exp(2) + 2), -math.log(math.exp(2) + 2), -math.log(math.exp(2) + 2)]
    want = 0.9 * -logp[0] + 0.1 * -sum(logp) / 3
    assert label_smoothing_cross_entropy(logits, torch.tensor([0]), 0.1).item() == pytest.approx(want)


def test_cutmix_pastes_one_box_and_corrects_lambda_to_its_area():
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 32, 32).contiguous()
    for seed in range(20):
        mixed, perm, lam = cutmix(x, torch.Generator().manual_seed(seed))
        changed = (mixed != x).any(1)  # (N, H, W): the pasted box, wherever the partner differs
        box = (mixed[0, 0] != x[0, 0]) if perm[0] != 0 else None
        if box is not None and not box.any():
            assert lam.item() == 1.0  # an empty box (side // 2 == 0) mixes nothing
        elif box is not None:
            rows, cols = torch.nonzero(box, as_tuple=True)
            area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
            assert box.sum() == area  # a rectangle
            assert lam.item() == pytest.approx(1 - area.item() / 1024)
            assert torch.equal(mixed[0][:, box], x[perm[0]][:, box])
        assert 0 <= lam.item() <= 1 and changed.shape == (4, 32, 32)


def _tiny(n=240):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    return ImageSet(images, torch.arange(n) % 10, tuple(map(str, range(10))), "cifar10", "torchvision")


def test_stage_two_changes_only_the_head_and_the_holdout_is_clean_and_unseen(tmp_path):
    train = _tiny()
    spec = RunSpec("tiny", None, "wrn16", 4, 10, "grid3_tr", {}, 0, 0,
                   TrainConfig(epochs=1, batch_size=32, optimizer="adam", lr=1e-3, augmentation="none"),
                   Holdout(0.1, "last")).bound_to(train)
    cache = ArtifactCache(tmp_path)
    data = run_data(spec, train, None, cache)
    assert torch.equal(data.clean_holdout.images, train.images[216:]) and len(data.train) == 216
    assert data.train.count == int(0.1 * 240)  # int(rate x N_total), as the official code counts
    cfg = TRConfig().with_(trap={"epochs": 1, "batch_size": 32}, patch={"epochs": 2, "batch_size": 8})
    trapped, record = trap_stage(spec, data, cfg, cache)
    assert record.history and len(record.history) == 1
    patched, _ = patch_stage(spec, data, cfg, cache)
    stem_before, stem_after = trapped.stem.state_dict(), patched.stem.state_dict()
    assert stem_before.keys() == stem_after.keys()
    for name in stem_before:  # weights and BatchNorm running statistics alike
        assert torch.equal(stem_before[name], stem_after[name]), name
    head_before, head_after = trapped.head.state_dict(), patched.head.state_dict()
    assert not torch.equal(head_before["fc.weight"], head_after["fc.weight"])


def test_patch_objective_trains_the_head_with_the_stem_in_eval_mode():
    model = build_model("wrn16", 10, 4)
    objective = PatchObjective(PatchConfig())
    objective.train_mode(model)
    assert not model.stem.training and model.head.training and not model.training
    assert {id(p) for p in objective.parameters(model)} == {id(p) for p in model.head.parameters()}


def test_defense_refuses_a_spec_without_its_network(tmp_path):
    train = _tiny()
    spec = RunSpec("tiny", None, "resnet18", 4, 10, "grid3_tr", {}, 0, 0, TrainConfig(epochs=1),
                   Holdout(0.1, "last")).bound_to(train)
    data = run_data(spec, train, None, ArtifactCache(tmp_path))
    d = get_defense("trap_and_replace")
    with pytest.raises(ValueError, match="WRN-16"):
        d.run(spec, data, d.small_config("smoke"), ArtifactCache(tmp_path))
    with pytest.raises(ValueError, match="stem_end_block"):
        TRConfig(stem_end_block=3)


def test_cutmix_box_equals_the_official_rand_bbox_on_the_same_draws():
    """Replay each draw of :func:`cutmix` through the official ``rand_bbox`` arithmetic (numpy, int casts)."""
    x = torch.rand(8, 3, 32, 32)
    for seed in range(300):
        mixed, perm, lam = cutmix(x, torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(seed)
        lam0, p = float(torch.rand((), generator=g)), torch.randperm(8, generator=g)
        cx, cy = int(torch.randint(0, 32, (), generator=g)), int(torch.randint(0, 32, (), generator=g))
        cut = int(32 * np.sqrt(1.0 - lam0))
        x1, x2 = np.clip(cx - cut // 2, 0, 32), np.clip(cx + cut // 2, 0, 32)
        y1, y2 = np.clip(cy - cut // 2, 0, 32), np.clip(cy + cut // 2, 0, 32)
        want = x.clone()
        want[:, :, x1:x2, y1:y2] = x[p][:, :, x1:x2, y1:y2]
        assert torch.equal(mixed, want) and torch.equal(perm, p), seed
        assert lam.item() == pytest.approx(1 - (x2 - x1) * (y2 - y1) / 1024, abs=1e-6)


def test_per_epoch_cosine_and_drop_last_follow_the_official_loop():
    cfg = TrainConfig(epochs=7, batch_size=16, lr=0.03, optimizer="adam", schedule="cosine_epoch", drop_last=True)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    official = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7)
    from backdoor_repro.train import lr_factor
    for epoch in range(7):
        for step in range(3):
            assert 0.03 * lr_factor(cfg, epoch + step / 3) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        official.step()
    net = build_model("wrn16", 10, 4)
    seen = []
    net.stem[0].register_forward_pre_hook(lambda m, inp: seen.append(inp[0].shape[0]))
    from backdoor_repro.train import train_model
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    train_model(net, images, torch.arange(40) % 10, cfg.with_(epochs=1, augmentation="none"), progress=False)
    assert seen == [16, 16]  # 40 images, batch 16, drop_last: the short batch of 8 is dropped


def test_stage_one_sees_exactly_the_poisoned_split(tmp_path, monkeypatch):
    train = _tiny()
    spec = RunSpec("tiny", None, "wrn16", 4, 10, "grid3_tr", {}, 0, 0,
                   TrainConfig(epochs=1, batch_size=8, optimizer="adam", lr=1e-3, augmentation="none"),
                   Holdout(0.1, "last")).bound_to(train)
    data = run_data(spec, train, None, ArtifactCache(tmp_path))
    from backdoor_repro.defenses import trap_and_replace as tr
    calls, real = [], tr.train_model
    monkeypatch.setattr(tr, "train_model",
                        lambda model, images, labels, *a, **k: calls.append(images) or real(model, images, labels, *a, **k))
    trap_stage(spec, data, TRConfig().with_(trap={"epochs": 1, "batch_size": 8, "augmentation": "none"}),
               ArtifactCache(tmp_path))
    assert calls[0] is data.train.images and len(calls[0]) == 216  # the 24 holdout images never reach stage 1


def test_last_holdout_on_class_ordered_torchvision_sets_shuffles_first():
    from backdoor_repro.holdout import split_holdout
    labels = torch.arange(430) // 10  # GTSRB-like: torchvision's files, stored class by class
    gtsrb = ImageSet(torch.zeros(430, 3, 32, 32, dtype=torch.uint8), labels, tuple(map(str, range(43))), "gtsrb",
                     "torchvision")
    with pytest.warns(UserWarning, match="shuffled"):
        _, held = split_holdout(gtsrb, Holdout(0.05, "last"), 0)
    assert len(set(held.labels.tolist())) > 5  # not the last two classes


def test_relative_centroid_distance_by_hand():
    from backdoor_repro.embedding import relative_centroid_distance
    toward = np.array([[0.0, 0.0], [2.0, 0.0]])  # centroid (1, 0)
    away = np.array([[10.0, 0.0], [10.0, 2.0]])  # centroid (10, 1)
    points = np.array([[1.0, 3.0], [1.0, -3.0]])  # 3 from (1, 0); sqrt(81 + 4) and sqrt(81 + 16) from (10, 1)
    want = 3.0 / ((np.sqrt(85) + np.sqrt(97)) / 2)
    assert relative_centroid_distance(points, toward, away) == pytest.approx(want)
    assert relative_centroid_distance(points, away, toward) == pytest.approx(1 / want)

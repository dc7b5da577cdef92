"""Input-aware as BackdoorBench trains it (``inputaware_bb``): one batch's composition, one step of each stage
against the official formulas written out here on tiny fixed networks, the generator-gradient quirk, the stored test
image against torchvision's transforms, and a tiny run end to end (No-Defense, ASR from the trained generators, the
cache, FT on top). Resuming and the stage's key: test_inputaware_stage.py."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from backdoor_repro.attack_inputaware import JointRun, MaskObjective, mask_config
from backdoor_repro.attacks import get_attack
from backdoor_repro.attacks.inputaware import PatternGenerator
from backdoor_repro.attacks.inputaware_loop import GeneratorTrigger, InputAwareLoop, Normaliser, joint_loss
from backdoor_repro.attacks.wanet_inloop import batch_counts
from backdoor_repro.cache import ArtifactCache
from backdoor_repro.defenses import DEFENSES
from backdoor_repro.evaluation import evaluate, evaluated_attack
from backdoor_repro.pipeline import no_defense_model, run_data
from backdoor_repro.spec import Holdout, RunSpec
from backdoor_repro.train import TrainConfig, train_model

pytestmark = pytest.mark.timeout(120)
BB_MEAN, BB_STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
MEAN, STD = torch.tensor(BB_MEAN).view(1, 3, 1, 1), torch.tensor(BB_STD).view(1, 3, 1, 1)
SMALL = {"generator_base": 4, "generator_steps": 2, "augmentation": "none"}  # 8 x 8 images, no augmentation


def thr(m):
    return torch.tanh(m * 20 - 10) / (2 + 1e-7) + 0.5


def rms(a, b):
    return torch.sqrt(torch.mean((a - b) ** 2, dim=(1, 2, 3)))


class TinyClassifier(torch.nn.Module):
    """Normalises its pixel input (as the package's models do), then one linear layer."""

    def __init__(self, size=8, classes=10):
        super().__init__()
        self.linear = torch.nn.Linear(3 * size * size, classes)

    def forward(self, x):
        return self.linear(((x - MEAN) / STD).flatten(1))


def tiny_nets(seed=0):
    torch.manual_seed(seed)
    return torch.nn.ModuleDict({"C": TinyClassifier(), "G": PatternGenerator(3, None, 4, 2),
                                "M": PatternGenerator(3, 1, 4, 2)})


def tiny_images(n=8, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=gen), torch.arange(n) % 10


def test_batch_counts_and_composition():
    assert batch_counts(128, 0.1, 1.0) == (12, 12) and batch_counts(80, 0.1, 1.0) == (8, 8)  # num_cross = num_bd
    nets, seen = tiny_nets(), {}
    nets.eval()

    def classifier(x):
        seen["x"] = x
        return nets["C"](x)

    gen = torch.Generator().manual_seed(0)
    x1, x2 = torch.rand(10, 3, 8, 8, generator=gen), torch.rand(10, 3, 8, 8, generator=gen)
    y1 = torch.arange(10) % 10
    loop, norm = InputAwareLoop(**SMALL), Normaliser(InputAwareLoop(), "cpu")
    _, _, targets = joint_loss(classifier, nets["G"], nets["M"], x1, x2, y1, 3, lambda y: torch.zeros_like(y),
                               loop, norm)
    assert torch.equal(targets, torch.cat([torch.zeros(3, dtype=torch.long), y1[3:]]))
    xn1, xn2 = (x1 - MEAN) / STD, (x2 - MEAN) / STD
    with torch.no_grad():
        own = xn1[:3] + ((nets["G"](xn1[:3]) - MEAN) / STD - xn1[:3]) * thr(nets["M"](xn1[:3]))
        other = xn1[3:6] + ((nets["G"](xn2[3:6]) - MEAN) / STD - xn1[3:6]) * thr(nets["M"](xn2[3:6]))
    assert torch.allclose(seen["x"][:3], own * STD + MEAN, atol=1e-6)  # backdoor: its own pattern and mask
    assert torch.allclose(seen["x"][3:6], other * STD + MEAN, atol=1e-6)  # cross: x2's pattern and mask
    assert torch.equal(seen["x"][6:], x1[6:])  # clean
    assert not torch.allclose(seen["x"][3:6], x1[3:6])


def test_every_batch_of_an_epoch_has_its_counts(monkeypatch):
    import backdoor_repro.attack_inputaware as trainer
    images, labels = tiny_images(20)
    attack = get_attack("inputaware_bb", rate=0.25, **SMALL)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.01, schedule="multistep", augmentation="none")
    seen, real = [], trainer.joint_loss

    def recording(net_c, net_g, net_m, x1, x2, y1, num_bd, *rest):
        seen.append((x1.shape[0], x2.shape[0], num_bd))
        return real(net_c, net_g, net_m, x1, x2, y1, num_bd, *rest)

    monkeypatch.setattr(trainer, "joint_loss", recording)
    JointRun(tiny_nets(), images, labels, cfg, attack, 10, "none").epoch(0)
    assert seen == [(8, 8, 2), (8, 8, 2), (4, 4, 1)]  # int(bs x 0.25) backdoor, as many cross, the rest clean


def official_joint_step(nets, opt_c, opt_g, x1, x2, y1, num_bd, target, zero_g=False):
    """attack/inputaware.py's train step written out (inputs normalised; the classifier reads pixels)."""
    opt_c.zero_grad()
    if zero_g:
        opt_g.zero_grad()
    xn1, xn2 = (x1 - MEAN) / STD, (x2 - MEAN) / STD
    p1 = (nets["G"](xn1[:num_bd]) - MEAN) / STD
    bd = xn1[:num_bd] + (p1 - xn1[:num_bd]) * thr(nets["M"](xn1[:num_bd]))
    p2 = (nets["G"](xn2[num_bd:2 * num_bd]) - MEAN) / STD
    cross = xn1[num_bd:2 * num_bd] + (p2 - xn1[num_bd:2 * num_bd]) * thr(nets["M"](xn2[num_bd:2 * num_bd]))
    total = torch.cat([torch.cat([bd, cross]) * STD + MEAN, x1[2 * num_bd:]])
    targets = torch.cat([torch.full((num_bd,), target), y1[num_bd:]])
    loss_ce = F.cross_entropy(nets["C"](total), targets)
    loss_div = torch.mean(rms(xn1[:num_bd], xn2[num_bd:2 * num_bd]) / (rms(p1, p2) + 1e-7)) * 1.0
    (loss_ce + loss_div).backward()
    opt_c.step()
    opt_g.step()


def run_joint_steps(accumulate, steps):
    images, labels = tiny_images()
    attack = get_attack("inputaware_bb", rate=0.25, accumulate_generator_grads=accumulate, **SMALL)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.01, schedule="multistep", augmentation="none")
    nets = tiny_nets()
    nets["M"].eval().requires_grad_(False)
    reference = copy.deepcopy(nets)
    run = JointRun(nets, images, labels, cfg, attack, 10, "none")
    opt_c = torch.optim.SGD(reference["C"].parameters(), 0.01, momentum=0.9, weight_decay=5e-4)
    opt_g = torch.optim.Adam(reference["G"].parameters(), 0.01, betas=(0.5, 0.9))
    reference["C"].train(), reference["G"].train()
    for step in range(steps):
        i1, i2 = torch.roll(torch.arange(8), step), torch.roll(torch.arange(8).flip(0), step)
        run.step(i1, i2, 0.01, 0.01)
        x1, x2 = images[i1].float() / 255, images[i2].float() / 255
        official_joint_step(reference, opt_c, opt_g, x1, x2, labels[i1], 2, 0, zero_g=not accumulate)
    return nets, reference


def same(a, b, atol=1e-6):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k].float(), sb[k].float(), atol=atol) for k in sa)


@pytest.mark.parametrize("accumulate", [True, False])
def test_joint_steps_are_the_official_formula(accumulate):
    nets, reference = run_joint_steps(accumulate, steps=2)
    assert same(nets, reference)  # C (SGD), G (Adam, betas 0.5/0.9) and every BatchNorm statistic
    for ours, theirs in zip(nets["G"].parameters(), reference["G"].parameters()):
        assert torch.allclose(ours.grad, theirs.grad, atol=1e-6)


def test_generator_gradients_accumulate_by_default_and_that_changes_training():
    kept, _ = run_joint_steps(True, steps=2)
    zeroed, _ = run_joint_steps(False, steps=2)
    assert same(kept["C"], zeroed["C"])  # the generator is the same at both forwards: C's steps are too...
    assert not same(kept["G"], zeroed["G"], atol=1e-5)  # ...but G's second step adds the first batch's gradient
    one, _ = run_joint_steps(True, steps=1)
    assert same(one["G"], run_joint_steps(False, steps=1)[0]["G"])  # one step: nothing to accumulate yet
    assert get_attack("inputaware_bb").training.accumulate_generator_grads  # the default reproduces the quirk


@pytest.mark.parametrize("double", [True, False])
def test_one_mask_step_is_the_official_formula(double):
    images, labels = tiny_images()
    loop = InputAwareLoop(**SMALL, double_mask_forward=double, mask_epochs=1)
    # seed 0: the two shuffles pair no image with itself (both batches hold the same 8 images, hence the same
    # BatchNorm statistics: such a pair's masks would be equal, and the square root of their zero distance has a NaN
    # gradient, officially too)
    cfg = mask_config(loop, TrainConfig(epochs=1, batch_size=8, seed=0), "none")
    torch.manual_seed(0)
    net = PatternGenerator(3, 1, 4, 2)
    reference = copy.deepcopy(net)
    train_model(net, images, labels, cfg, progress=False, objective=MaskObjective(loop, images, cfg))
    gen = torch.Generator().manual_seed(0)  # the loop's shuffle, then the second loader's
    first, second = torch.randperm(8, generator=gen), torch.randperm(8, generator=gen)
    assert not (first == second).any()
    xn1, xn2 = (images[first].float() / 255 - MEAN) / STD, (images[second].float() / 255 - MEAN) / STD
    opt = torch.optim.Adam(reference.parameters(), 0.01, betas=(0.5, 0.9))
    reference.train()
    opt.zero_grad()
    if double:
        reference(xn1)  # official: masks1 = netM(inputs1), overwritten on the next line
    m1, m2 = thr(reference(xn1)), thr(reference(xn2))
    loss_div = torch.mean(rms(xn1, xn2) / (rms(m1, m2) + 1e-7)) * 1.0
    (100 * torch.mean(F.relu(m1 - 0.032)) + 1.0 * loss_div).backward()
    opt.step()
    assert same(net, reference) and all(torch.isfinite(p).all() for p in net.parameters())
    bn = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    assert int(bn.num_batches_tracked) == (3 if double else 2)  # the statistics move once more with the quirk


def official_stored_image(image_u8, net_g, net_m):
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize(BB_MEAN, BB_STD)])
    inverse = transforms.Compose([transforms.Normalize([0.0, 0.0, 0.0], [1 / s for s in BB_STD]),
                                  transforms.Normalize([-m for m in BB_MEAN], [1.0, 1.0, 1.0])])
    x = to_tensor(Image.fromarray(image_u8.permute(1, 2, 0).numpy()))[None]
    with torch.no_grad():
        p = transforms.Normalize(BB_MEAN, BB_STD)(net_g(x))
        bd = x + (p - x) * thr(net_m(x))
    return torch.from_numpy(np.array(transforms.ToPILImage()(inverse(bd)[0]))).permute(2, 0, 1)


def test_test_trigger_is_backdoorbench_stored_image_pixel_for_pixel():
    nets = tiny_nets()
    nets.eval()
    images, _ = tiny_images(6)
    ours = GeneratorTrigger(nets["G"], nets["M"], InputAwareLoop(**SMALL), batch_size=4).apply(images, train=False)
    official = torch.stack([official_stored_image(im, nets["G"], nets["M"]) for im in images])
    assert ours.dtype == torch.uint8 and (ours.int() - official.int()).abs().max() <= 1
    assert (ours == official).float().mean() > 0.99
    with pytest.raises(ValueError, match="learned by its training loop"):
        get_attack("inputaware_bb").trigger.apply(images)


def tiny_spec(tiny, **overrides):
    schedule = TrainConfig(epochs=1, batch_size=50, lr=0.05, schedule="cosine", augmentation="crop_flip")
    return RunSpec("cifar10-smoke", 20, "preact_resnet18", 4, 10, "inputaware_bb",
                   {"mask_epochs": 1, "generator_base": 8, **overrides}, 0, 0, schedule, Holdout(0.1, "clean_subset"),
                   normalization="backdoorbench").bound_to(tiny[0])


@pytest.mark.timeout(300)
def test_a_tiny_run_end_to_end(tiny, tmp_path):
    spec, cache = tiny_spec(tiny), ArtifactCache(tmp_path)
    data = run_data(spec, *tiny, cache)
    with pytest.raises(ValueError, match="not in the cache"):
        evaluated_attack(spec, cache)
    model, record = no_defense_model(spec, None, cache, False, data=data)
    assert record.stage == "attack_training" and len(record.history) == 1
    assert len(record.extras["mask_history"]) == 1 and np.isfinite(record.history[0]["train_loss"])
    attack = evaluated_attack(spec, cache)
    assert isinstance(attack.trigger, GeneratorTrigger) and attack.target == 0
    triggered, _, _ = attack.test_population(tiny[1])
    assert triggered.dtype == torch.uint8 and not torch.equal(triggered, tiny[1].images[tiny[1].labels != 0])
    scores = evaluate(model, spec, tiny[1], cache)
    assert set(scores) >= {"ACC", "ASR", "RA", "CTR"} and 0 <= scores["ASR"] <= 100
    again, record2 = no_defense_model(spec, None, cache, False, data=data)  # from the cache
    assert same(model, again, atol=0) and record2.key == record.key
    reloaded = evaluated_attack(spec, cache).trigger
    assert torch.equal(reloaded.apply(tiny[1].images), attack.trigger.apply(tiny[1].images))
    assert not [p.name for p in tmp_path.rglob("*mask*")]  # the mask stage's files are gone
    ft = DEFENSES["ft"]
    result = ft.run(spec, data, ft.small_config("smoke"), cache)
    assert result.stages["no_defense"].key == record.key
    assert set(evaluate(result.model, spec, tiny[1], cache)) >= {"ACC", "ASR"}

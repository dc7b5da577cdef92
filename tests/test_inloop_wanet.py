"""WaNet as BackdoorBench trains it (``wanet_bb_inloop``): the grids against the official formulas written out here,
the per-batch composition, the stored-test-image arithmetic against torchvision's transforms, the post-tensor
transform, the stage graph, the refusals, and a couple of CPU steps end to end."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from backdoor_repro.attacks import get_attack
from backdoor_repro.attacks.post_tensor import PostTensorConfig, batch_crop, batch_rotate, post_tensor_transform
from backdoor_repro.attacks.wanet import warp_grid
from backdoor_repro.attacks.wanet_inloop import batch_counts, compose_batch, noisy_grids, warp_float
from backdoor_repro.cache import ArtifactCache
from backdoor_repro.defenses import DEFENSES
from backdoor_repro.evaluation import evaluate
from backdoor_repro.pipeline import no_defense_model, run_data
from backdoor_repro.spec import Holdout, RunSpec
from backdoor_repro.train import TrainConfig

BB_MEAN, BB_STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
TINY = TrainConfig(epochs=1, batch_size=50, lr=0.05, schedule="cosine", augmentation="crop_flip")


def official_grid(ins, k_size, s, rescale):
    """attack/wanet.py's warp field from its (1, 2, k, k) draw ``ins``, written out."""
    ins = ins / torch.mean(torch.abs(ins))
    noise_grid = F.interpolate(ins, size=k_size, mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    array1d = torch.linspace(-1, 1, steps=k_size)
    x, y = torch.meshgrid(array1d, array1d, indexing="ij")
    identity_grid = torch.stack((y, x), 2)[None, ...]
    return torch.clamp((identity_grid + s * noise_grid / k_size) * rescale, -1, 1)


@pytest.mark.parametrize("k,s,rescale,size", [(4, 0.5, 1.0, 32), (8, 1.0, 0.98, 32), (4, 0.5, 1.0, 64)])
def test_warp_grid_is_the_official_formula_bit_for_bit(k, s, rescale, size):
    ins = torch.rand(1, 2, k, k, generator=torch.Generator().manual_seed(3)) * 2 - 1
    assert torch.equal(warp_grid(k, s, rescale, size, 3), official_grid(ins, size, s, rescale)[0])


def test_noise_grids_are_the_official_cross_formula():
    grid = warp_grid(4, 0.5, 1.0, 32, 0)
    ins = torch.rand(5, 32, 32, 2, generator=torch.Generator().manual_seed(9)) * 2 - 1
    official = torch.clamp(grid.repeat(5, 1, 1, 1) + ins / 32, -1, 1)
    assert torch.equal(noisy_grids(grid, 5, torch.Generator().manual_seed(9)), official)


def test_batch_counts_follow_int_of_bs_times_rate():
    assert batch_counts(128, 0.1, 2.0) == (12, 24)  # int(12.8), int(12 x 2)
    assert batch_counts(80, 0.1, 2.0) == (8, 16)  # the last batch of 50,000 at 128
    assert batch_counts(50, 0.1, 1.5) == (5, 7)
    gen = torch.Generator().manual_seed(0)
    draws = [batch_counts(128, 0.005, 2.0, gen) for _ in range(2000)]  # 0.64 expected per batch
    assert set(draws) == {(0, 0), (1, 2)}
    assert abs(np.mean([d[0] for d in draws]) - 0.64) < 0.04
    with pytest.raises(ValueError, match="needs a generator"):
        batch_counts(128, 0.005, 2.0)


def test_compose_batch_poisons_the_first_then_cross_then_clean():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(16, 3, 32, 32, generator=gen), torch.arange(16) % 10
    grid = warp_grid(4, 0.5, 1.0, 32, 0)
    inputs, targets = compose_batch(x, y, grid, (3, 6), lambda t: torch.zeros_like(t), gen)
    assert inputs.shape == x.shape and torch.equal(targets[:3], torch.zeros(3, dtype=torch.long))
    assert torch.equal(targets[3:], y[3:])  # cross and clean samples keep their labels
    assert torch.equal(inputs[:3], warp_float(x[:3], grid)) and torch.equal(inputs[9:], x[9:])
    assert not torch.allclose(inputs[3:9], warp_float(x[3:9], grid))  # the noise grids, one per image
    # warping the pixels equals BackdoorBench's warp of the normalised tensor (bilinear weights sum to 1)
    mean, std = torch.tensor(BB_MEAN).view(1, 3, 1, 1), torch.tensor(BB_STD).view(1, 3, 1, 1)
    normalised = warp_float((x[:3] - mean) / std, grid) * std + mean
    assert torch.allclose(inputs[:3], normalised, atol=1e-5)


def backdoorbench_test_image(image_u8, grid):
    """The stored backdoor test image: PIL -> ToTensor -> Normalize -> grid_sample -> the inverse Normalize of
    get_dataset_denormalization -> ToPILImage (float * 255, truncated)."""
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize(BB_MEAN, BB_STD)])
    inverse = transforms.Compose([transforms.Normalize([0.0, 0.0, 0.0], [1 / s for s in BB_STD]),
                                  transforms.Normalize([-m for m in BB_MEAN], [1.0, 1.0, 1.0])])
    x = to_tensor(Image.fromarray(image_u8.permute(1, 2, 0).numpy()))[None]
    warped = inverse(F.grid_sample(x, grid[None], align_corners=True))[0]
    return torch.from_numpy(np.array(transforms.ToPILImage()(warped))).permute(2, 0, 1)


def test_test_trigger_is_backdoorbench_stored_image_pixel_for_pixel(smoke_test):
    attack = get_attack("wanet_bb_inloop", data_seed=2)
    images = smoke_test.images[:40]
    ours = attack.trigger.apply(images, train=False)
    grid = warp_grid(4, 0.5, 1.0, 32, 2)
    official = torch.stack([backdoorbench_test_image(im, grid) for im in images])
    assert torch.equal(ours, official)
    assert (ours.int() - get_attack("wanet_bb", data_seed=2).trigger.apply(images).int()).abs().max() <= 1


@pytest.mark.parametrize("angle", [7.3, -9.99, 3.0, 10.0, -0.4])
def test_batch_rotate_is_torchvision_rotate_with_the_mean_as_fill(angle):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ref = TF.rotate(x, angle, interpolation=InterpolationMode.NEAREST, fill=list(BB_MEAN))
    assert torch.equal(batch_rotate(x, torch.tensor(angle), BB_MEAN), ref)


def test_batch_crop_is_torchvision_pad_and_crop_one_offset_per_batch():
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ref = TF.crop(TF.pad(x, [5], fill=0), 2, 9, 32, 32)
    assert torch.equal(batch_crop(x, 5, torch.tensor([2, 9]), (0.0, 0.0, 0.0)), ref)
    filled = batch_crop(x, 5, torch.tensor([0, 0]), BB_MEAN)
    assert torch.equal(filled[:, :, :5, :], torch.tensor(BB_MEAN).view(1, 3, 1, 1).expand(4, 3, 5, 32))


def test_post_tensor_transform_draws_once_per_batch():
    same = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)).expand(6, 3, 32, 32).contiguous()
    gen = torch.Generator().manual_seed(4)
    changed = 0
    for _ in range(20):
        out = post_tensor_transform(same, PostTensorConfig(), True, BB_MEAN, gen)
        assert all(torch.equal(out[0], out[i]) for i in range(1, 6))  # one crop, angle and flip for the batch
        changed += not torch.equal(out, same)
    assert changed > 10
    off = PostTensorConfig(crop_p=0, rotation_p=0, flip_p=0)
    assert torch.equal(post_tensor_transform(same, off, True, BB_MEAN, gen), same)
    with pytest.raises(ValueError, match="probability"):
        PostTensorConfig(crop_p=1.5)


def inloop_spec(tiny, **overrides):
    return RunSpec("cifar10-smoke", 20, "preact_resnet18", 4, 10, "wanet_bb_inloop", overrides, 0, 0, TINY,
                   Holdout(0.1, "clean_subset"), normalization="backdoorbench").bound_to(tiny[0])


def test_the_stage_is_keyed_by_the_loop_and_the_schedule(tiny):
    spec = inloop_spec(tiny)
    stage = spec.no_defense_stage()
    assert stage.name == "attack_training" and spec.data_stage() in stage.parents
    schedule = spec.attacker_schedule()
    assert schedule.schedule == "multistep" and schedule.milestones == (100, 200, 300, 400)
    assert schedule.augmentation == "none" and schedule.lr == TINY.lr and schedule.epochs == TINY.epochs
    assert inloop_spec(tiny, milestones=None).attacker_schedule() == TINY.with_(augmentation="none")
    keys = {stage.key}
    for overrides in ({"cross_ratio": 1.0}, {"k": 8}, {"rotation": 0.0}, {"milestones": None}, {"rate": 0.2}):
        keys.add(inloop_spec(tiny, **overrides).no_defense_stage().key)
    keys.add(spec.with_(no_defense_schedule=TINY.with_(lr=0.01)).no_defense_stage().key)
    assert len(keys) == 7
    assert inloop_spec(tiny, k=4).no_defense_stage().key == stage.key  # defaults are dropped
    plain = spec.with_attack("wanet_bb")
    assert not plain.training_controlled and plain.no_defense_stage().name == "no_defense"


def test_bad_input_and_fixed_poisoning_are_refused(tiny):
    with pytest.raises(ValueError, match="more than a whole batch"):
        get_attack("wanet_bb_inloop", rate=0.4)
    with pytest.raises(ValueError, match="k must be"):
        get_attack("wanet_bb_inloop", k=1)
    attack = get_attack("wanet_bb_inloop")
    with pytest.raises(ValueError, match="inside its own training loop"):
        attack.poison(tiny[0], 0)
    with pytest.raises(ValueError, match="inside its own training loop"):
        attack.poison_indices(tiny[0], 0)


@pytest.mark.parametrize("key", ["dbd", "fct_dst", "fct_dbr", "trap_and_replace"])
def test_dataset_level_defenses_refuse_before_compute(tiny, tmp_path, key):
    spec = inloop_spec(tiny)
    data = run_data(spec, *tiny, ArtifactCache(tmp_path))
    assert data.train.count == 0 and "training loop" in data.train.index_stream
    with pytest.raises(ValueError, match="poisons inside its own training loop"):
        DEFENSES[key].check(spec, data)
    assert not any(tmp_path.rglob("*.pt"))  # nothing was trained


def test_a_couple_of_steps_give_a_no_defense_model_an_asr_and_a_post_training_defense(tiny, tmp_path):
    spec = inloop_spec(tiny)
    cache = ArtifactCache(tmp_path)
    data = run_data(spec, *tiny, cache)
    model, record = no_defense_model(spec, None, cache, False, data=data)
    assert record.stage == "attack_training" and record.key == spec.no_defense_stage().key
    assert len(record.history) == 1 and np.isfinite(record.history[0]["train_loss"])
    scores = evaluate(model, spec, tiny[1])
    assert 0 <= scores["ASR"] <= 100 and set(scores) >= {"ACC", "ASR", "RA", "CTR"}
    again, _ = no_defense_model(spec, None, cache, False, data=data)  # from the cache
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    result = DEFENSES["ft"].run(spec, data, DEFENSES["ft"].small_config("smoke"), cache)
    assert result.stages["no_defense"].key == record.key

"""Cached pipeline stages on tiny settings: label-consistent poisoning (clean model -> PGD images,
cached and reused) and No-Defense models keyed by their spec."""
import torch

from backdoor_repro.cache import ArtifactCache
from backdoor_repro.data import class_balanced_subset
from backdoor_repro.pipeline import ModelSpec, poisoned_training_set, supervised_model
from backdoor_repro.train import TrainConfig

TINY_TRAIN = TrainConfig(epochs=1, batch_size=50, lr=0.05, augmentation="none")


def test_label_consistent_poisoning_through_the_pipeline(smoke_train, tmp_path):
    train = class_balanced_subset(smoke_train, 20)  # 200 images, 20 of the target class (3)
    spec = ModelSpec("cifar10-smoke", 20, "resnet18", 2, 10, "lc_dbd", {"steps": 3}, 0, TINY_TRAIN)
    cache = ArtifactCache(tmp_path)
    poisoned = poisoned_training_set(spec, train, cache, progress=False)
    idx = torch.nonzero(poisoned.poison_mask).flatten()
    assert len(idx) == 5 and (train.labels[idx] == 3).all()  # 25 % of the target class, labels kept
    assert torch.equal(poisoned.labels, train.labels)
    diff = poisoned.images[idx].int() - train.images[idx].int()
    body = diff[:, :, :29, :29]  # away from the trigger: the PGD perturbation, at most 16/255 (+ rounding)
    assert body.abs().max() <= 17 and body.abs().float().mean() > 1
    assert poisoned.images[idx][:, 0, 29:32, 31].tolist() == [[255, 0, 255]] * 5  # grid3 stamped after PGD
    assert len(list((tmp_path / "lc_images").glob("*.pt"))) == 1
    assert len(list((tmp_path / "supervised").glob("*.pt"))) == 1  # the clean model behind the PGD step
    again = poisoned_training_set(spec, train, cache, progress=False)
    assert torch.equal(again.images, poisoned.images)


def test_supervised_models_are_keyed_by_their_spec(smoke_train, smoke_test, tmp_path):
    train = class_balanced_subset(smoke_train, 10)
    cache = ArtifactCache(tmp_path)
    spec = ModelSpec("cifar10-smoke", 10, "resnet18", 2, 10, "grid3", {"rate": 0.2}, 0, TINY_TRAIN)
    _, record = supervised_model(spec, train, smoke_test, cache, progress=False)
    assert record["poison_count"] == 18 and {"ACC", "ASR", "RA", "CTR"} <= set(record["metrics"])
    supervised_model(spec, train, smoke_test, cache, progress=False)
    assert len(list((tmp_path / "supervised").glob("*.pt"))) == 1  # reused
    other = ModelSpec("cifar10-smoke", 10, "resnet18", 2, 10, "grid3", {"rate": 0.2}, 1, TINY_TRAIN)
    supervised_model(other, train, None, cache, progress=False)  # another data_seed: another artifact
    assert len(list((tmp_path / "supervised").glob("*.pt"))) == 2


def test_specs_separate_data_sources_devices_and_keep_lc_poison_independent_of_seed(smoke_train):
    from backdoor_repro import get_profile

    profile = get_profile("smoke")
    a = ModelSpec.for_profile(profile, smoke_train, "lc_dbd", data_seed=0, seed=0)
    b = ModelSpec.for_profile(profile, smoke_train, "lc_dbd", data_seed=0, seed=1)
    other_pixels = smoke_train.subset(torch.arange(len(smoke_train)))
    other_pixels.images[0] ^= 1
    assert ModelSpec.for_profile(profile, other_pixels, "lc_dbd", 0, 0).data_fingerprint != a.data_fingerprint
    assert a.device_type == "cpu"
    assert a.clean_model_for_poisoning() == b.clean_model_for_poisoning()  # training seed does not matter
    assert a.clean_model_for_poisoning().train.seed == 0 and a.clean_model_for_poisoning().attack is None

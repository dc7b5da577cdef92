"""Every registered defense runs on 100 classes, from torchvision's CIFAR-100 files (a fixture the test writes),
with the networks its protocol sets on CIFAR-100 (FCT: the no-max-pool ResNet-18): nothing in the library may
assume 10 classes. This covers FCT's four CIFAR-100 attacks' code path and FCT-T2's DBD there, at width 4."""
import warnings

import pytest
import torch

from backdoor_repro.cache import ArtifactCache
from backdoor_repro.data import load_dataset
from backdoor_repro.defenses import DEFENSES, get_defense
from backdoor_repro.pipeline import run_data
from backdoor_repro.spec import RunSpec
from backdoor_repro.train import TrainConfig
from test_data_fixtures import write_cifar_pickles

CLASSES = 100


@pytest.fixture(scope="module")
def cifar100(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar100")
    write_cifar_pickles(root, "cifar100", per_file=600)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixture's files differ from the official release's md5, as they must
        return load_dataset("cifar100", "train", root), load_dataset("cifar100", "test", root)


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(DEFENSES))
def test_each_defense_runs_on_100_classes(key, cifar100, tmp_path):
    train, test = cifar100
    assert train.num_classes == CLASSES
    d = get_defense(key)
    changes = d.spec_changes_for("smoke", "cifar100")
    spec = RunSpec("cifar100", None, changes.get("model", "resnet18"), 4, CLASSES, "grid3", {"rate": 0.2}, 0, 0,
                   TrainConfig(epochs=1, batch_size=50, lr=0.05, schedule="cosine", augmentation="none"),
                   d.holdout_for("smoke", "cifar100"),
                   normalization=changes.get("normalization", "dbd")).bound_to(train)
    cache = ArtifactCache(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # holdout-rule fallbacks on a small random fixture
        data = run_data(spec, train, test, cache)
    result = d.run(spec, data, d.small_config("smoke", "cifar100"), cache)
    with torch.no_grad():
        logits = result.model(test.images[:4].float() / 255)
    assert logits.shape == (4, CLASSES) and torch.isfinite(logits).all()
    if key == "fct_dst":  # the CIFAR-100 encoder: no max-pool (a 4x4 last stage at 32 px)
        assert result.model.backbone.maxpool is None

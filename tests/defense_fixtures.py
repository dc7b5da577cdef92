"""What every defense's tests share: a tiny spec of the defense's own protocol (width-4 network) on a tiny real
subset, its run data, and its small-run config with more epochs. The ``tiny`` fixture is in conftest.py."""
import dataclasses
import warnings

from backdoor_repro.pipeline import run_data
from backdoor_repro.spec import RunSpec
from backdoor_repro.train import TrainConfig

TINY_NO_DEFENSE = TrainConfig(epochs=1, batch_size=50, lr=0.05, schedule="cosine", augmentation="none")


def tiny_spec(defense, tiny, attack="grid3") -> RunSpec:
    """A width-4 network of the architecture the defense's protocol sets (ResNet-18 unless it says otherwise)."""
    model = defense.spec_changes.get("smoke", {}).get("model", "resnet18")
    return RunSpec("cifar10-smoke", 20, model, 4, 10, attack, {"rate": 0.2}, 0, 0, TINY_NO_DEFENSE,
                   defense.holdout_for("smoke")).bound_to(tiny[0])


def tiny_data(spec, tiny, cache):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # holdout rule fallbacks on the class-ordered smoke data
        return run_data(spec, *tiny, cache)


def with_epochs(cfg, epochs: int):
    """``cfg`` with every ``epochs`` field, at any depth, set to ``epochs``: each stage that counts epochs runs that
    many (a stage that counts iterations keeps its small-run count)."""
    changes = {}
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if dataclasses.is_dataclass(value):
            changes[field.name] = with_epochs(value, epochs)
        elif field.name == "epochs":
            changes[field.name] = epochs
    return dataclasses.replace(cfg, **changes)

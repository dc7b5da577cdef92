"""Input-aware's stage (``inputaware_bb``): an interrupted joint stage resumes to the weights of an uninterrupted one;
the attack_training stage is keyed by the loop's config; other attacks evaluate with the registry's trigger."""
import pytest
import torch

from backdoor_repro.attack_inputaware import JointRun, train_joint
from backdoor_repro.attacks import get_attack
from backdoor_repro.evaluation import evaluated_attack
from backdoor_repro.train import TrainConfig
from test_inputaware_loop import SMALL, same, tiny_images, tiny_nets, tiny_spec

pytestmark = pytest.mark.timeout(120)


def test_an_interrupted_joint_stage_resumes_to_the_same_weights(tmp_path, monkeypatch):
    images, labels = tiny_images(16)
    attack = get_attack("inputaware_bb", rate=0.25, **SMALL)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.01, schedule="multistep", augmentation="none", checkpoint_every=1)
    straight = tiny_nets()
    train_joint(straight, images, labels, cfg, attack, 10, "none")
    resumed, calls = tiny_nets(), []
    real_epoch = JointRun.epoch

    def dies_at_the_second(self, epoch):
        calls.append(epoch)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(self, epoch)

    monkeypatch.setattr(JointRun, "epoch", dies_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        train_joint(resumed, images, labels, cfg, attack, 10, "none", checkpoint=tmp_path / "joint.pt")
    monkeypatch.setattr(JointRun, "epoch", real_epoch)
    fresh = tiny_nets(seed=5)  # other weights: everything must come from the checkpoint
    result = train_joint(fresh, images, labels, cfg, attack, 10, "none", checkpoint=tmp_path / "joint.pt")
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert same(fresh, straight, atol=0)


def test_the_stage_is_keyed_by_the_loop_and_other_attacks_evaluate_as_before(tiny):
    spec = tiny_spec(tiny)
    stage = spec.no_defense_stage()
    assert stage.name == "attack_training"
    schedule = spec.attacker_schedule()
    assert (schedule.lr, schedule.milestones, schedule.augmentation) == (0.01, (100, 200, 300, 400), "none")
    keys = {stage.key} | {tiny_spec(tiny, **o).no_defense_stage().key for o in (
        {"accumulate_generator_grads": False}, {"double_mask_forward": False}, {"mask_epochs": 2}, {"lambda_div": 2.0})}
    assert len(keys) == 5
    plain = spec.with_attack("wanet_bb")
    ours, registry = evaluated_attack(plain), plain.make_attack()  # no cache needed: the registry's attack itself
    assert repr(ours) == repr(registry)
    assert torch.equal(ours.trigger.apply(tiny[1].images), registry.trigger.apply(tiny[1].images))
    with pytest.raises(ValueError, match="pass the cache"):
        evaluated_attack(spec)

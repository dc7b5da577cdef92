"""Every long stage resumes mid-stage: stopped right after a checkpoint (as a kill after that checkpoint, or the
deadline of a ``--max-minutes`` slice, leaves it) and rerun, it ends with the weights and history of an
uninterrupted run. One case per stage kind: the supervised loop, DBD's SimCLR, DBD's MixMatch."""
import time

import pytest
import torch

from backdoor_repro.defenses import dbd_stages
from backdoor_repro.defenses.dbd_stages import (FinetuneConfig, HeadConfig, SelfSupervised, SimCLRConfig, finetune,
                                                train_head, train_simclr)
from backdoor_repro.models import build_model
from backdoor_repro.deadline import DEADLINE_ENV, TimeBudgetExhausted, check_time_budget
from backdoor_repro.resume import EpochCheckpoint
from backdoor_repro.train import TrainConfig, train_model

WIDTH = 4


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (48,), generator=gen)
    return images, labels


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def interrupted_then_resumed(run, path, monkeypatch):
    """``run(path)`` stopped by a passed deadline at its first checkpoint, then rerun to the end."""
    monkeypatch.setenv(DEADLINE_ENV, str(time.time() - 1))
    with pytest.raises(TimeBudgetExhausted, match="rerun the same command"):
        run(path)
    assert path.exists()
    monkeypatch.delenv(DEADLINE_ENV)
    return run(path)


def test_deadline_semantics(monkeypatch):
    monkeypatch.delenv(DEADLINE_ENV, raising=False)
    check_time_budget("no deadline")  # no budget: never stops
    monkeypatch.setenv(DEADLINE_ENV, str(time.time() + 3600))
    check_time_budget("an hour left")
    monkeypatch.setenv(DEADLINE_ENV, str(time.time() - 1))
    with pytest.raises(TimeBudgetExhausted):
        check_time_budget("past")
    monkeypatch.setenv(DEADLINE_ENV, "soon")
    with pytest.raises(ValueError, match=DEADLINE_ENV):
        check_time_budget("bad value")


def test_no_checkpoint_after_the_last_epoch_and_none_without_a_path(tmp_path, monkeypatch):
    monkeypatch.setenv(DEADLINE_ENV, str(time.time() - 1))
    EpochCheckpoint(None, "k", 1, 3, torch.device("cpu")).after_epoch(1, None, None, None)  # no path: never stops
    ckpt = EpochCheckpoint(tmp_path / "c.pt", "k", 2, 4, torch.device("cpu"))
    ckpt.after_epoch(4, None, None, None)  # the last epoch: the stage's artifact follows, no checkpoint
    monkeypatch.delenv(DEADLINE_ENV)
    ckpt.after_epoch(1, None, None, None)  # not due (and no deadline passed)
    assert not (tmp_path / "c.pt").exists()


def supervised_run(images, labels, checkpoint_every: int):
    """A 3-epoch supervised run from seed 0 that checkpoints to the path it is given: (weights, history)."""
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.05, schedule="cosine", augmentation="crop_flip",
                      checkpoint_every=checkpoint_every)

    def run(path):
        torch.manual_seed(0)
        model = build_model("resnet18", 10, WIDTH)
        result = train_model(model, images, labels, cfg, checkpoint=path, progress=False)
        return model.state_dict(), result.history
    return run


def test_supervised_loop_resumes_to_the_same_weights(data, tmp_path, monkeypatch):
    run = supervised_run(*data, checkpoint_every=1)
    weights, history = run(None)
    resumed_weights, resumed_history = interrupted_then_resumed(run, tmp_path / "sup.pt", monkeypatch)
    assert same_weights(weights, resumed_weights)
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in resumed_history]


def test_simclr_resumes_to_the_same_weights(data, tmp_path, monkeypatch):
    images, _ = data
    monkeypatch.setattr(dbd_stages, "SIMCLR_CHECKPOINT_EVERY", 1)
    cfg = SimCLRConfig(epochs=3, schedule_epochs=10, batch_size=16, projection_dim=16)

    def run(path):
        torch.manual_seed(0)
        clf = build_model("resnet18", 10, WIDTH)
        model = SelfSupervised(clf.backbone, clf.normalize, cfg.projection_dim)
        history = train_simclr(model, images, cfg, seed=0, checkpoint=path)
        return model.state_dict(), history

    weights, history = run(None)
    resumed_weights, resumed_history = interrupted_then_resumed(run, tmp_path / "simclr.pt", monkeypatch)
    assert same_weights(weights, resumed_weights)
    assert history == resumed_history


@pytest.mark.parametrize("reselect", ["every_epoch", "once"])  # "once": the resumed run uses the saved split
def test_mixmatch_resumes_to_the_same_weights(data, tmp_path, monkeypatch, reselect):
    images, labels = data
    head_cfg = HeadConfig(epochs=1, batch_size=16)
    cfg = FinetuneConfig(epochs=3, iterations=2, batch_size=8, rampup_epochs=4.0, reselect=reselect)
    poison_mask = torch.arange(48) % 8 == 0

    def run(path):
        torch.manual_seed(0)
        model = build_model("resnet18", 10, WIDTH)
        _, opt = train_head(model, images, labels, head_cfg, seed=0)
        history, losses, credible = finetune(model, opt, images, labels, poison_mask, head_cfg, cfg, seed=0,
                                             warmup_epochs=1, checkpoint=path)
        return model.state_dict(), history, losses, credible

    weights, history, losses, credible = run(None)
    r_weights, r_history, r_losses, r_credible = interrupted_then_resumed(run, tmp_path / "mixmatch.pt", monkeypatch)
    assert same_weights(weights, r_weights)
    assert history == r_history
    assert torch.equal(losses, r_losses) and torch.equal(credible, r_credible)


def test_a_mixmatch_checkpoint_of_another_config_is_ignored(data, tmp_path):
    images, labels = data
    head_cfg = HeadConfig(epochs=1, batch_size=16)
    poison_mask = torch.arange(48) % 8 == 0
    path = tmp_path / "mixmatch.pt"

    def run(epochs):
        torch.manual_seed(0)
        model = build_model("resnet18", 10, WIDTH)
        _, opt = train_head(model, images, labels, head_cfg, seed=0)
        return finetune(model, opt, images, labels, poison_mask, head_cfg,
                        FinetuneConfig(epochs=epochs, iterations=1, batch_size=8), seed=0, warmup_epochs=1,
                        checkpoint=path)[0]

    run(3)  # leaves the checkpoint of epoch 2
    with pytest.warns(UserWarning, match="another config"):
        history = run(2)
    assert len(history) == 2


def test_a_passed_deadline_writes_the_checkpoint_at_that_epoch_and_stops(tmp_path, monkeypatch):
    """Checked at the end of every epoch, not only when a checkpoint is due: a slice overruns by one epoch at most."""
    monkeypatch.setenv(DEADLINE_ENV, str(time.time() - 1))
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpt = EpochCheckpoint(tmp_path / "c.pt", "k", 5, 10, torch.device("cpu"))
    with pytest.raises(TimeBudgetExhausted, match="epoch 1 of 10"):
        ckpt.after_epoch(1, model, opt, torch.Generator(), history=[{"epoch": 1}])  # not due (every 5): stops anyway
    assert torch.load(tmp_path / "c.pt", weights_only=True)["epoch"] == 1
    ckpt.after_epoch(10, model, opt, torch.Generator())  # the last epoch: the artifact follows, no checkpoint, no stop


def test_a_run_stopped_between_its_checkpoints_resumes_to_the_same_weights(data, tmp_path, monkeypatch):
    """checkpoint_every=5 on a 3-epoch run: no checkpoint is due before the end, yet a passed deadline stops it after
    epoch 1 with one, and the rerun ends where an uninterrupted run does."""
    run = supervised_run(*data, checkpoint_every=5)
    weights, history = run(None)
    resumed_weights, resumed_history = interrupted_then_resumed(run, tmp_path / "sup.pt", monkeypatch)
    assert same_weights(weights, resumed_weights) and history == resumed_history


def test_a_checkpoint_of_other_training_data_of_the_same_size_is_not_resumed(data, tmp_path, monkeypatch):
    """The key names the training data by a full-content hash: one changed pixel is other data."""
    images, labels = data
    other = images.clone()
    other[-1, 0, 0, 0] ^= 1  # a pixel no sampled fingerprint would look at
    cfg = TrainConfig(epochs=3, batch_size=16, lr=0.05, augmentation="none", checkpoint_every=1)

    def run(x, path):
        torch.manual_seed(0)
        model = build_model("resnet18", 10, WIDTH)
        return model.state_dict(), train_model(model, x, labels, cfg, checkpoint=path, progress=False).history

    monkeypatch.setenv(DEADLINE_ENV, str(time.time() - 1))
    with pytest.raises(TimeBudgetExhausted):
        run(images, tmp_path / "sup.pt")  # leaves the epoch-1 checkpoint of `images`
    monkeypatch.delenv(DEADLINE_ENV)
    with pytest.warns(UserWarning, match="other training data"):
        weights, history = run(other, tmp_path / "sup.pt")
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert same_weights(weights, run(other, None)[0])  # trained from scratch on its own data


def test_the_checkpoint_key_names_the_data_and_the_machine_numerics(data, monkeypatch):
    from backdoor_repro import resume
    images, labels = data
    cpu = torch.device("cpu")
    key = resume.checkpoint_key("k", (images, labels), cpu)
    assert key == resume.checkpoint_key("k", (images.clone(), labels.clone()), cpu)
    assert key != resume.checkpoint_key("k", (images, labels.roll(1)), cpu)
    assert key != resume.checkpoint_key("k2", (images, labels), cpu)
    monkeypatch.setattr(resume, "cpu_numerics", lambda: "AVX512-4t")  # another machine's kernels and threads
    assert key != resume.checkpoint_key("k", (images, labels), cpu)

"""Progress lines (issue 30): a line when a stage starts and ends, one per epoch with the time elapsed and an estimate
of the time left, written to the file run_all.sh shows (BACKDOOR_REPRO_PROGRESS), and nothing without it."""
import re
import warnings

import pytest
import torch

from backdoor_repro import progress
from backdoor_repro.cache import ArtifactCache
from backdoor_repro.graph import Stage
from backdoor_repro.progress import (EpochProgress, epoch_line, format_duration, stage, stage_label,
                                     time_left)
from backdoor_repro.resume import EpochCheckpoint
from backdoor_repro.train import TrainConfig, train_model


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def log(tmp_path, monkeypatch):
    path = tmp_path / "progress.log"
    monkeypatch.setenv(progress.PROGRESS_ENV, str(path))
    return lambda: [re.sub(r"^   \d\d:\d\d:\d\d ", "", line) for line in path.read_text().splitlines()] \
        if path.exists() else []


@pytest.mark.parametrize("seconds, text", [(0, "0 s"), (42.4, "42 s"), (59.6, "1 min 00 s"), (185, "3 min 05 s"),
                                           (3599, "59 min 59 s"), (7380, "2 h 03 min"), (90061, "25 h 01 min")])
def test_durations_read_as_seconds_minutes_and_hours(seconds, text):
    assert format_duration(seconds) == text


def test_a_negative_duration_is_refused():
    with pytest.raises(ValueError, match="cannot be negative"):
        format_duration(-1)


def test_the_time_left_is_the_mean_pace_times_the_units_left():
    assert time_left(50.0, 10, 20) == 50.0
    assert time_left(12.0, 3, 4) == 4.0
    assert time_left(7.0, 5, 5) == 0.0
    assert time_left(0.0, 0, 20) is None  # nothing finished yet: no estimate
    for done in (-1, 21):
        with pytest.raises(ValueError, match="between 0 and total"):
            time_left(1.0, done, 20)


def test_an_epoch_line_names_the_stage_the_epoch_and_both_times():
    assert epoch_line("no_defense [grid3]", 3, 20, 12, 68) == \
        "no_defense [grid3]: epoch 3/20, 12 s elapsed, about 1 min 08 s left"
    assert epoch_line("x", 1, 2, 0.2, None).endswith("time left not known yet")


def test_epoch_lines_estimate_from_this_attempts_pace_and_skip_fast_epochs(log):
    clock = Clock()
    loop = EpochProgress(10, every=5.0, clock=clock)
    for epoch in range(1, 11):
        clock.now += 2.0  # two seconds an epoch
        loop.after_epoch(epoch, elapsed=2.0 * epoch, label="simclr [grid3]")
    # the first epoch, then one at least every five seconds, and the last
    assert log() == ["simclr [grid3]: epoch 1/10, 2 s elapsed, about 18 s left",
                     "simclr [grid3]: epoch 4/10, 8 s elapsed, about 12 s left",
                     "simclr [grid3]: epoch 7/10, 14 s elapsed, about 6 s left",
                     "simclr [grid3]: epoch 10/10, 20 s elapsed, about 0 s left"]


def test_a_resumed_loop_counts_its_pace_from_where_it_resumed(log):
    clock = Clock()
    loop = EpochProgress(10, every=0.0, clock=clock)
    clock.now += 500.0  # loading the checkpoint is not an epoch
    loop.resumed_at(6)
    clock.now += 30.0
    assert loop.after_epoch(7, elapsed=330.0, label="mixmatch") == \
        "mixmatch: epoch 7/10, 5 min 30 s elapsed, about 1 min 30 s left"


def test_nothing_is_written_without_a_progress_file(monkeypatch, tmp_path):
    monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)
    assert EpochProgress(3).after_epoch(1, 1.0, "x") is None
    with stage("quiet"):
        pass
    assert not list(tmp_path.iterdir())


def test_a_stage_writes_its_start_and_its_end_with_its_time(log):
    clock = Clock()
    with stage("outer", clock=clock):
        with stage("inner", clock=clock):
            assert progress.current_stage() == "inner"
            clock.now += 65.0
        assert progress.current_stage() == "outer"
        with pytest.raises(KeyError):
            with stage("broken", clock=clock):
                clock.now += 3.0
                raise KeyError("x")
    assert progress.current_stage("none building") == "none building"
    assert log() == ["outer: started", "inner: started", "inner: done in 1 min 05 s", "broken: started",
                     "broken: stopped after 3 s (KeyError)", "outer: done in 1 min 08 s"]


def test_a_stage_label_names_the_attack_and_the_seed_upstream():
    data = Stage("poisoned_data", {"attack": "grid3", "data_seed": 0}, 1)
    context = Stage("model_context", {"seed": 2, "width": 8}, 1)
    no_defense = Stage("no_defense", {"schedule": "s"}, 1, (data, context))
    head = Stage("head", {"lr": 0.1}, 1, (no_defense,))
    assert stage_label(head) == "head [grid3, seed 2]"
    assert stage_label(Stage("no_defense", {}, 1, (Stage("poisoned_data", {"attack": None}, 1),))) == \
        "no_defense [clean]"
    clean = Stage("no_defense", {}, 1, (Stage("poisoned_data", {"attack": None}, 1),))
    lc = Stage("lc_images", {"poisoning": {"attack": "lc_dbd"}, "pgd": 1}, 1, (clean,))
    assert stage_label(lc) == "lc_images [lc_dbd]"  # its own attack, not the clean model's upstream
    assert stage_label(Stage("alone", {"x": 1}, 1)) == "alone"


def test_a_cached_stage_reports_its_build_and_its_epochs_under_its_label(log, tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "EPOCH_LINE_EVERY_S", 1000.0)  # only the first and the last epoch are due
    cache = ArtifactCache(tmp_path / "cache")
    target = Stage("fine_tune", {"epochs": 3}, 1, (Stage("poisoned_data", {"attack": "blend"}, 1),))

    def build(partial):
        ckpt = EpochCheckpoint(partial, "k", 1, 3, torch.device("cpu"))
        for epoch in (1, 2, 3):
            ckpt.after_epoch(epoch, torch.nn.Linear(1, 1), torch.optim.SGD([torch.zeros(1, requires_grad=True)],
                                                                            lr=0.1), torch.Generator())
        return {"done": torch.ones(1)}

    cache.get_or_build(target, build)
    lines = log()
    assert lines[0] == "fine_tune [blend]: started" and re.fullmatch(r"fine_tune \[blend\]: done in \d+ s", lines[-1])
    assert [re.sub(r", .*", "", line) for line in lines[1:-1]] == \
        [f"fine_tune [blend]: epoch {e}/3" for e in (1, 3)]
    cache.get_or_build(target, build)  # from the cache: nothing trains, no line
    assert len(log()) == len(lines)


def test_the_supervised_loop_reports_every_epoch_it_trains(log, monkeypatch):
    monkeypatch.setattr(progress, "EPOCH_LINE_EVERY_S", 0.0)
    images = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 2, (32,))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    train_model(model, images, labels, TrainConfig(epochs=3, batch_size=16, augmentation="none"), progress=False)
    assert [re.sub(r", .*", "", line) for line in log()] == [f"training: epoch {e}/3" for e in (1, 2, 3)]


def test_a_progress_file_that_cannot_be_written_warns_once_and_never_stops_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv(progress.PROGRESS_ENV, str(tmp_path / "gone" / "progress.log"))  # its folder was removed
    with pytest.warns(UserWarning, match="no more progress lines"):
        progress.emit("a")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        progress.emit("b")
    assert not caught and not (tmp_path / "gone").exists()

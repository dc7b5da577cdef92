"""Artifact keys, atomic writes, corruption detection and resuming a killed training run."""
import os

import pytest
import torch

from backdoor_repro.graph import Stage
from backdoor_repro.cache import ArtifactCache, artifact_key, atomic_save, verified_load
from backdoor_repro.models import build_model
from backdoor_repro.train import TrainConfig, train_model


def test_key_depends_on_stage_config_and_version():
    cfg = TrainConfig(epochs=3)
    k = artifact_key("supervised", cfg, 1)
    assert k == artifact_key("supervised", TrainConfig(epochs=3), 1)
    assert k != artifact_key("supervised", TrainConfig(epochs=4), 1)
    assert k != artifact_key("supervised", cfg, 2)
    assert k != artifact_key("simclr", cfg, 1)
    with pytest.raises(TypeError):
        artifact_key("x", {"tensor": torch.zeros(1)}, 1)


def test_atomic_save_leaves_no_temporary_files(tmp_path):
    atomic_save({"a": torch.ones(3)}, tmp_path / "x.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt", "x.pt.sha256"]
    assert torch.equal(verified_load(tmp_path / "x.pt")["a"], torch.ones(3))


def test_corrupt_artifact_is_rebuilt(tmp_path):
    cache, calls = ArtifactCache(tmp_path), []

    def build(_partial):
        calls.append(1)
        return {"value": torch.tensor([len(calls)])}

    assert cache.get_or_build(Stage("stage", {"n": 1}, 1), build)["value"].item() == 1
    assert cache.get_or_build(Stage("stage", {"n": 1}, 1), build)["value"].item() == 1  # reused
    path = cache.path(Stage("stage", {"n": 1}, 1))
    path.write_bytes(path.read_bytes()[:-10] + b"corrupted!")
    assert cache.get_or_build(Stage("stage", {"n": 1}, 1), build)["value"].item() == 2  # detected, rebuilt
    assert len(calls) == 2


class Interrupt(Exception):
    pass


def _tiny_run(checkpoint=None, fail_at=None, epochs=4):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, 10, (64,), generator=gen)
    model = build_model("resnet18", 10, width=2)
    cfg = TrainConfig(epochs=epochs, batch_size=16, lr=0.05, augmentation="crop_flip", checkpoint_every=1)

    def evaluate(_model):
        return {}

    def maybe_fail(m):
        if fail_at is not None and len(calls) + 1 == fail_at:
            raise Interrupt
        calls.append(1)
        return evaluate(m)

    calls = []
    result = train_model(model, images, labels, cfg, evaluate=maybe_fail, eval_every=1,
                              checkpoint=checkpoint, progress=False)
    return model, result


def test_a_checkpoint_written_under_another_config_is_ignored_with_a_message(tmp_path):
    ckpt = tmp_path / "run.partial.pt"
    with pytest.raises(Interrupt):
        _tiny_run(ckpt, fail_at=4, epochs=5)  # a 5-epoch run leaves its epoch-3 checkpoint
    assert verified_load(ckpt)["epoch"] == 3
    with pytest.warns(UserWarning, match="another config"):
        _, result = _tiny_run(ckpt, epochs=2)  # must not resume the 5-epoch run's epoch 3
    assert [h["epoch"] for h in result.history] == [1, 2]


def test_killed_run_resumes_and_matches_an_uninterrupted_run(tmp_path):
    ckpt = tmp_path / "run.partial.pt"
    with pytest.raises(Interrupt):
        _tiny_run(ckpt, fail_at=3)  # dies during epoch 3's evaluation, after epoch 2's checkpoint
    assert verified_load(ckpt)["epoch"] == 2
    earlier = verified_load(ckpt)["elapsed"]
    resumed, result = _tiny_run(ckpt)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert earlier > 0 and result.seconds > earlier  # the time of the killed attempt counts
    straight, _ = _tiny_run(None)
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def _dropout_run(checkpoint=None, fail_at=None):
    """A network whose head has dropout (T&R's stage-2 head): resuming must continue the global RNG stream too."""
    torch.manual_seed(0)
    model = build_model("wrn16", 10, 4)
    model.head = model.fresh_head(0.5)
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (32, 3, 32, 32), generator=gen, dtype=torch.uint8)
    cfg = TrainConfig(epochs=3, batch_size=16, lr=1e-3, optimizer="adam", augmentation="none", checkpoint_every=1)
    calls = []

    def maybe_fail(m):
        if fail_at is not None and len(calls) + 1 == fail_at:
            raise Interrupt
        calls.append(1)
        return {}

    train_model(model, images, torch.arange(32) % 10, cfg, evaluate=maybe_fail, eval_every=1,
                     checkpoint=checkpoint, progress=False)
    return model


def test_resume_continues_the_dropout_stream(tmp_path):
    ckpt = tmp_path / "run.partial.pt"
    with pytest.raises(Interrupt):
        _dropout_run(ckpt, fail_at=2)
    torch.manual_seed(123)  # whatever the process did in between
    resumed, straight = _dropout_run(ckpt), _dropout_run(None)
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values()):
        assert torch.equal(a, b)


def test_no_temp_file_outlives_an_error_and_a_leftover_partial_is_cleaned(tmp_path, monkeypatch):
    from backdoor_repro import cache as cache_module
    from backdoor_repro.cache import ArtifactCache, atomic_save, atomic_write_text

    target = tmp_path / "a.txt"
    monkeypatch.setattr(cache_module.os, "replace", lambda *_: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        atomic_write_text(target, "x")
    with pytest.raises(OSError):
        atomic_save({"x": torch.zeros(1)}, tmp_path / "b.pt")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temp, no sidecar temp, nothing half-written
    cache = ArtifactCache(tmp_path / "c")
    cache.get_or_build(Stage("s", {"k": 1}, 1), lambda _p: {"x": 1})
    partial = cache.path(Stage("s", {"k": 1}, 1)).with_suffix(".partial.pt")
    atomic_save({"epoch": 3}, partial)  # as if killed after the artifact was stored, before the clean-up
    assert cache.get_or_build(Stage("s", {"k": 1}, 1), lambda _p: {"x": 2}) == {"x": 1}
    assert not partial.exists() and not partial.with_name(partial.name + ".sha256").exists()
    assert not list((tmp_path / "c").rglob("*.tmp"))


def test_a_resumed_stage_records_its_training_time_across_attempts(tmp_path):
    """The training time of a killed attempt counts when the loop resumes its checkpoint (``resumed_from``, called by
    EpochCheckpoint and FMP's ranking when they accept one), not when the build starts afresh beside it."""
    from backdoor_repro.cache import ArtifactCache, atomic_save, resumed_from
    from backdoor_repro.stages import StageOutput, cached_stage

    make = lambda: torch.nn.Linear(2, 2)  # noqa: E731
    for resumes in (True, False):
        cache = ArtifactCache(tmp_path / str(resumes))
        partial = cache.path(Stage("stage", {"k": 1}, 1)).with_suffix(".partial.pt")
        atomic_save({"elapsed": 189.0, "epoch": 3}, partial)

        def build(p):
            if resumes:
                resumed_from(p, 189.0)
            return StageOutput(make())

        _, record = cached_stage(cache, Stage("stage", {"k": 1}, 1), build, make, "cpu")
        assert (189.0 <= record.seconds < 189.0 + 60) if resumes else record.seconds < 60


def test_temp_files_of_killed_writers_are_swept_and_live_ones_kept(tmp_path):
    import subprocess
    import sys
    from backdoor_repro.cache import remove_dead_temp_files
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid, live_pid = int(dead.stdout), os.getppid()
    names = {f".model.pt.{dead_pid}.tmp": False, f".model.json.{dead_pid}.0123abcd.tmp": False,
             f".model.pt.{live_pid}.tmp": True, f".meta.json.{live_pid}.12345678.tmp": True, "model.pt": True}
    for name in names:
        (tmp_path / name).write_text("x")
    removed = remove_dead_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted(n for n, keep in names.items() if not keep)
    assert all((tmp_path / n).exists() == keep for n, keep in names.items())


def test_an_artifact_swapped_for_another_stages_file_is_not_loaded(tmp_path):
    """A file copied over another stage's artifact with its sidecar recomputed passes the checksum: the stage key
    stored inside the payload tells it apart, and the stage is rebuilt."""
    import hashlib
    cache = ArtifactCache(tmp_path)
    a, b = Stage("stage", {"n": 1}, 1), Stage("stage", {"n": 2}, 1)
    cache.get_or_build(a, lambda _p: {"value": torch.tensor([1])})
    cache.get_or_build(b, lambda _p: {"value": torch.tensor([2])})
    cache.path(a).write_bytes(cache.path(b).read_bytes())
    sidecar = cache.path(a).with_name(cache.path(a).name + ".sha256")
    sidecar.write_text(hashlib.sha256(cache.path(a).read_bytes()).hexdigest())
    with pytest.warns(UserWarning, match="another stage"):
        assert cache.get_or_build(a, lambda _p: {"value": torch.tensor([3])})["value"].item() == 3  # rebuilt
    assert cache.get_or_build(a, lambda _p: {"value": torch.tensor([4])}) == {"value": torch.tensor([3])}
    read_only = ArtifactCache(tmp_path, build=False)
    cache.path(b).write_bytes(cache.path(a).read_bytes())
    (cache.path(b).with_name(cache.path(b).name + ".sha256")).write_text(
        hashlib.sha256(cache.path(b).read_bytes()).hexdigest())
    from backdoor_repro.cache import NotCached
    with pytest.warns(UserWarning, match="another stage"), pytest.raises(NotCached):
        read_only.get_or_build(b, lambda _p: {"value": torch.tensor([5])})


def test_an_artifact_saved_before_the_key_was_stored_inside_loads_as_before(tmp_path):
    cache = ArtifactCache(tmp_path)
    stage = Stage("stage", {"n": 1}, 1)
    atomic_save({"value": torch.tensor([7])}, cache.path(stage))  # an older version's artifact: no key inside
    assert cache.get_or_build(stage, lambda _p: {"value": torch.tensor([8])}) == {"value": torch.tensor([7])}
    other = Stage("other", {"n": 1}, 1)
    assert cache.get_or_build(other, lambda _p: [1, 2]) == [1, 2]  # not a dict: stored wrapped, returned as built
    assert cache.get_or_build(other, lambda _p: [3]) == [1, 2]

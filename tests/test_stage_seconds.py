"""Each stage's build time in the run record, and the notebook's wall time from an empty cache pieced together from
them: a long profile runs in slices, so the run that publishes a notebook may have built few of its stages."""
import json
import time

import pytest

from backdoor_repro import cache, report
from backdoor_repro.cache import ArtifactCache
from backdoor_repro.graph import Stage

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fresh_log(monkeypatch):
    """A new process's log (what a notebook kernel starts with)."""
    monkeypatch.setattr(cache, "STAGE_LOG", {})
    monkeypatch.setattr(cache, "STAGE_COUNTS", {"built": 0, "from_cache": 0})
    return lambda: monkeypatch.setattr(cache, "STAGE_LOG", {})


def _sleeping(seconds, result=None):
    def build(_partial):
        time.sleep(seconds)
        return {"value": 1} if result is None else result
    return build


def test_a_stage_taken_from_the_cache_keeps_the_build_time_it_was_built_in(tmp_path, fresh_log):
    store, stage = ArtifactCache(tmp_path), Stage("slow", {"n": 1}, 1)
    store.get_or_build(stage, _sleeping(0.3))
    built = cache.STAGE_LOG[f"slow/{stage.key}"]
    assert built["built"] and 0.3 <= built["seconds"] < 2 and built["seconds"] == built["here"]
    assert json.loads(store.path(stage).with_suffix(".json").read_text())["build_seconds"] == built["seconds"]
    fresh_log()  # the next slice: a new kernel
    store.get_or_build(stage, _sleeping(5))
    cached = cache.STAGE_LOG[f"slow/{stage.key}"]
    assert not cached["built"] and cached["here"] == 0 and cached["seconds"] == built["seconds"]
    assert report.from_empty_cache_seconds(10.0, cache.STAGE_LOG) == pytest.approx(10.0 + built["seconds"])


def test_a_resumed_build_counts_its_earlier_attempts_and_a_nested_build_counts_once(tmp_path, fresh_log):
    """cached_stage stores ``seconds`` summed over attempts (here 100 s before a kill): the part not spent in this
    process joins the from-empty-cache time. A stage built inside another's build counts as its own, not twice."""
    store = ArtifactCache(tmp_path)
    inner, outer = Stage("inner", {}, 1), Stage("outer", {}, 1)

    def build_outer(_partial):
        started = time.perf_counter()
        store.get_or_build(inner, _sleeping(0.4))
        time.sleep(0.2)
        return {"value": 2, "seconds": 100.0 + time.perf_counter() - started}  # 100 s in a killed attempt

    store.get_or_build(outer, build_outer)
    log = {e["stage"]: e for e in cache.STAGE_LOG.values()}
    assert 0.4 <= log["inner"]["seconds"] < 2
    assert 100.2 <= log["outer"]["seconds"] < 100.2 + 2  # without the inner stage's 0.4 s
    assert 0.2 <= log["outer"]["here"] < 2
    wall = 0.7
    assert report.from_empty_cache_seconds(wall, cache.STAGE_LOG) == pytest.approx(wall + 100.0, abs=0.2)


def test_an_unknown_build_time_is_said_not_guessed(tmp_path, fresh_log):
    store, stage = ArtifactCache(tmp_path), Stage("old", {}, 1)
    store.get_or_build(stage, _sleeping(0))
    store.path(stage).with_suffix(".json").write_text("{}")  # built before build times were kept
    fresh_log()
    store.get_or_build(stage, _sleeping(0))
    assert cache.STAGE_LOG[f"old/{stage.key}"]["seconds"] is None
    assert report.from_empty_cache_seconds(5.0, cache.STAGE_LOG) is None


def test_the_run_record_lists_each_stage_and_the_time_from_an_empty_cache(tmp_path, fresh_log, monkeypatch):
    monkeypatch.setenv("BACKDOOR_REPRO_OUTPUT", str(tmp_path / "out"))
    monkeypatch.delenv("BACKDOOR_REPRO_PUBLISHED", raising=False)
    store = ArtifactCache(tmp_path / "cache")
    first, second = Stage("a", {}, 1), Stage("b", {}, 1)
    store.get_or_build(first, _sleeping(0, {"value": 1, "seconds": 50.0}))  # an earlier slice
    fresh_log()
    store.get_or_build(first, _sleeping(0))
    store.get_or_build(second, _sleeping(0, {"value": 2, "seconds": 7.0}))  # resumed: 7 s in a killed attempt
    record = json.loads(report.write_run_record("nb", "smoke", 20.0).read_text())
    assert [(s["stage"], s["seconds"], s["built_in_this_run"]) for s in record["stage_builds"]] == [
        ("a", 50.0, False), ("b", 7.0, True)]
    assert record["stage_builds"][0]["seconds_in_this_run"] == 0
    assert record["from_empty_cache_seconds"] == pytest.approx(20.0 + 50.0 + 7.0, abs=0.1)


def test_a_stage_from_the_cache_brings_the_stages_its_build_resolved(tmp_path, fresh_log):
    """A label-consistent set or an optimised trigger trains the clean model inside its build: when the outer stage
    comes from the cache, that model is not resolved, yet a run from an empty cache would train it."""
    store, inner, outer = ArtifactCache(tmp_path), Stage("clean", {}, 1), Stage("lc", {}, 1)

    def build_outer(_partial):
        store.get_or_build(inner, _sleeping(0.3))
        time.sleep(0.1)
        return {"value": 2}

    store.get_or_build(outer, build_outer)
    first = {e["stage"]: e["seconds"] for e in cache.STAGE_LOG.values()}
    assert 0.1 <= first["lc"] < 0.3 <= first["clean"]  # the outer's own time, without the inner's
    fresh_log()
    store.get_or_build(outer, build_outer)
    later = {e["stage"]: (e["seconds"], e["built"]) for e in cache.STAGE_LOG.values()}
    assert later == {"lc": (first["lc"], False), "clean": (first["clean"], False)}
    assert report.from_empty_cache_seconds(1.0, cache.STAGE_LOG) == pytest.approx(1.0 + first["lc"] + first["clean"])


def test_only_a_resumed_checkpoint_brings_its_earlier_attempts(tmp_path, fresh_log):
    """Epochs of 0.2 s; an attempt killed after epoch 2's checkpoint. Resumed under the same config, its time (at
    least the 0.4 s of two epochs) joins the stage's; under another config the checkpoint is ignored, and so is its
    time."""
    import torch
    from backdoor_repro.resume import EpochCheckpoint
    from backdoor_repro.stages import StageOutput, cached_stage

    class Killed(Exception):
        pass

    def builder(config, kill_after=None):
        def build(partial):
            ckpt = EpochCheckpoint(partial, config, 1, 3, torch.device("cpu"))
            model, gen = torch.nn.Linear(1, 1), torch.Generator()
            opt = torch.optim.SGD(model.parameters(), 0.1)
            saved = ckpt.resume(model, opt, gen)
            for epoch in range((saved or {}).get("epoch", 0) + 1, 4):
                time.sleep(0.2)
                ckpt.after_epoch(epoch, model, opt, gen)
                if epoch == kill_after:
                    raise Killed
            return StageOutput(model)
        return build

    def run(root, stage, config, kill_after=None):
        return cached_stage(ArtifactCache(root), stage, builder(config, kill_after), lambda: torch.nn.Linear(1, 1),
                            "cpu")

    for root, second_config in ((tmp_path / "same", "a"), (tmp_path / "other", "b")):
        stage = Stage("loop", {}, 1)
        with pytest.raises(Killed):
            run(root, stage, "a", kill_after=2)
        with pytest.warns(UserWarning, match="ignoring the checkpoint") if second_config != "a" else _no_warning():
            _, record = run(root, stage, second_config)
        logged = cache.STAGE_LOG[f"loop/{stage.key}"]
        assert logged["seconds"] == pytest.approx(record.seconds, abs=0.05) and logged["here"] >= 0.2
        # what the record adds to this attempt's time; the log rounds both to 0.1 s, so their difference is within 0.1 s
        # of the truth (and 0.6 - 0.2 is 0.39999... in floating point)
        earlier = logged["seconds"] - logged["here"]
        # (the record times the build, "here" also the lines around it, each rounded: they may differ by 0.1 s)
        if second_config == "a":
            assert earlier >= 0.4 - 0.1 - 1e-9, logged  # at least its two epochs of 0.2 s
        else:
            assert -0.1 - 1e-9 <= earlier <= 1e-9, logged
        fresh_log()


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_older_artifacts_odd_results_and_stopped_builds(tmp_path, fresh_log):
    from backdoor_repro.deadline import TimeBudgetExhausted
    store = ArtifactCache(tmp_path)
    old, tensor, stopped, inner = Stage("old", {}, 1), Stage("tensor", {}, 1), Stage("stopped", {}, 1), Stage("i", {}, 1)
    store.get_or_build(old, _sleeping(0, {"value": 1, "seconds": 42.0}))
    store.path(old).with_suffix(".json").write_text("{}")  # built before the sidecar kept build times
    import torch
    store.get_or_build(tensor, lambda _p: torch.zeros(2))  # an artifact that is not a dict
    assert cache.STAGE_LOG[f"tensor/{tensor.key}"]["seconds"] is not None

    def stops(_partial):
        store.get_or_build(inner, lambda _p: (_ for _ in ()).throw(TimeBudgetExhausted("deadline")))

    with pytest.raises(TimeBudgetExhausted):
        store.get_or_build(stopped, stops)
    assert cache._BUILDS == [] and f"stopped/{stopped.key}" not in cache.STAGE_LOG
    assert not store.path(stopped).exists()
    fresh_log()
    store.get_or_build(old, _sleeping(5))
    assert cache.STAGE_LOG[f"old/{old.key}"]["seconds"] == 42.0  # the artifact's own record of it


def test_a_detail_may_not_overwrite_the_records_own_fields(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOOR_REPRO_OUTPUT", str(tmp_path))
    with pytest.raises(ValueError, match="stage_builds"):
        report.write_run_record("nb", "smoke", 1.0, stage_builds=[])
    assert not list(tmp_path.rglob("*.json"))

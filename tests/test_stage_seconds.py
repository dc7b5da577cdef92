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

"""The defense x attack grid runner: cells through submitit's local executor, resume after a kill, failure
isolation, the SLURM dry run, and the cache lock that keeps two jobs from building one artifact."""
import json
import subprocess
import sys
import threading
import time

import pytest

from backdoor_repro.graph import Stage
from backdoor_repro.orchestration import grid
from backdoor_repro.cache import ArtifactCache
from backdoor_repro.orchestration.grid import Cell, GridSettings, GridStore, make_cells, run_grid


def settings(tmp_path, name="cache"):
    return GridSettings(profile="smoke", device="cpu", plumbing=True, cache_root=str(tmp_path / name))


def test_cells_are_checked_before_any_compute():
    cells = make_cells(["none", "ft"], ["grid3", "white3_bb"], seeds=[0, 1])
    assert len(cells) == 8 and len({c.id for c in cells}) == 8
    with pytest.raises(ValueError, match="unknown defense or attack: nope"):
        make_cells(["none", "nope"], ["grid3"])
    with pytest.raises(ValueError, match="unknown defense or attack: badnet"):
        make_cells(["none"], ["badnet"])
    with pytest.raises(ValueError, match="seeds"):
        make_cells(["none"], ["grid3"], seeds=[-1])


@pytest.mark.slow
def test_two_by_two_grid_through_submitit_local_with_two_workers(tmp_path):
    cells = make_cells(["none", "ft"], ["grid3", "white3_bb"])
    report = run_grid(cells, settings(tmp_path), tmp_path / "grid", "local", workers=2, log=lambda *_: None)
    assert sorted(report.ran) == sorted(c.id for c in cells) and not report.failed
    records = GridStore(tmp_path / "grid").records()
    assert len(records) == 4
    for r in records:
        assert set(r["metrics"]) >= {"ACC", "ASR", "RA", "CTR"} and r["plumbing"] and r["width"] == 4
        nd, m = r["no_defense"], r["metrics"]
        der = (max(0.0, nd["ASR"] - m["ASR"]) - max(0.0, nd["ACC"] - m["ACC"]) + 100) / 2
        assert r["DER"] == pytest.approx(der, abs=0.01) and r["protocol"] == "common"
        assert r["attack_settings"]["rate"] == 0.1 and r["attack_settings"]["target"] == 0
    by_attack = {}
    for r in records:  # every defense of an attack is judged against the same No-Defense model
        by_attack.setdefault(r["cell"]["attack"], set()).add(json.dumps(r["no_defense"], sort_keys=True))
    assert all(len(v) == 1 for v in by_attack.values())
    again = run_grid(cells, settings(tmp_path), tmp_path / "grid", "local", workers=2, log=lambda *_: None)
    assert again.ran == [] and len(again.skipped) == 4


@pytest.mark.slow
def test_a_killed_grid_reruns_only_the_missing_cells_with_identical_results(tmp_path):
    cells = make_cells(["none", "ft", "fp"], ["white3_bb"])
    cmd = [sys.executable, "-m", "backdoor_repro.orchestration.grid", "--defenses", "none,ft,fp", "--attacks", "white3_bb",
           "--device", "cpu", "--plumbing", "--out", str(tmp_path / "killed")]
    env_cache = {"BACKDOOR_REPRO_CACHE": str(tmp_path / "cache_killed")}
    import os
    proc = subprocess.Popen(cmd, env={**os.environ, **env_cache}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = GridStore(tmp_path / "killed")
    deadline = time.time() + 200
    while not any(store.done(c) for c in cells) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    first = [c for c in cells if store.done(c)]
    assert first and len(first) < len(cells), "the kill should land mid-grid"
    before = {c.id: store.read(c)["finished"] for c in first}
    resumed = run_grid(cells, GridSettings("smoke", device="cpu", plumbing=True,
                                           cache_root=str(tmp_path / "cache_killed" / "artifacts")),
                       tmp_path / "killed", "inline", log=lambda *_: None)
    assert sorted(resumed.skipped) == sorted(before) and len(resumed.ran) == len(cells) - len(first)
    assert {c.id: store.read(c)["finished"] for c in first} == before  # not recomputed
    reference = run_grid(cells, settings(tmp_path, "cache_reference"), tmp_path / "reference", "inline",
                         log=lambda *_: None)
    assert not reference.failed
    ref = GridStore(tmp_path / "reference")
    for c in cells:
        assert store.read(c)["metrics"] == ref.read(c)["metrics"], c.id


def test_a_failing_cell_is_recorded_and_the_others_finish(tmp_path, monkeypatch):
    cells = [Cell("none", "grid3"), Cell("ft", "grid3"), Cell("fp", "grid3")]

    def fake(cell, settings):
        if cell.defense == "ft":
            raise RuntimeError("out of memory (simulated)")
        return {"cell": cell.id, "metrics": {"ASR": 1.0}, "finished": "now"}

    monkeypatch.setattr(grid, "compute_cell", fake)
    report = run_grid(cells, settings(tmp_path), tmp_path / "g", "inline", log=lambda *_: None)
    assert report.failed == {"common__ft__grid3__default__seed0": "RuntimeError: out of memory (simulated)"}
    assert sorted(report.ran) == ["common__fp__grid3__default__seed0", "common__none__grid3__default__seed0"]
    store = GridStore(tmp_path / "g")
    failure, = store.failures()
    assert "out of memory" in failure["error"] and "Traceback" in failure["traceback"]
    assert "FAILED common__ft__grid3" in report.summary()
    monkeypatch.setattr(grid, "compute_cell", lambda cell, s: {"cell": cell.id, "metrics": {}, "finished": "later"})
    rerun = run_grid(cells, settings(tmp_path), tmp_path / "g", "inline", log=lambda *_: None)
    assert rerun.ran == ["common__ft__grid3__default__seed0"] and store.failures() == []


def test_slurm_job_list_prints_the_jobs_and_a_script_with_the_requested_resources(tmp_path, capsys):
    pytest.importorskip("submitit")
    code = grid.main(["--defenses", "none,ft", "--attacks", "grid3,white3_bb", "--executor", "slurm",
                      "--partition", "gpu", "--gpus-per-node", "2", "--time-min", "90", "--cpus-per-task", "8",
                      "--array-parallelism", "3", "--out", str(tmp_path / "g"), "--list-jobs"])
    out = capsys.readouterr().out
    assert code == 0 and "would run 4" in out and "common__ft__white3_bb__default__seed0" in out
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --time=90",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --array=0-3%3", "-m submitit.core._submit"):
        assert line in out, line
    assert not (tmp_path / "g").exists()  # nothing submitted, nothing written


def test_bad_cli_input_fails_before_any_compute(capsys):
    with pytest.raises(SystemExit):
        grid.main(["--defenses", "none", "--attacks", "nope", "--list-jobs"])
    assert "unknown defense or attack: nope" in capsys.readouterr().err


def test_two_jobs_never_build_the_same_artifact_at_once(tmp_path):
    cache, calls = ArtifactCache(tmp_path), []

    def build(_partial):
        calls.append(1)
        time.sleep(0.3)
        return {"x": 1}

    threads = [threading.Thread(target=cache.get_or_build, args=(Stage("stage", {"k": 1}, 1), build)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and cache.get_or_build(Stage("stage", {"k": 1}, 1), build) == {"x": 1}
    assert json.loads(cache.path(Stage("stage", {"k": 1}, 1)).with_suffix(".json").read_text())["stage"] == "stage"


def test_refresh_replaces_a_record_of_older_code_and_withdraws_one_that_cannot_be_recomputed(tmp_path, monkeypatch):
    cells = [Cell("none", "grid3"), Cell("ft", "grid3")]
    monkeypatch.setattr(grid, "compute_cell", lambda cell, s: {"cell": cell.id, "metrics": {"ASR": 9.0}})
    run_grid(cells, settings(tmp_path), tmp_path / "g", "inline", log=lambda *_: None)
    store = GridStore(tmp_path / "g")

    def newer(cell, s):
        if cell.defense == "ft":
            raise RuntimeError("its artifacts are gone")
        return {"cell": cell.id, "metrics": {"ASR": 1.0}}

    monkeypatch.setattr(grid, "compute_cell", newer)
    assert run_grid(cells, settings(tmp_path), tmp_path / "g", "inline", log=lambda *_: None).ran == []  # skipped
    report = run_grid(cells, settings(tmp_path), tmp_path / "g", "inline", log=lambda *_: None, refresh=True)
    assert report.ran == ["common__none__grid3__default__seed0"] and list(report.failed) == ["common__ft__grid3__default__seed0"]
    assert store.read(cells[0])["metrics"] == {"ASR": 1.0} and not store.done(cells[1])


def test_the_cpu_profiles_grids_say_which_defenses_they_leave_out_and_train_inline():
    for profile in ("smoke", "cpu"):
        line = grid.left_out_line(profile, grid.GRID_DEFENSES[profile])
        for defense in ("dbd", "trap_and_replace", "fct_dst", "fct_dbr"):
            assert defense in line
        assert profile in grid.INLINE_PROFILES
    assert grid.left_out_line("fast", grid.GRID_DEFENSES["fast"]) is None  # every defense
    assert grid.left_out_line("cpu", ("none", "ft")) is None  # a slice the user chose: nothing to explain
    assert set(grid.GRID_DEFENSES["cpu"]) < set(grid.ALL_DEFENSES)

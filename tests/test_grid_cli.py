"""The grid's command line refuses what would fail later, before any cell runs or any job is submitted: numeric
options out of range, a folder it cannot write, a malformed thread count, a GPU profile without a GPU, a mistyped key
(with a suggestion); its help names every option with examples and the valid keys; its SLURM options reach the sbatch
script. And a grid with cells that have no result is refused unless the caller keeps going, then marked."""
import os
import sys

import pytest

from backdoor_repro.orchestration import grid
from backdoor_repro.orchestration.grid import Cell, GridIncomplete, GridStore

BASE = ["--defenses", "none", "--attacks", "grid3"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOOR_REPRO_CACHE", str(tmp_path / "cache"))


def nothing_ran(tmp_path) -> bool:
    """No folder was made: neither the grid's nor any cache."""
    return not (tmp_path / "cache").exists() and not (tmp_path / "g").exists()


@pytest.mark.parametrize("option, value", [("--workers", "0"), ("--time-min", "0"), ("--cells-per-gpu", "0"),
                                           ("--data-seed", "-1"), ("--array-parallelism", "0"),
                                           ("--workers", "two"), ("--cpus-per-task", "0"), ("--mem", "lots"),
                                           ("--seeds", "0,-1"), ("--seeds", "one"), ("--gpus-per-node", "-1")])
def test_numeric_options_out_of_range_are_refused_naming_the_option(option, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        grid.main([*BASE, option, value, "--out", str(tmp_path / "g"), "--list-jobs"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"argument {option}" in err and value in err, err
    assert nothing_ran(tmp_path)


def test_a_folder_that_cannot_be_written_is_refused_up_front(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert grid.main([*BASE, "--out", str(blocker / "g")]) == 2
    err = capsys.readouterr().err
    assert "cannot be written" in err and "--out" in err and not (tmp_path / "cache").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_folder_is_refused_up_front(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code = grid.main([*BASE, "--out", str(locked / "g")])
    finally:
        locked.chmod(0o700)
    assert code == 2 and "cannot be written" in capsys.readouterr().err


def test_a_malformed_thread_count_is_refused_before_any_cell(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BACKDOOR_REPRO_THREADS", "abc")
    assert grid.main([*BASE, "--out", str(tmp_path / "g")]) == 2
    assert "BACKDOOR_REPRO_THREADS" in capsys.readouterr().err and nothing_ran(tmp_path)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU-only refusal")
def test_the_run_all_preflight_runs_before_any_cell(tmp_path, capsys):
    assert grid.main([*BASE, "--profile", "fast", "--out", str(tmp_path / "g")]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert grid.main([*BASE, "--profile", "cpu", "--data-root", str(tmp_path), "--out", str(tmp_path / "g")]) == 2
    assert "not found" in capsys.readouterr().err
    assert grid.main([*BASE, "--data-root", str(tmp_path), "--out", str(tmp_path / "g")]) == 2
    assert "not used by the smoke profile" in capsys.readouterr().err
    assert nothing_ran(tmp_path)


def test_a_slurm_submission_is_checked_but_not_for_this_machines_gpu(tmp_path, capsys):
    pytest.importorskip("submitit")
    assert grid.main([*BASE, "--profile", "fast", "--executor", "slurm", "--download", "--out", str(tmp_path / "g"),
                      "--list-jobs"]) == 0  # the jobs run on GPU nodes
    assert grid.main([*BASE, "--profile", "fast", "--executor", "slurm", "--data-root", str(tmp_path),
                      "--out", str(tmp_path / "g"), "--list-jobs"]) == 2  # but their data must be there
    assert "not found" in capsys.readouterr().err


def test_a_mistyped_key_gets_a_suggestion(capsys):
    with pytest.raises(ValueError, match=r"grid_3 \(did you mean grid3"):
        grid.make_cells(["none"], ["grid_3"])
    with pytest.raises(ValueError, match=r"nnoe \(did you mean none\?\)"):
        grid.make_cells(["nnoe"], ["grid3"])
    with pytest.raises(SystemExit):
        grid.main(["--defenses", "fp", "--attacks", "badnet", "--list-jobs"])
    assert "did you mean badnets_dbd_2x2" in capsys.readouterr().err


def test_help_describes_every_option_with_examples_and_the_keys(capsys):
    from backdoor_repro.attacks import ATTACKS
    ap = grid.parser()
    assert all(a.help for a in ap._actions), [a.dest for a in ap._actions if not a.help]
    with pytest.raises(SystemExit):
        grid.main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--executor slurm" in out and "--sbatch-extra" in out
    assert all(d in out for d in grid.ALL_DEFENSES) and all(a in out for a in ATTACKS)


def test_slurm_options_reach_the_sbatch_script_and_submitit(tmp_path, capsys, monkeypatch):
    pytest.importorskip("submitit")
    slurm = ["--executor", "slurm", "--partition", "gpu", "--account", "proj42", "--qos", "high", "--mem", "32G",
             "--constraint", "a100", "--sbatch-extra", "reservation=r1,exclusive", "--out", str(tmp_path / "g")]
    assert grid.main([*BASE, *slurm, "--list-jobs"]) == 0
    out = capsys.readouterr().out
    for line in ("#SBATCH --account=proj42", "#SBATCH --qos=high", "#SBATCH --mem=32G", "#SBATCH --constraint=a100",
                 "#SBATCH --reservation=r1", "#SBATCH --exclusive", "#SBATCH --partition=gpu"):
        assert line in out, line
    seen = {}

    class Executor:
        def __init__(self, folder, cluster):
            seen["cluster"] = cluster

        def update_parameters(self, **params):
            seen.update(params)

        def map_array(self, fn, *args):
            return list(zip(*args))

    import submitit
    monkeypatch.setattr(submitit, "AutoExecutor", Executor)
    assert grid.main([*BASE, *slurm]) == 0
    assert seen["slurm_account"] == "proj42" and seen["slurm_qos"] == "high" and seen["slurm_mem"] == "32G"
    assert seen["slurm_constraint"] == "a100" and seen["slurm_partition"] == "gpu"
    assert seen["slurm_additional_parameters"] == {"reservation": "r1", "exclusive": True}


def test_missing_cells_stop_the_grid_unless_it_keeps_going_and_are_marked(tmp_path):
    import pandas as pd
    cells = [Cell("none", "grid3"), Cell("ft", "grid3"), Cell("fp", "grid3")]
    store = GridStore(tmp_path / "g")
    store.write_done(cells[0], {"cell": {}})
    try:
        raise RuntimeError("out of memory (simulated)")
    except RuntimeError as error:
        store.write_failed(cells[1], error)
    missing = grid.missing_cells(cells, store)
    assert [(r["defense"], r["status"]) for r in missing] == [("ft", "failed"), ("fp", "not run")]
    assert "out of memory" in missing[0]["error"]
    with pytest.raises(GridIncomplete, match=r"2 cell\(s\)[\s\S]*ft x grid3[\s\S]*out of memory[\s\S]*keep_going"):
        grid.require_complete(missing, keep_going=False)
    grid.require_complete(missing, keep_going=True)
    grid.require_complete([], keep_going=False)
    tidy = pd.DataFrame([{"attack": "grid3", "defense": "none", "seed": 0, "metric": "ASR", "value": 90.0}])
    marked = grid.mark_missing(tidy, missing)
    assert list(marked.loc[marked["metric"] == "missing", "defense"]) == ["ft", "fp"]
    assert grid.mark_missing(tidy, []) is tidy  # nothing missing: the table is unchanged


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


def test_without_keys_the_cli_runs_the_profiles_grid_as_the_docstring_example_does(tmp_path, capsys):
    assert grid.main(["--profile", "smoke", "--out", str(tmp_path / "g"), "--list-jobs"]) == 0
    out = capsys.readouterr().out
    expected = len(grid.GRID_DEFENSES["smoke"]) * len(grid.GRID_ATTACKS["smoke"])
    assert out.startswith(f"{expected} cells, 0 done")
    for defense in grid.GRID_DEFENSES["smoke"]:
        assert f"common__{defense}__{grid.GRID_ATTACKS['smoke'][0]}__default__seed0" in out
    assert "--data-root DIR" in grid.__doc__ and "--list-jobs" in grid.__doc__

"""The prepared GPU session (scripts/gpu_session.py) and its collector (scripts/collect_gpu_session.py): the budget
rules, the packing, the filing, and one rehearsal of a whole session on the CPU with the collector after it."""
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


session_mod = _load("gpu_session")
collect_mod = _load("collect_gpu_session")


def _session(tmp_path, seconds: float):
    return session_mod.Session(out=tmp_path / "out", work=tmp_path / "work",
                               deadline=time.time() + seconds + session_mod.PACK_RESERVE_S)


def test_a_step_that_no_longer_fits_is_skipped_not_started(tmp_path):
    session = _session(tmp_path, 20)
    marker = tmp_path / "ran"
    record = session.run("bench", "too long", ["touch", str(marker)], {}, cap=100, minimum=60)
    assert record["status"] == "skipped" and not marker.exists()


def _gone(pid: str) -> bool:
    stat = Path(f"/proc/{pid}/stat")  # a zombie waiting to be reaped counts as gone
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_a_step_over_its_cap_is_killed_with_its_children_also_those_in_a_session_of_their_own(tmp_path):
    """papermill starts its kernel (the process doing the GPU work) in a new session, out of its group's reach."""
    session = _session(tmp_path, 100)
    child, escaped = tmp_path / "child.pid", tmp_path / "escaped.pid"
    script = (f"sleep 60 & echo $! > {child}; "
              f"python3 -c 'import os, time; os.setsid(); open(\"{escaped}\", \"w\").write(str(os.getpid())); "
              f"time.sleep(60)' & wait")
    started = time.time()
    record = session.run("slice", "hangs", ["bash", "-c", script], {"PATH": "/usr/bin:/bin"}, cap=3, minimum=1)
    assert record["status"] == "timeout" and time.time() - started < 20
    time.sleep(0.5)
    assert _gone(child.read_text().strip()) and _gone(escaped.read_text().strip())


def test_a_missing_program_fails_its_step_and_the_session_goes_on(tmp_path):
    session = _session(tmp_path, 100)
    record = session.run("bench", "no such program", [str(tmp_path / "missing")], {}, cap=10, minimum=1)
    assert record["status"] == "failed" and "No such file" in record["note"]


def test_a_new_session_clears_the_last_ones_outputs_but_keeps_cache_and_data(tmp_path):
    work = tmp_path / "work"
    for name in ("dryrun/notebooks/executed/fast-dry-run/failed", "bench", "outputs/tables/fast", "cache", "data"):
        (work / name).mkdir(parents=True)
        (work / name / "old.txt").write_text("from the last session")
    _session(tmp_path, 100)
    assert not (work / "dryrun").exists() and not (work / "bench").exists() and not (work / "outputs").exists()
    assert (work / "cache" / "old.txt").exists() and (work / "data" / "old.txt").exists()


def test_a_real_runs_executed_notebooks_are_packed_from_the_checkout_when_written_this_session(tmp_path, monkeypatch):
    """run_all.sh writes a real run's executed notebooks into the checkout, beside the committed ones."""
    monkeypatch.setattr(session_mod, "REPO", tmp_path / "repo")
    executed = tmp_path / "repo" / "notebooks" / "executed"
    for run in ("fast", "smoke"):
        (executed / run).mkdir(parents=True)
        (executed / run / "old.ipynb").write_text("{}")
    os.utime(executed / "fast" / "old.ipynb", (time.time() - 3600, time.time() - 3600))
    since = time.time() - 60
    (executed / "fast" / "attacks.ipynb").write_text("{}")
    (executed / "smoke" / "attacks.ipynb").write_text("{}")
    names = [name for name, _ in session_mod._result_members(tmp_path / "work", since)]
    assert names == ["run/notebooks/executed/fast/attacks.ipynb"]


@pytest.mark.parametrize("code, status", [(0, "ok"), (75, "stopped_at_budget"), (3, "failed"), (1, "failed")])
def test_exit_codes_map_to_step_statuses(tmp_path, code, status):
    session = _session(tmp_path, 100)
    record = session.run("slice", "exits", ["bash", "-c", f"echo hello; exit {code}"], {"PATH": "/usr/bin:/bin"},
                         cap=30, minimum=1)
    assert record["status"] == status and record["rc"] == code
    assert "hello" in session.log_path.read_text()


def test_the_archive_drops_pdfs_then_notebooks_until_it_fits(tmp_path, monkeypatch):
    session = _session(tmp_path, 100)
    tables = session.work / "outputs" / "tables" / "fast"
    figures = session.work / "outputs" / "figures" / "fast"
    tables.mkdir(parents=True)
    figures.mkdir(parents=True)
    (tables / "no_defense.csv").write_text("attack,ACC\nx,1\n")
    (figures / "big.pdf").write_bytes(os.urandom(2**20))  # 1 MiB that gzip cannot shrink
    (session.work / "outputs" / ".cache").mkdir()
    (session.work / "outputs" / ".cache" / "model.pt").write_bytes(b"weights")
    monkeypatch.setattr(session_mod, "MAX_FILE_BYTES", 64 * 1024)
    args = type("Args", (), {"budget": 100, "slice": "--only attacks"})()
    session_mod.pack(session, time.time(), args)
    with tarfile.open(session.out / "results.tar.gz") as tar:
        names = tar.getnames()
    assert names == ["run/tables/fast/no_defense.csv"]  # the PDF dropped, the cache never packed
    summary = json.loads((session.out / "summary.json").read_text())
    assert summary["archive_level"] == "no PDFs" and summary["archive_fits"]


def test_the_dry_runs_failed_notebooks_are_the_last_thing_the_archive_drops(tmp_path, monkeypatch):
    session = _session(tmp_path, 100)
    executed = session.work / "dryrun" / "notebooks" / "executed" / "fast-dry-run"
    (executed / "failed").mkdir(parents=True)
    (executed / "attacks.ipynb").write_bytes(os.urandom(2**20))
    (executed / "failed" / "fmp.ipynb").write_text('{"traceback": "short"}')
    (session.work / "bench").mkdir()
    (session.work / "bench" / "supervised.json").write_text("{}")
    monkeypatch.setattr(session_mod, "MAX_FILE_BYTES", 64 * 1024)
    session_mod.pack(session, time.time(), type("Args", (), {"budget": 100, "slice": ""})())
    with tarfile.open(session.out / "results.tar.gz") as tar:
        names = sorted(tar.getnames())
    assert names == ["bench/supervised.json", "dryrun/notebooks/executed/fast-dry-run/failed/fmp.ipynb"]


def _archive(folder: Path, files: dict, summary: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(summary))
    with tarfile.open(folder / "results.tar.gz", "w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)  # written as given: tar.add would strip a leading '/'
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return folder


SUMMARY = {"started": "2026-12-05 10:00:00 UTC", "wall_seconds": 470.0, "budget_seconds": 480, "rehearsal": False,
           "commit": "abc123", "environment": {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130"},
           "steps": [{"step": "env", "what": "interpreter", "status": "ok", "seconds": 9.0},
                     {"step": "dryrun", "what": "grid (fast, every code path)", "status": "skipped", "seconds": 0}]}


def _failed_notebook() -> str:
    return json.dumps({"cells": [{"outputs": [{"output_type": "error", "ename": "RuntimeError",
                                               "evalue": "bf16 broke", "traceback": ["a", "b", "\x1b[31mlast\x1b[0m"]}]}]})


def test_collect_files_complete_runs_at_the_top_and_slices_only_in_the_session_folder(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    files = {
        "run/tables/fast/attacks_run.json": json.dumps({"wall_seconds": 100, "attack_subset": None}),
        "run/tables/fast/no_defense.csv": "attack,ACC\n",
        "run/figures/fast/no_defense.png": "png",
        "run/notebooks/executed/fast/attacks.ipynb": "{}",
        "run/tables/paper/dbd_run.json": json.dumps({"wall_seconds": 50, "attack_subset": ["grid3"]}),
        "run/tables/paper/dbd_table1.csv": "partial\n",
        "dryrun/notebooks/executed/fast-dry-run/attacks.ipynb": "{}",
        "dryrun/notebooks/executed/fast-dry-run/failed/fmp.ipynb": _failed_notebook(),
        "dryrun/tables/fast-dry-run/no_defense.csv": "dry\n",
        "bench/supervised.json": json.dumps({"results": [{"stage": "supervised", "speedup": 21.5}]}),
        "run/lib/backdoor_repro/fast/evil.py": "never filed",
    }
    record = collect_mod.collect(_archive(tmp_path / "back", files, SUMMARY), repo)
    stamp = record["session"]
    assert stamp == "20261205100000-nvidia-h100-80gb-hbm3"
    assert (repo / "tables/fast/no_defense.csv").exists() and (repo / "figures/fast/no_defense.png").exists()
    assert (repo / "notebooks/executed/fast/attacks.ipynb").exists()
    assert not (repo / "tables/paper").exists()  # a slice never lands at the top level
    assert (repo / f"tables/gpu_sessions/{stamp}/tables/paper/dbd_table1.csv").read_text() == "partial\n"
    assert not (repo / "tables/fast-dry-run").exists()  # the dry run's numbers mean nothing: not filed
    assert record["dry_run"]["attacks"] == {"status": "passed"}
    assert record["dry_run"]["fmp"]["status"] == "failed" and record["dry_run"]["grid"] == {"status": "skipped"}
    assert record["dry_run"]["fmp"]["error"].startswith("RuntimeError: bf16 broke") and "\x1b" not in record["dry_run"]["fmp"]["error"]
    assert not any(path.name == "evil.py" for path in repo.rglob("*"))  # only tables, figures, executed notebooks
    bench = json.loads((repo / f"tables/benchmarks/gpu_{stamp}.json").read_text())
    assert bench["stages"][0]["results"][0]["speedup"] == 21.5
    saved = json.loads((repo / f"tables/gpu_sessions/{stamp}.json").read_text())
    assert saved["gpu"] == "NVIDIA H100 80GB HBM3" and saved["torch"] == "2.11.0+cu130" and saved["wall_seconds"] == 470.0
    index = (repo / "tables/gpu_sessions/README.md").read_text()
    assert "NVIDIA H100 80GB HBM3" in index and "fmp" in index and "supervised x21.5" in index
    assert (repo / f".cache/gpu_sessions/{stamp}/results.tar.gz").exists()


@pytest.mark.parametrize("bad_name", ["../escape.csv", "/abs/escape.csv"])
def test_collect_refuses_an_archive_with_unsafe_paths_and_writes_nothing(tmp_path, bad_name):
    repo = tmp_path / "repo"
    repo.mkdir()
    folder = _archive(tmp_path / "back", {"run/tables/fast/a.csv": "x", bad_name: "x"}, SUMMARY)
    with pytest.raises(ValueError, match="unsafe member"):
        collect_mod.collect(folder, repo)
    assert not any(repo.rglob("*"))


def test_collect_refuses_a_cpu_rehearsal(tmp_path):
    folder = _archive(tmp_path / "back", {}, dict(SUMMARY, rehearsal=True))
    with pytest.raises(SystemExit, match="rehearsal"):
        collect_mod.collect(folder, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_rehearsed_session_runs_every_step_and_its_results_are_collected(tmp_path):
    """The whole session on the CPU (the dry run and the slice as dry runs of the attacks notebook, the benchmark at
    width 8): every step ends well, the archive holds the slice's tables, figures and executed notebook and the
    benchmark, and the collector files them and names the session."""
    out, work = tmp_path / "out", tmp_path / "work"
    run = subprocess.run([sys.executable, "scripts/gpu_session.py", "--rehearse", "--budget", "380", "--out", str(out),
                          "--work", str(work), "--wheels", str(tmp_path / "no-wheels"),
                          "--slice", "--only attacks --attacks grid3"],
                         cwd=REPO, capture_output=True, text=True, timeout=390)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    statuses = {(s["step"], s["what"].split(" ")[0]): s["status"] for s in summary["steps"]}
    assert ("dryrun", "attacks") in statuses
    assert set(statuses.values()) == {"ok"}, statuses
    assert {step for step, _ in statuses} >= {"env", "dryrun", "bench", "slice", "bench_all"}
    assert not any(str(v).startswith("MISSING") for v in summary["environment"].values()), summary["environment"]
    with tarfile.open(out / "results.tar.gz") as tar:
        names = set(tar.getnames())
    assert "run/tables/fast-dry-run/no_defense.csv" in names and "bench/supervised.json" in names
    assert "run/notebooks/executed/fast-dry-run/attacks.ipynb" in names
    assert "dryrun/notebooks/executed/fast-dry-run/attacks.ipynb" in names
    repo = tmp_path / "repo"
    repo.mkdir()
    record = collect_mod.collect(out, repo, rehearsal_ok=True)
    assert record["gpu"] == "CPU rehearsal" and record["dry_run"] == {"attacks": {"status": "passed"}}
    assert record["runs"]["fast-dry-run/attacks"]["attack_subset"] == ["grid3"]
    assert (repo / f"tables/gpu_sessions/{record['session']}/tables/fast-dry-run/no_defense.csv").exists()
    assert not (repo / "tables/fast-dry-run").exists()  # a slice: only in the session's folder

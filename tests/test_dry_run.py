"""The dry run of the full-data profiles on the CPU: ``run_all.sh --profile cpu|fast|paper --dry-run`` runs every
notebook with that profile's configs, models (narrowed to width 8 on the CPU) and code paths, each stage cut to a couple
of steps on 100 bundled images, and writes every table and figure, into a temporary folder only (never
tables/<profile>, never the real cache)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = [p.stem for p in sorted((REPO / "notebooks").glob("*.ipynb"))]
# written on fast / paper only (the smoke and cpu profiles skip these sections for the CPU budget)
GPU_ONLY_TABLES = {"fct_t4_ssctl_ablation.csv", "tr_l2_inv_question.csv"}
# tables and figures every dry run must write: the smoke run's, plus the GPU-only sections
SMOKE_TABLES = {p.name for p in (REPO / "tables" / "smoke").glob("*.csv")}
SMOKE_FIGURES = {p.name for p in (REPO / "figures" / "smoke").glob("*.png")}


PROFILES = ("cpu", "fast", "paper")
DRY_RUN_TEST = "test_dry_run_of_a_full_data_profile_writes_every_output"
DRY_RUN_LIMIT_S = 850


def _real_outputs(profile: str) -> dict:
    """A real run's outputs of that profile, if any, with their modification times."""
    folders = [REPO / kind / profile for kind in ("tables", "figures")] + [REPO / "notebooks" / "executed" / profile]
    return {p: p.stat().st_mtime for folder in folders for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def dry_runs(request, tmp_path_factory):
    """The selected profiles' dry runs, started together at the first test that needs one, each on one CPU thread.

    Their numbers are not checked, so the thread count does not matter to them; side by side on CI's two cores
    both take about the time of one (measured: 6 min 13 s together against 4 min 31 s for one alone)."""
    wanted = [p for p in PROFILES if any(getattr(item, "originalname", None) == DRY_RUN_TEST
                                         and item.callspec.params.get("profile") == p for item in request.session.items)]
    runs = {}
    try:
        for profile in wanted:
            root = tmp_path_factory.mktemp(f"dry-run-{profile}")
            env = {**os.environ, "BACKDOOR_REPRO_OUTPUT": str(root / "dry"), "BACKDOOR_REPRO_PYTHON": sys.executable,
                   "BACKDOOR_REPRO_THREADS": "1"}
            before = _real_outputs(profile)
            log = open(root / "run_all.log", "w")
            proc = subprocess.Popen(["bash", str(REPO / "run_all.sh"), "--profile", profile, "--dry-run", "--device", "cpu"],
                                    cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            runs[profile] = {"proc": proc, "log": log, "out": root / "dry", "before": before,
                             "deadline": time.monotonic() + DRY_RUN_LIMIT_S}
        yield runs
    finally:
        for run in runs.values():  # a failed or interrupted test leaves no dry run behind
            if run["proc"].poll() is None:
                os.killpg(run["proc"].pid, signal.SIGKILL)
                run["proc"].wait()
            run["log"].close()


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("profile", PROFILES)
def test_dry_run_of_a_full_data_profile_writes_every_output(profile, dry_runs):
    run = dry_runs[profile]
    try:
        returncode = run["proc"].wait(timeout=max(1.0, run["deadline"] - time.monotonic()))
    except subprocess.TimeoutExpired:
        returncode = None
    output = (run["out"].parent / "run_all.log").read_text(errors="replace")
    assert returncode == 0, f"rc {returncode}:\n" + output[-9000:]
    out = run["out"]
    name = f"{profile}-dry-run"  # a dry run's outputs never take a real run's folder names
    tables, figures = out / "tables" / name, out / "figures" / name
    written_tables = {p.name for p in tables.glob("*.csv")}
    written_figures = {p.name for p in figures.glob("*.png")}
    assert not (SMOKE_TABLES | (GPU_ONLY_TABLES if profile != "cpu" else set())) - written_tables
    assert not SMOKE_FIGURES - written_figures
    assert "run_times.csv" in written_tables  # each notebook's wall time, from the run records (run_all.sh's end)
    for notebook in NOTEBOOKS:
        assert (out / "notebooks" / "executed" / name / f"{notebook}.ipynb").exists(), notebook
        if notebook != "grid":
            assert json.loads((tables / f"{notebook}_run.json").read_text())["profile"] == name
    # every table has rows, every figure has pixels
    assert all(p.stat().st_size > 0 for p in tables.glob("*.csv"))
    assert all(p.stat().st_size > 1000 for p in figures.glob("*.png"))
    # nothing landed in the repository's folders of that profile (a real run's outputs, if any, untouched), and the
    # cache of the dry run is under `out`
    assert _real_outputs(profile) == run["before"]
    assert not (REPO / "tables" / name).exists() and (out / ".cache" / "artifacts").is_dir()
    assert "DRY RUN" in (out / "notebooks" / "executed" / name / "attacks.ipynb").read_text()


@pytest.mark.parametrize("args, message", [
    (["--profile", "smoke", "--dry-run"], "is itself the short run"),
    (["--profile", "fast", "--dry-run", "--data-root", "."], "drop --data-root"),
    (["--profile", "fast", "--dry-run", "--dataset", "cifar10-smoke"], "--dry-run covers"),  # no dry-run copy
    (["--profile", "fast", "--max-minutes", "0"], "positive whole number"),
    (["--profile", "fast", "--max-minutes", "ten"], "positive whole number"),
])
def test_bad_dry_run_and_budget_arguments_fail_before_any_compute(args, message):
    env = {**os.environ, "BACKDOOR_REPRO_PYTHON": sys.executable}
    run = subprocess.run(["bash", str(REPO / "run_all.sh"), *args], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=110)
    assert run.returncode == 2 and message in run.stderr, run.stderr


def test_a_dry_run_experiment_cuts_every_schedule_and_keeps_the_profile():
    from backdoor_repro.defenses import get_defense
    from backdoor_repro.experiment import setup
    from backdoor_repro.profiles import DRY_RUN_CPU_WIDTH, DRY_RUN_MAX_BATCH
    from backdoor_repro.train import enable_cpu_autocast
    try:
        ex = setup("paper", device="cpu", dry_run=True, quiet=True)
        assert ex.profile.name == "paper" and ex.profile.dataset == "cifar10"  # the profile's branches are taken
        assert len(ex.train) == 100 and len(ex.test) == 100
        for spec in (ex.spec("grid3"), ex.spec("grid3", defense="fct_dbr"), ex.spec("grid3_tr", defense="trap_and_replace")):
            assert spec.no_defense_schedule.epochs == 1 and spec.no_defense_schedule.batch_size <= DRY_RUN_MAX_BATCH
            assert spec.width <= DRY_RUN_CPU_WIDTH
        paper = get_defense("fct_dst").config("paper")
        assert paper.encoder.epochs > 1 and ex.config("fct_dst") == get_defense("fct_dst").small_config("paper")
        from backdoor_repro import fast_step
        assert fast_step.device_schedules(torch.device("cpu"))  # the dry run takes the GPU's step paths
    finally:
        enable_cpu_autocast(False)  # no dry-run precision or step path leaks into the other tests of this process
        from backdoor_repro.fast_step import enable_gpu_step_paths
        enable_gpu_step_paths(False)
    with pytest.raises(ValueError, match="is itself the short run"):
        setup("smoke", dry_run=True, quiet=True)
    with pytest.raises(ValueError, match="dry_run must be True or False"):
        setup("fast", dry_run="yes", quiet=True)

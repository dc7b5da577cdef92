"""run_all.sh loses nothing silently and never leaves a partial result (issue 31):

* relative ``BACKDOOR_REPRO_OUTPUT`` / ``BACKDOOR_REPRO_CACHE`` are taken from the caller's folder, for the preflight
  and the kernels alike (the kernels run in notebooks/);
* publishing a notebook's outputs is all or nothing: a run killed while moving them is completed by the next run;
* two runs on one output folder: the second is refused up front; two runs on one checkout with their own output
  folders both pass (each has its own running notebook);
* a parameter that a notebook does not declare is refused before anything runs;
* ``OMP_WAIT_POLICY=PASSIVE`` is exported (a user value wins);
* a deadline from the environment is named as such; a malformed ``--device`` is refused.

The notebooks here are fakes that write a few files with plain Python (no torch): seconds per run.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = {"tables": ("a.csv", "b.csv", "c.md"), "figures": ("f.png", "g.pdf")}

PARAMETERS = "profile = 'smoke'\ndevice = 'auto'\ndownload = False"
BODY = """import os
import time
from pathlib import Path
release = os.environ.get("FAKE_RELEASE")  # a test holds the run here until it creates this file
if release:
    end = time.time() + 100
    while not Path(release).exists():
        assert time.time() < end, "never released"
        time.sleep(0.05)
root = Path(os.environ["BACKDOOR_REPRO_OUTPUT"])
for kind, names in OUTPUTS.items():
    (root / kind / profile).mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / kind / profile / name).write_text(f"{name} {VALUE}\\n")
if os.environ.get("FAKE_CACHE_PROBE"):
    from backdoor_repro.paths import cache_dir
    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / "probe").write_text("from the kernel")"""


def fake_notebook(value: int, fail: bool = False, parameters: str = PARAMETERS) -> dict:
    cells = [(parameters, ["parameters"]), (f"VALUE = {value}\nOUTPUTS = {OUTPUTS!r}\n" + BODY, []),
             ("raise RuntimeError('the check failed')" if fail else "print('checks passed')", [])]
    return {"cells": [{"cell_type": "code", "execution_count": None, "id": f"cell{i}", "metadata": {"tags": tags},
                       "outputs": [], "source": src} for i, (src, tags) in enumerate(cells)],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


class Checkout:
    """A checkout with run_all.sh and one fake notebook (``attacks``); runs in a session of their own."""

    def __init__(self, root: Path, out: Path | None = None):
        self.root, self.out = root / "checkout", out or root / "out"
        (self.root / "notebooks").mkdir(parents=True)
        shutil.copy(REPO / "run_all.sh", self.root)
        shutil.copytree(REPO / "scripts", self.root / "scripts")
        self.executed = self.root / "notebooks" / "executed" / "smoke"
        self.procs = []

    def write(self, value: int, fail: bool = False, parameters: str = PARAMETERS) -> None:
        (self.root / "notebooks" / "attacks.ipynb").write_text(json.dumps(fake_notebook(value, fail, parameters)))

    def start(self, *args, cwd=None, **env) -> subprocess.Popen:
        full_env = {**os.environ, "BACKDOOR_REPRO_PYTHON": sys.executable, "BACKDOOR_REPRO_OUTPUT": str(self.out),
                    **env}
        proc = subprocess.Popen(["bash", str(self.root / "run_all.sh"), "--only", "attacks", *args],
                                cwd=cwd or self.root, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        self.procs.append(proc)
        return proc

    def run(self, *args, cwd=None, timeout=100, **env) -> subprocess.CompletedProcess:
        return finish(self.start(*args, cwd=cwd, **env), timeout)

    def outputs(self, root: Path | None = None) -> dict[str, bytes]:
        root = root or self.out
        return {f"{kind}/{name}": (root / kind / "smoke" / name).read_bytes()
                for kind, names in OUTPUTS.items() for name in names if (root / kind / "smoke" / name).exists()}

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def finish(proc: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    """Wait for ``proc``; past ``timeout``, kill its whole session (papermill, the kernel's parent) and fail."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=30)
        pytest.fail(f"run_all.sh did not end within {timeout} s:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def wait_for(condition, what: str, timeout: float = 90, procs=()) -> None:
    end = time.time() + timeout
    while not condition():
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"a run ended before {what}: {proc.stdout.read()[-2000:]}\n{proc.stderr.read()[-2000:]}")
        assert time.time() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def checkout(tmp_path):
    made = Checkout(tmp_path)
    yield made
    made.kill_all()


# 1. relative output and cache folders

@pytest.mark.slow
@pytest.mark.timeout(200)
def test_relative_output_and_cache_folders_are_the_callers(checkout, tmp_path):
    caller = tmp_path / "caller"
    caller.mkdir()
    checkout.write(1)
    done = checkout.run(cwd=caller, BACKDOOR_REPRO_OUTPUT="rel/out", BACKDOOR_REPRO_CACHE="rel/cache",
                        FAKE_CACHE_PROBE="1")
    assert done.returncode == 0, done.stderr
    assert checkout.outputs(caller / "rel" / "out") == {f"{kind}/{name}": f"{name} 1\n".encode()
                                                        for kind, names in OUTPUTS.items() for name in names}
    assert (caller / "rel" / "cache" / "probe").read_text() == "from the kernel"  # the kernel's cache is the caller's
    # nothing beside the checkout's notebooks/ (the kernels' folder) or in the checkout (the preflight's)
    assert not (checkout.root / "rel").exists() and not (checkout.root / "notebooks" / "rel").exists()
    assert (checkout.executed / "attacks.ipynb").exists()


def test_paths_pin_a_relative_folder_against_the_working_directory(tmp_path, monkeypatch):
    from backdoor_repro.paths import cache_dir, output_root
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BACKDOOR_REPRO_OUTPUT", "rel/out")
    monkeypatch.setenv("BACKDOOR_REPRO_CACHE", "rel/cache")
    assert output_root() == tmp_path.resolve() / "rel" / "out"
    assert cache_dir() == tmp_path.resolve() / "rel" / "cache"
    elsewhere = tmp_path / "notebooks"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # as a kernel started in notebooks/, or a later chdir
    assert output_root() == tmp_path.resolve() / "rel" / "out" and cache_dir() == tmp_path.resolve() / "rel" / "cache"
    assert Path(os.environ["BACKDOOR_REPRO_OUTPUT"]).is_absolute()  # what child processes inherit
    assert Path(os.environ["BACKDOOR_REPRO_CACHE"]).is_absolute()


# 2. all-or-nothing publishing

@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_publish_killed_midway_is_completed_by_the_next_run(tmp_path):
    reference = Checkout(tmp_path / "reference")
    faulty = Checkout(tmp_path / "faulty")
    try:
        reference.write(2)
        assert reference.run().returncode == 0
        expected = reference.outputs()
        assert len(expected) == 5

        faulty.write(1)
        assert faulty.run().returncode == 0
        old = faulty.outputs()
        faulty.write(2)
        proc = faulty.start(BACKDOOR_REPRO_TEST_PUBLISH_PAUSE="1")  # a second between two moves
        wait_for(lambda: any(v.endswith(b" 2\n") for v in faulty.outputs().values()), "the first file published",
                 procs=[proc])
        os.killpg(proc.pid, signal.SIGKILL)  # papermill and the kernel are done: run_all.sh is publishing
        proc.wait(timeout=30)
        half = faulty.outputs()
        assert {v[-2:] for v in half.values()} == {b"1\n", b"2\n"}, half  # killed midway: old and new side by side
        assert list(faulty.out.glob(".staging-*/.manifest"))

        # the next run completes that publish before anything else, even one whose notebook then fails
        faulty.write(3, fail=True)
        failed = faulty.run()
        assert failed.returncode == 1 and "were not published" in failed.stderr, failed.stderr
        assert "completing the publish" in failed.stdout
        assert faulty.outputs() == expected and faulty.outputs() != old  # byte for byte an uninterrupted run's
        assert "VALUE = 2" in (faulty.executed / "attacks.ipynb").read_text()  # its executed notebook too
        assert not list(faulty.out.glob(".staging-*")) and not list(faulty.executed.glob(".*.running.ipynb"))
    finally:
        reference.kill_all()
        faulty.kill_all()


# 3. two runs at once

@pytest.mark.slow
@pytest.mark.timeout(200)
def test_a_second_run_on_the_same_output_folder_is_refused_up_front(checkout, tmp_path):
    release = tmp_path / "release"
    checkout.write(1)
    first = checkout.start(FAKE_RELEASE=str(release))
    wait_for(lambda: list(checkout.out.glob(".staging-*")), "the first run's notebook", procs=[first])
    second = checkout.run(FAKE_RELEASE=str(release), timeout=60)
    assert second.returncode == 2, second.stderr
    assert "another run_all.sh is running" in second.stderr and f"pid {first.pid}" in second.stderr
    assert "== attacks" not in second.stdout and len(list(checkout.out.glob(".staging-*"))) == 1
    release.touch()
    done = finish(first, 100)
    assert done.returncode == 0, done.stderr
    assert set(checkout.outputs()) == {f"{kind}/{name}" for kind, names in OUTPUTS.items() for name in names}
    assert not list(checkout.out.glob(".staging-*")) and not list(checkout.executed.glob(".*.running.ipynb"))


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_two_runs_on_one_checkout_with_their_own_output_folders_both_pass(checkout, tmp_path):
    release = tmp_path / "release"
    checkout.write(1)
    first = checkout.start(FAKE_RELEASE=str(release), BACKDOOR_REPRO_OUTPUT=str(tmp_path / "out_a"))
    second = checkout.start(FAKE_RELEASE=str(release), BACKDOOR_REPRO_OUTPUT=str(tmp_path / "out_b"))
    # both notebooks running at once, each writing its own running copy into notebooks/executed/smoke/
    wait_for(lambda: len(list(checkout.executed.glob(".*.running.ipynb"))) == 2, "two running notebooks",
             procs=[first, second])
    release.touch()
    for proc in (first, second):
        done = finish(proc, 100)
        assert done.returncode == 0, done.stderr
    for out in ("out_a", "out_b"):
        assert len(checkout.outputs(tmp_path / out)) == 5
    assert (checkout.executed / "attacks.ipynb").exists() and not list(checkout.executed.glob(".*.running.ipynb"))


# 4. undeclared parameters

def test_a_parameter_the_notebook_does_not_declare_is_refused(tmp_path):
    from backdoor_repro.orchestration.notebook_params import check_parameters, main
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(fake_notebook(1)))
    check_parameters(path, {"profile": "fast", "device": "cpu", "download": True})
    with pytest.raises(ValueError, match="does not declare the parameter lr in its parameters cell"):
        check_parameters(path, {"profile": "smoke", "lr": float("nan")})
    assert main([str(path), "-p", "profile", "smoke"]) == 0
    assert main([str(path), "-p", "profile", "smoke", "-p", "dry_run", "True", "-p", "lr", "nan"]) == 2
    without = tmp_path / "none.ipynb"  # no parameters cell: nothing can be passed
    nb = fake_notebook(1)
    nb["cells"][0]["metadata"]["tags"] = []
    without.write_text(json.dumps(nb))
    with pytest.raises(ValueError, match="declares: none"):
        check_parameters(without, ["profile"])


def test_every_notebook_declares_every_parameter_run_all_passes():
    from backdoor_repro.orchestration.notebook_params import check_parameters
    passed = ["profile", "device", "download", "data_root", "dataset", "attacks", "dry_run"]  # run_all.sh's -p
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        check_parameters(path, passed)


def test_run_all_refuses_an_option_the_notebook_has_no_parameter_for(checkout):
    checkout.write(1)  # declares profile, device, download; no dry_run
    refused = checkout.run("--profile", "fast", "--dry-run", timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert "attacks.ipynb does not declare the parameter dry_run" in refused.stderr
    assert "== attacks" not in refused.stdout and not checkout.executed.exists()


# 5. OpenMP threads sleep when waiting

def test_the_scripts_export_a_passive_omp_wait_policy_and_a_user_value_wins(monkeypatch):
    from backdoor_repro import numerics
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    for avx2 in (True, False):
        monkeypatch.setattr(numerics, "has_avx2", lambda: avx2)
        assert "export OMP_WAIT_POLICY=PASSIVE" in numerics.shell_exports()
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    lines = numerics.shell_exports()
    assert "export OMP_WAIT_POLICY=ACTIVE" in lines and not any("PASSIVE" in line for line in lines)

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    source = ["bash", "-c", 'source scripts/ensure_env.sh && echo "policy=$OMP_WAIT_POLICY"']
    for user, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        run_env = {**env, "BACKDOOR_REPRO_PYTHON": sys.executable, **({"OMP_WAIT_POLICY": user} if user else {})}
        out = subprocess.run(source, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and f"policy={expected}" in out.stdout, out.stderr


def test_pinning_threads_passes_the_wait_policy_to_child_processes(monkeypatch):
    from backdoor_repro.numerics import pin_cpu_threads
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    pin_cpu_threads()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    pin_cpu_threads()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


# 6. a deadline from the environment is named as such

def test_a_past_deadline_names_its_variable(monkeypatch):
    from backdoor_repro.deadline import DEADLINE_ENV, TimeBudgetExhausted, check_time_budget
    monkeypatch.setenv(DEADLINE_ENV, "1")
    with pytest.raises(TimeBudgetExhausted, match=f"{DEADLINE_ENV}=1 .* has passed.*rerun the same command"):
        check_time_budget("the start of a stage")


def test_run_all_names_a_deadline_from_the_environment(checkout):
    checkout.write(1)
    stopped = checkout.run(BACKDOOR_REPRO_DEADLINE="1", timeout=100)
    assert stopped.returncode == 75, stopped.stderr
    assert "BACKDOOR_REPRO_DEADLINE=1" in stopped.stderr and "--max-minutes" not in stopped.stderr
    assert "before notebook 'attacks'" in stopped.stderr and "Rerun the same command" in stopped.stderr


# 7. device strings

@pytest.mark.parametrize("device", ["cpu:7", "cuda:x", "cuda:", "gpu", "CUDA"])
def test_run_all_refuses_a_malformed_device(device):
    out = subprocess.run(["bash", "run_all.sh", "--device", device], cwd=REPO, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "BACKDOOR_REPRO_PYTHON": sys.executable})
    assert out.returncode == 2 and f"--device must be auto, cpu, cuda or cuda:N, got '{device}'" in out.stderr

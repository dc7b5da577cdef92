"""Validation before any compute: profiles, preflight and run_all.sh arguments."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backdoor_repro.profiles import PROFILES, check_device, get_profile

REPO = Path(__file__).resolve().parents[1]


def test_profiles_are_valid_and_list_their_deviations():
    for name in PROFILES:
        p = get_profile(name)
        assert p.deviations and p.model_deviations, name
    assert get_profile("smoke").requires_gpu is False and get_profile("fast").requires_gpu is True


def test_profile_errors():
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("tiny")
    with pytest.raises(ValueError, match="unknown profile parameter"):
        get_profile("smoke", epochs=3)
    with pytest.raises(ValueError, match="rate"):
        get_profile("smoke", attack_overrides={"rate": 1.5})
    with pytest.raises(ValueError, match="unknown profile parameter"):
        get_profile("smoke", table_attacks=("nope",))  # the attack lists live in the protocol records
    from backdoor_repro.records import ProtocolRecord
    with pytest.raises(ValueError, match="unknown attacks"):
        ProtocolRecord("x", {"smoke": ("nope",)})
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        check_device(get_profile("paper"), torch.device("cpu"))


def run(cmd, **env):
    full_env = {**os.environ, "BACKDOOR_REPRO_PYTHON": sys.executable, **env}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=full_env, timeout=120)


def test_preflight_reports_missing_dataset_with_the_three_ways(tmp_path):
    out = run([sys.executable, "-m", "backdoor_repro.orchestration.preflight", "--profile", "smoke"])
    assert out.returncode == 0, out.stderr
    from backdoor_repro.data import DatasetUnavailable, check_dataset_available

    with pytest.raises(DatasetUnavailable) as err:
        check_dataset_available("cifar10", tmp_path, download=False)
    msg = str(err.value)
    assert "--download" in msg and "torchvision copy" in msg and "image-folder tree" in msg


@pytest.mark.parametrize("args, message", [
    (["--profile", "huge"], "unknown profile"),
    (["--only", "nonexistent"], "unknown notebook"),
    (["--bogus"], "unknown option"),
    (["--data-root", "/no/such/dir"], "not a directory"),
])
def test_run_all_rejects_bad_input_before_compute(args, message):
    out = run(["bash", "run_all.sh", *args])
    assert out.returncode != 0
    assert message in out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_run_all_refuses_gpu_profile_on_cpu():
    out = run(["bash", "run_all.sh", "--profile", "fast", "--download"])
    assert out.returncode != 0 and "needs a CUDA GPU" in out.stderr


def test_run_all_lists_notebooks():
    out = run(["bash", "run_all.sh", "--list"])
    assert out.returncode == 0 and "attacks" in out.stdout.split()


def test_every_notebook_is_valid_nbformat_with_cell_ids():
    """A cell without an id makes nbformat warn on every run (and will be an error in a later nbformat)."""
    import json  # the file as written (nbformat's reader adds missing ids silently)
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        assert (nb["nbformat"], nb["nbformat_minor"]) >= (4, 5), path.name
        assert all("id" in cell for cell in nb["cells"]), path.name
        ids = [cell["id"] for cell in nb["cells"]]
        assert len(ids) == len(set(ids)), path.name


def test_every_test_has_a_time_limit(request):
    for item in request.session.items:
        marker = item.get_closest_marker("timeout")
        assert marker is not None and 0 < marker.args[0] <= 900, item.nodeid
    assert request.node.get_closest_marker("timeout").args[0] == 120


def test_a_hung_test_fails_in_seconds_with_its_name(tmp_path):
    """pytest-timeout's thread method ends even a test stuck outside Python bytecode, naming it."""
    (tmp_path / "test_hang.py").write_text("import time\n\ndef test_stuck_forever():\n    time.sleep(600)\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=2",
                          "-o", "timeout_method=thread", str(tmp_path / "test_hang.py")],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode != 0
    assert "Timeout" in out.stdout + out.stderr and "test_stuck_forever" in out.stdout + out.stderr


@pytest.mark.parametrize("args, message", [
    (["--device", "mps"], "device must be auto, cpu or cuda"),
    (["--device", "gpu0"], "device must be auto, cpu or cuda"),
    (["--data-root", "/tmp"], "not used by the smoke profile"),
    (["--download"], "not used by the smoke profile"),
])
def test_preflight_refuses_what_the_run_would_ignore_or_fail_on_later(args, message):
    out = run([sys.executable, "-m", "backdoor_repro.orchestration.preflight", "--profile", "smoke", *args])
    assert out.returncode == 2 and message in out.stderr, out.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_preflight_refuses_a_cache_it_cannot_write(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        out = run([sys.executable, "-m", "backdoor_repro.orchestration.preflight"], BACKDOOR_REPRO_CACHE=str(locked / "cache"))
    finally:
        locked.chmod(0o700)
    assert out.returncode == 2 and "cannot be written" in out.stderr and "BACKDOOR_REPRO_CACHE" in out.stderr


def test_preflight_refuses_a_cache_path_that_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = run([sys.executable, "-m", "backdoor_repro.orchestration.preflight"], BACKDOOR_REPRO_CACHE=str(blocker))
    assert out.returncode == 2 and "cannot be written" in out.stderr and "BACKDOOR_REPRO_CACHE" in out.stderr


def test_run_all_runs_a_notebook_named_twice_once():
    out = run(["bash", "run_all.sh", "--only", "attacks,attacks,dbd,attacks", "--device", "mps"])
    assert "notebooks: attacks dbd (smoke)" in out.stdout, out.stdout
    assert out.returncode != 0 and "device must be" in out.stderr  # stops at the preflight, before any notebook


def test_setup_lists_each_deviation_once_when_two_defenses_share_their_protocol(capsys):
    from backdoor_repro.defenses import get_defense
    from backdoor_repro.experiment import setup
    setup("smoke", defenses=("fct_dst", "fct_dbr"))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(" - ")]
    assert len(lines) == len(set(lines))
    shared = get_defense("fct_dst").deviations["smoke"][0]
    assert shared in get_defense("fct_dbr").deviations["smoke"] and f" - {shared}" in lines

"""CPU numerics: the thread count is pinned for every CPU run, and thread count and kernel family key every trained
artifact, so that a cache shared between machines never mixes results they compute differently."""
import os
import re
import subprocess
import sys

import pytest
import torch

from backdoor_repro import load_dataset
from backdoor_repro.numerics import CPU_THREADS, cpu_numerics, pinned_threads
from backdoor_repro.profiles import get_profile
from backdoor_repro.resolve import resolve


def test_setup_pins_the_thread_count_whatever_it_was():
    code = ("import torch; torch.set_num_threads(1); from backdoor_repro.experiment import setup; "
            "ex = setup('smoke', device='cpu', quiet=True); print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == str(CPU_THREADS)


def test_thread_count_and_kernel_family_key_every_cpu_artifact(smoke_train):
    spec = resolve(get_profile("smoke"), smoke_train, "grid3")
    assert spec.numerics == cpu_numerics()
    assert spec.numerics.startswith(f"{torch.backends.cpu.get_cpu_capability()}-{torch.get_num_threads()}t")
    other = spec.with_(numerics="AVX512-4t")
    assert spec.context_stage() != other.context_stage() and spec.no_defense_stage() != other.no_defense_stage()
    assert spec.data_stage() == other.data_stage()  # poison selection does not depend on numerics
    lc = resolve(get_profile("smoke"), smoke_train, "lc_dbd")  # its PGD images come from a trained model
    assert lc.data_stage() != lc.with_(numerics="AVX512-4t").data_stage()
    assert spec.with_(precision="bf16").no_defense_stage() != spec.no_defense_stage()  # the precision too


def test_a_bad_thread_override_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("BACKDOOR_REPRO_THREADS", "two")
    with pytest.raises(ValueError, match="BACKDOOR_REPRO_THREADS"):
        pinned_threads()


def test_the_kernel_caps_are_exported_on_avx2_machines_and_a_user_value_wins(monkeypatch):
    from backdoor_repro import numerics
    monkeypatch.setattr(numerics, "has_avx2", lambda: True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    for name in ("MKL_CBWR", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(name, raising=False)
    capped = numerics.export_lines()
    assert capped[:3] == ["export MKL_CBWR=COMPATIBLE", "export ONEDNN_MAX_CPU_ISA=SSE41",
                          "export ATEN_CPU_CAPABILITY=avx2"]
    monkeypatch.setattr(numerics, "has_avx2", lambda: False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    native = numerics.export_lines()
    assert len(native) == 1  # no caps; only the compile cache folder
    # kernels compiled under other caps live in another folder (inductor's cache key does not see the caps)
    assert capped[3].startswith("export TORCHINDUCTOR_CACHE_DIR=") and native[0].startswith("export TORCHINDUCTOR")
    assert capped[3] != native[0] and "ONEDNN_MAX_CPU_ISA_SSE41" in capped[3] and native[0].endswith("-native")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/mine")
    assert numerics.export_lines() == ["export TORCHINDUCTOR_CACHE_DIR=/somewhere/mine"]  # the user's folder wins
    monkeypatch.setattr(numerics, "mkl_branch", lambda: "COMPATIBLE")
    assert numerics.cpu_numerics().endswith("-mklCOMPATIBLE")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("requested", ["COMPATIBLE", "AVX2", ""])
def test_the_key_names_the_mkl_branch_mkl_runs_not_the_one_requested(requested):
    """MKL reads MKL_CBWR when it loads: a fresh process per setting. Its own verbose log names the branch of each
    call (``CNR:<branch>``); the key must name the same one (on AMD, AVX2 runs as AUTO)."""
    code = ("import torch; torch.set_num_threads(2); from backdoor_repro.numerics import mkl_branch, cpu_numerics; "
            "torch.nn.Linear(64, 10)(torch.randn(8, 64)); print('BRANCH', mkl_branch(), cpu_numerics())")
    env = {**os.environ, "MKL_CBWR": requested, "MKL_VERBOSE": "1"}
    if not requested:
        del env["MKL_CBWR"]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, env=env)
    assert out.returncode == 0, out.stderr
    branch, key = out.stdout.split("BRANCH ")[1].split()[:2]
    reported = set(re.findall(r"CNR:(\w+)", out.stdout + out.stderr))
    if reported:  # MKL's log names the branch it ran (OFF: MKL prints no CNR field, or OFF)
        assert reported == {branch} or (branch == "OFF" and reported <= {"OFF"})
    if requested == "COMPATIBLE":
        assert branch == "COMPATIBLE" and key.endswith("-mklCOMPATIBLE")
    assert key.endswith(f"-mkl{branch}")

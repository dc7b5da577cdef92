"""What decides CPU numerics, pinned and recorded.

On CPU, torch's results depend on the number of intra-op threads (how reductions are split) and on the kernels the
CPU selects. Measured on one smoke training (ResNet-18 at width 8, 2 epochs on 500 images, AMD EPYC with AVX2):
1, 2 and 4 threads gave three different sets of weights; so did ATen's scalar kernels against its AVX2 ones, and
MKL without a reproducibility branch against one; repeats at fixed settings were bit-identical. MKL's branches other
than AUTO and COMPATIBLE exist on Intel processors only: on an AMD CPU ``MKL_CBWR=AVX2`` runs the AUTO branch (Intel's
CNR documentation; MKL's own report, :func:`mkl_branch`, says AUTO here), so an Intel and an AMD machine ran different
sgemm code under it. COMPATIBLE is MKL's one branch meant to give the same results on Intel and compatible
processors (an SSE2 path). So:

* CPU runs pin the thread count (:data:`CPU_THREADS`, the CI machines' two cores; ``BACKDOOR_REPRO_THREADS``
  overrides it);
* ``run_all.sh`` and ``run_tests.sh`` cap the kernels on machines with AVX2 (:data:`KERNEL_CAPS`: MKL's COMPATIBLE
  branch, oneDNN and ATen at most AVX2; a value already set in the environment wins), so that machines of either
  vendor, with or without AVX-512, pick the same kernels (verified between two AMD machines; not yet on an Intel one);
* the kernel family, the MKL branch MKL reports running and the thread count join the key of every trained CPU
  artifact (:func:`cpu_numerics`), so that a cache shared between machines never mixes results computed differently;
* OpenMP threads that wait sleep instead of spinning (:data:`WAIT_POLICY`, ``OMP_WAIT_POLICY=PASSIVE``; a value
  already set wins). It changes no result; on a loaded 2-core machine spin-waiting threads starved the run (no
  checkpoint written in 110 min, where PASSIVE finished in 65). The OpenMP runtime reads it when it loads (with
  torch), so the scripts export it (:func:`shell_exports`) and :func:`pin_cpu_threads` sets it for child processes.

CUDA runs are not bit-reproducible (atomics in cuDNN / cuBLAS); they carry no such key.
``shell_exports()`` gives the shell exports of the caps for this machine and of the wait policy
(``scripts/ensure_env.sh`` evaluates them, through :func:`main`).
"""
from __future__ import annotations

import os
import shlex

CPU_THREADS = 2
KERNEL_CAPS = {"MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
# MKL_CBWR branch constants (mkl_cbwr.h) as MKL reports them
MKL_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2", 9: "AVX",
                10: "AVX2", 12: "AVX512"}
WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}


def pinned_threads() -> int:
    value = os.environ.get("BACKDOOR_REPRO_THREADS", str(CPU_THREADS))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"BACKDOOR_REPRO_THREADS must be a positive integer, got {value!r}")
    return int(value)


def pin_cpu_threads() -> int:
    """Set torch's intra-op thread count to the pinned value; returns it. Also sets :data:`WAIT_POLICY` (unless set)
    for the processes this one starts (kernels, workers): this process's OpenMP runtime has read it already."""
    import torch
    for name, value in WAIT_POLICY.items():
        os.environ.setdefault(name, value)
    threads = pinned_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx2" in line for line in f)
    except OSError:
        return False


def mkl_branch() -> str | None:
    """The reproducibility branch MKL runs (it may differ from ``MKL_CBWR``: on AMD, AVX2 runs as AUTO), read from
    the MKL linked into torch (``mkl_serv_cbwr_get``, which torch's CPU library exports); where it cannot be read,
    ``MKL_CBWR`` as set (None when unset)."""
    import ctypes
    import torch
    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        get = lib.mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return os.environ.get("MKL_CBWR") or None
    get.restype, get.argtypes = ctypes.c_int, [ctypes.c_int]
    value = get(1)  # MKL_CBWR_BRANCH
    return MKL_BRANCHES.get(value, f"branch{value}")


def cpu_numerics() -> str:
    """``<ATen kernels>-<threads>t[-mkl<branch>]``, e.g. ``AVX2-2t-mklCOMPATIBLE``: what a CPU artifact's numbers
    depend on besides its config and the torch version (the branch as MKL reports it; ``OFF``: none)."""
    import torch
    mkl = mkl_branch()
    return f"{torch.backends.cpu.get_cpu_capability()}-{torch.get_num_threads()}t" + (f"-mkl{mkl}" if mkl else "")


def inductor_cache_dir(caps: dict[str, str]) -> str:
    """torch.compile's cache folder for kernels built under ``caps`` (the KERNEL_CAPS values in force).

    Inductor's cache key leaves these variables out: kernels cached by a run without the caps (AVX-512 oneDNN
    layouts) and loaded by a run with them gave NaN weights (seen with torch 2.14.1; CI failed on it), so each set of
    caps gets its own folder beside inductor's default one."""
    import getpass
    import tempfile
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid_{os.getuid()}"
    tag = "-".join(f"{name}_{caps[name]}" for name in sorted(caps)) or "native"
    return os.path.join(tempfile.gettempdir(), f"torchinductor_{user}-{tag}")


def active_caps() -> dict[str, str]:
    return {name: os.environ[name] for name in KERNEL_CAPS if name in os.environ}


def keep_inductor_cache_apart() -> str:
    """Point torch.compile's cache at :func:`inductor_cache_dir` of the caps in force, unless the user chose one."""
    return os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", inductor_cache_dir(active_caps()))


def export_lines() -> list[str]:
    """The caps as shell ``export`` lines (none on a machine without AVX2; a value already set is kept), and the
    compile cache folder of those caps (:func:`inductor_cache_dir`; a folder already set is kept)."""
    caps = {name: os.environ.get(name, value) for name, value in KERNEL_CAPS.items()} if has_avx2() else active_caps()
    lines = [f"export {name}={value}" for name, value in caps.items()] if has_avx2() else []
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR", inductor_cache_dir(caps))
    return lines + [f"export TORCHINDUCTOR_CACHE_DIR={shlex.quote(cache)}"]


def shell_exports() -> list[str]:
    """:func:`export_lines`, then the wait policy (:data:`WAIT_POLICY`; a value already set is kept)."""
    policy = [f"export {name}={shlex.quote(os.environ.get(name, value))}" for name, value in WAIT_POLICY.items()]
    return export_lines() + policy


def main(argv=None) -> int:
    """Print :func:`shell_exports` (``scripts/ensure_env.sh`` evaluates them)."""
    print("\n".join(shell_exports()))
    return 0

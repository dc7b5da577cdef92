"""One bounded session on a fresh GPU machine: is it set up, does every fast code path run there, how fast is it,
and a first real ``fast`` result, all inside a wall-clock budget, packed into one archive to bring back.

    python3 scripts/gpu_session.py                          # on the GPU machine, from the repository root
    python3 scripts/gpu_session.py --budget 3000 --data-root ~/cifar10 --slice "--only attacks"
    python3 scripts/gpu_session.py --rehearse --out /tmp/s  # the same session on this CPU, every step cut down

Steps, in the order given by ``--steps`` (default ``env,dryrun,bench,slice,bench_all``), each with a time cap and a
minimum, so a short lease is spent on the most useful work first and a step that no longer fits is skipped, not started:
  env        interpreter, packages, torch, CUDA, GPU name, free memory; a bf16 matrix product checked against fp32
  dryrun     ``run_all.sh --profile fast --dry-run --device cuda``: every notebook's fast code path at full width, bf16,
             on 100 bundled images; failed notebooks come back with their tracebacks
  bench      ``scripts/benchmark.py --stage supervised`` on the full training set (ours against the torchvision
             DataLoader pipeline in the same run)
  slice      a real ``run_all.sh --profile fast`` slice (``--slice``, default one attack of the attacks notebook) on the
             full dataset, stopped cleanly at the budget (exit 75: nothing published, the cache keeps its progress)
  bench_all  the benchmark's other stage kinds (SimCLR, MixMatch, T&R's trap, SS-CTL, FMP's ranking), one run each

Before the steps (always): the offline wheels in ``.device/wheels`` (Jupyter stack; ``scripts/prepare_gpu_session.sh``
puts them there) are installed into a private folder on ``PYTHONPATH``, ``lib/`` is put on it, a ``python3`` kernel
spec is made if none is found, and ``.device/cifar10-jpeg.tar.gz`` is unpacked. After them (always): ``summary.json``
(every step's status, exit code and seconds; GPU, torch, commit), ``session.log`` (everything the steps printed) and
``results.tar.gz`` (the tables, figures and executed notebooks written, benchmark JSONs, the dry run's failures) are
written to ``--out`` (``$OUT`` when set), each under 16 MiB. ``scripts/collect_gpu_session.py`` files them into the
repository. Only the standard library is used here: this script runs before anything is installed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEVICE_DIR = REPO / ".device"  # ignored by git; carried to the GPU machine
TIME_BUDGET_EXIT = 75  # run_all.sh: stopped at the budget, progress saved
MAX_FILE_BYTES = 15 * 2**20  # what comes back: at most 16 MiB a file
PACK_RESERVE_S = 30  # kept for stopping a step that overran (KILL_GRACE_S) and writing the summary and the archive
KILL_GRACE_S = 5  # SIGTERM, then this long, then SIGKILL
STOP_MARGIN_S = 60  # a run_all.sh step's own deadline comes this long before its cap: it stops cleanly first
PER_RUN_FOLDERS = ("dryrun", "outputs", "outputs-rehearsal", "bench")  # cleared at the start; cache, data, site kept
DEFAULT_SLICE = "--only attacks --attacks badnets_dbd_2x2"
STEPS = ("env", "dryrun", "bench", "slice", "bench_all")

# (stage, images, cap seconds), each its own benchmark.py run, so a cap or a failure loses only that stage. ``bench``:
# the supervised loop on the full training set (issue 11's target; the first run decodes the 50,000 JPEG files once,
# into the cache the slice reads too). ``bench_all``, after the slice: each other stage kind on 10,000 images; FMP's
# ranking ranks all 4,800 maps of the width-64 network twice each way (a warm-up and the timed run), so it comes last.
BENCH_PLANS = {"bench": (("supervised", 50000, 120),),
               "bench_all": (("simclr", 10000, 60), ("mixmatch", 10000, 60), ("tr_trap", 10000, 45),
                             ("ssctl", 10000, 60), ("fmp_rank", 2000, 90))}
# the mechanics only: on 2 CPU cores FMP's ranking alone takes 70 s
REHEARSAL_BENCH_PLANS = {"bench": (("supervised", 256, 60),), "bench_all": (("tr_trap", 512, 60),)}

ENV_CHECK = r"""
import json, platform, sys, time
import torch
info = {"python": platform.python_version(), "executable": sys.executable, "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
for name in ("torchvision", "numpy", "pandas", "matplotlib", "seaborn", "sklearn", "tabulate", "tqdm", "papermill",
             "nbformat", "ipykernel", "submitit", "backdoor_repro"):
    try:
        info[name] = getattr(__import__(name), "__version__", "present")
    except Exception as error:  # a missing package is reported, not fatal: the steps that need it fail on their own
        info[name] = f"MISSING: {error}"
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    free, total = torch.cuda.mem_get_info()
    info.update(gpu=torch.cuda.get_device_name(0), capability=f"{props.major}.{props.minor}",
                multiprocessors=props.multi_processor_count, memory_free_gib=round(free / 2**30, 1),
                memory_total_gib=round(total / 2**30, 1))
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(4096, 4096, device="cuda", generator=g)
    b = torch.randn(4096, 4096, device="cuda", generator=g)
    reference = a @ b
    with torch.autocast("cuda", dtype=torch.bfloat16):
        product = a @ b
    torch.cuda.synchronize()
    info["bf16_matmul_rel_error"] = float((product.float() - reference).norm() / reference.norm())
    start = time.perf_counter()
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            a @ b
    torch.cuda.synchronize()
    info["bf16_matmul_tflops"] = round(20 * 2 * 4096**3 / (time.perf_counter() - start) / 1e12, 1)
print("ENV " + json.dumps(info))
"""


@dataclass
class Session:
    out: Path
    work: Path
    deadline: float
    rehearse: bool = False
    log_path: Path = field(init=False)
    records: list = field(default_factory=list)
    env: dict = field(default_factory=dict)

    def __post_init__(self):
        self.out.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)
        for name in PER_RUN_FOLDERS:  # an earlier session's outputs on the same machine are not this one's
            shutil.rmtree(self.work / name, ignore_errors=True)
        self.log_path = self.out / "session.log"
        self.log_path.write_text("")

    def remaining(self) -> float:
        return self.deadline - time.time() - PACK_RESERVE_S

    def log(self, text: str) -> None:
        with self.log_path.open("a") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    def run(self, step: str, what: str, cmd: list[str], env: dict, cap: float, minimum: float = 10) -> dict:
        """Run ``cmd`` for at most ``cap`` seconds (less if the budget is shorter); skip it when under ``minimum``
        seconds are left. Its output goes to the log; a record of the outcome is kept and printed. Exit 0 is ``ok``,
        75 ``stopped_at_budget`` (run_all.sh stopped cleanly), anything else ``failed``; over the cap, ``timeout``."""
        allowed = min(cap, self.remaining())
        record = {"step": step, "what": what, "command": " ".join(shlex.quote(c) for c in cmd)}
        if allowed < minimum:
            record.update(status="skipped", seconds=0, note=f"{max(allowed, 0):.0f} s left, needs {minimum:.0f}")
            return self._keep(record)
        self.log(f"\n===== {step}: {what} (cap {allowed:.0f} s)\n$ {record['command']}")
        started = time.time()
        with self.log_path.open("a") as log:
            try:
                process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
            except OSError as error:  # no such program or interpreter: this step failed, the session goes on
                log.write(f"cannot start: {error}\n")
                record.update(status="failed", rc=None, seconds=0.0, note=str(error))
                return self._keep(record)
            try:
                rc = process.wait(timeout=allowed)
                status = {0: "ok", TIME_BUDGET_EXIT: "stopped_at_budget"}.get(rc, "failed")
            except subprocess.TimeoutExpired:
                stop_tree(process)
                rc, status = None, "timeout"
        record.update(status=status, rc=rc, seconds=round(time.time() - started, 1))
        return self._keep(record)

    def _keep(self, record: dict) -> dict:
        self.records.append(record)
        note = f" ({record['note']})" if record.get("note") else ""
        print(f"[{record['step']:9s}] {record['what']}: {record['status']}"
              f"{'' if record.get('rc') in (None, 0) else ' rc ' + str(record['rc'])} in {record['seconds']} s{note}",
              flush=True)
        return record


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc), also those in sessions of their own: papermill's kernel, which
    does the GPU work, is started in a new session, out of reach of its parent's process group."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def stop_tree(process: subprocess.Popen) -> None:
    """SIGTERM to the step's process group and every descendant, then after ``KILL_GRACE_S`` SIGKILL to all of them."""
    targets = descendants(process.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for send in [lambda s: os.killpg(process.pid, s)] + [lambda s, p=p: os.kill(p, s) for p in targets]:
            try:
                send(sig)
            except (ProcessLookupError, PermissionError):
                pass
        if sig == signal.SIGTERM:
            time.sleep(KILL_GRACE_S)
    process.wait()


def setup_environment(session: Session, python: str, wheels: Path, archive: Path, data_root: str | None) -> dict:
    """The environment every step runs in, and the data root; what was done goes to the log."""
    env = dict(os.environ)
    site = session.work / "site"
    paths = [str(REPO / "lib")]
    has_stack = subprocess.run([python, "-c", "import papermill, nbformat, ipykernel"], capture_output=True).returncode == 0
    if sorted(wheels.glob("*.whl")) and not has_stack:  # a machine that has the Jupyter stack keeps its own
        session.run("setup", "install the offline wheels", [python, "-m", "pip", "install", "-q", "--no-index",
                    "--no-deps", "--no-compile", "--upgrade", "--target", str(site), *map(str, sorted(wheels.glob(
                        "*.whl")))], env, cap=120, minimum=0)
        paths.append(str(site))
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(BACKDOOR_REPRO_PYTHON=python, PYTHONUNBUFFERED="1", MPLBACKEND="Agg",
               BACKDOOR_REPRO_CACHE=str(session.work / "cache"), BACKDOOR_REPRO_OUTPUT=str(session.work / "outputs"))
    commit_file = DEVICE_DIR / "COMMIT"
    if commit_file.exists() and not env.get("BACKDOOR_REPRO_COMMIT"):
        env["BACKDOOR_REPRO_COMMIT"] = commit_file.read_text().strip()
    has_kernel = ("from jupyter_client.kernelspec import KernelSpecManager as K; "
                  "K().get_kernel_spec('python3')")
    if subprocess.run([python, "-c", has_kernel], env=env, capture_output=True).returncode != 0:
        session.run("setup", "make the python3 kernel spec", [python, "-m", "ipykernel", "install", "--user",
                    "--name", "python3"], env, cap=60, minimum=0)
    if data_root is None and archive.exists() and not session.rehearse:
        unpacked = session.work / "data" / "cifar10-jpeg"  # complete or absent: unpacked beside it, then renamed
        if not unpacked.is_dir():
            partial = session.work / "data-unpacking"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            record = session.run("setup", "unpack CIFAR-10 (JPEG)", ["tar", "xzf", str(archive), "-C", str(partial)],
                                 env, cap=120, minimum=0)
            if record["status"] == "ok" and (partial / "cifar10-jpeg").is_dir():
                unpacked.parent.mkdir(parents=True, exist_ok=True)
                (partial / "cifar10-jpeg").rename(unpacked)
            shutil.rmtree(partial, ignore_errors=True)
        data_root = str(unpacked) if unpacked.is_dir() else None
    return {"env": env, "data_root": data_root}


def step_env(session: Session, python: str, env: dict) -> None:
    record = session.run("env", "interpreter, packages, GPU", [python, "-c", ENV_CHECK], env, cap=90, minimum=5)
    for line in reversed(session.log_path.read_text().splitlines()):
        if line.startswith("ENV "):
            session.env = json.loads(line[4:])
            break
    if session.env:
        gpu = session.env.get("gpu", "no GPU")
        record["note"] = (f"{gpu}, torch {session.env.get('torch')}, bf16 matmul "
                          f"{session.env.get('bf16_matmul_tflops', '-')} TFLOP/s")
        print(f"            {record['note']}", flush=True)
        missing = [k for k, v in session.env.items() if isinstance(v, str) and v.startswith("MISSING")]
        if missing:
            print(f"            missing packages: {', '.join(missing)}", flush=True)


DRYRUN_CAP_S = 240  # every notebook's dry run together (leaves the real slice its 120 s)


def step_dryrun(session: Session, env: dict, device: str, only: str | None) -> None:
    """One ``run_all.sh --dry-run`` per notebook (run_all.sh stops at the first failure: one call for all would bring
    back one traceback and leave the later notebooks unchecked), sharing one output folder and cache."""
    notebooks = only.split(",") if only else subprocess.run(["./run_all.sh", "--list"], cwd=REPO, capture_output=True,
                                                             text=True).stdout.split()
    step_end = time.time() + min(DRYRUN_CAP_S, session.remaining())
    run_env = dict(env, BACKDOOR_REPRO_OUTPUT=str(session.work / "dryrun"))
    for notebook in notebooks:
        allowed = step_end - time.time()
        run_env["BACKDOOR_REPRO_DEADLINE"] = str(int(time.time() + allowed - 15))
        session.run("dryrun", f"{notebook} (fast, every code path, 100 images)",
                    ["./run_all.sh", "--profile", "fast", "--dry-run", "--device", device, "--only", notebook],
                    run_env, cap=allowed, minimum=20)


def step_bench(session: Session, step: str, python: str, env: dict, device: str, data_root: str | None) -> None:
    results = session.work / "bench"
    results.mkdir(exist_ok=True)
    plan = (REHEARSAL_BENCH_PLANS if session.rehearse else BENCH_PLANS)[step]
    for stage, n, cap in plan:
        cmd = [python, "scripts/benchmark.py", "--stage", stage, "--n", str(n), "--device", device,
               "--out", str(results / f"{stage}.json")]
        cmd += ["--width", "8", "--workers", "1"] if session.rehearse else ["--width", "64", "--workers", "8"]
        if data_root and not session.rehearse:
            cmd += ["--data-root", data_root]
        record = session.run(step, f"{stage} on {n} images", cmd, env, cap=cap, minimum=min(cap, 30))
        try:
            result = json.loads((results / f"{stage}.json").read_text())["results"][0]
        except (OSError, ValueError, KeyError, IndexError):
            continue  # failed, cut off or skipped: the record says so
        record["note"] = (f"ours {result['ours_per_s']:.0f} / baseline {result['baseline_per_s']:.0f} "
                          f"{result['unit']}, x{result['speedup']}")
        print(f"            {record['note']}", flush=True)


def step_slice(session: Session, env: dict, device: str, data_root: str | None, slice_args: str) -> None:
    allowed = session.remaining()
    run_env = dict(env, BACKDOOR_REPRO_OUTPUT=str(session.work / "outputs"),
                   BACKDOOR_REPRO_DEADLINE=str(int(time.time() + allowed - STOP_MARGIN_S)))
    cmd = ["./run_all.sh", "--profile", "fast", "--device", device, *shlex.split(slice_args)]
    if session.rehearse:  # the fast profile needs a GPU: the rehearsal runs the same slice as a dry run
        run_env["BACKDOOR_REPRO_OUTPUT"] = str(session.work / "outputs-rehearsal")
        cmd.append("--dry-run")
    elif data_root:
        cmd += ["--data-root", data_root]
    session.run("slice", f"fast {slice_args}", cmd, run_env, cap=allowed, minimum=STOP_MARGIN_S + 60)


def pack(session: Session, started: float, args) -> None:
    """summary.json, and results.tar.gz of what the steps wrote (shrunk until it fits one returned file)."""
    summary = {"started": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started)) + " UTC",
               "wall_seconds": round(time.time() - started, 1), "budget_seconds": args.budget,
               "rehearsal": session.rehearse, "host": platform.node(), "slice": args.slice,
               "commit": os.environ.get("BACKDOOR_REPRO_COMMIT") or _read(DEVICE_DIR / "COMMIT") or "unknown",
               "environment": session.env, "steps": session.records}
    (session.out / "summary.json").write_text(json.dumps(summary, indent=1))
    members = _result_members(session.work, started)
    archive = session.out / "results.tar.gz"
    for level, keep in enumerate(ARCHIVE_LEVELS):
        with tarfile.open(archive, "w:gz") as tar:
            for arcname, path in members:
                if keep(arcname):
                    tar.add(path, arcname=arcname)
        if archive.stat().st_size <= MAX_FILE_BYTES:
            break
    summary.update(archive_level=ARCHIVE_LEVEL_NAMES[level], archive_bytes=archive.stat().st_size,
                   archive_fits=archive.stat().st_size <= MAX_FILE_BYTES)
    (session.out / "summary.json").write_text(json.dumps(summary, indent=1))
    log = session.log_path
    if log.stat().st_size > MAX_FILE_BYTES:  # keep the end, where the failures are
        log.write_bytes(log.read_bytes()[-MAX_FILE_BYTES:])


def _failure(name: str) -> bool:
    return "/failed/" in name


def _text(name: str) -> bool:
    return name.endswith((".csv", ".json", ".md", ".tex", ".txt"))


# what results.tar.gz keeps, from everything down to the text alone, until it fits one returned file: the dry run's
# failed notebooks (their tracebacks) go last
ARCHIVE_LEVEL_NAMES = ("everything", "no PDFs", "no PDFs, no executed notebooks but failed ones",
                       "text and failed notebooks", "text only")
ARCHIVE_LEVELS = (lambda n: True,
                  lambda n: not n.endswith(".pdf"),
                  lambda n: not n.endswith(".pdf") and (not n.endswith(".ipynb") or _failure(n)),
                  lambda n: _text(n) or (n.endswith(".ipynb") and _failure(n)),
                  _text)


def _read(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


def _result_members(work: Path, since: float) -> list[tuple[str, Path]]:
    """(name in the archive, file): the slice's and the dry run's tables, figures and executed notebooks, and the
    benchmark JSONs, under names that say where they came from. run_all.sh writes a real run's executed notebooks
    into the checkout (notebooks/executed/<run>/; those written since ``since`` only: the checkout also holds the
    committed ones), the rest under the output folders the session chose."""
    executed = REPO / "notebooks" / "executed"
    sources = [(work / "outputs", "run"), (work / "outputs-rehearsal", "run"), (work / "dryrun", "dryrun"),
               (work / "bench", "bench")]
    sources += [(folder, f"run/notebooks/executed/{folder.name}") for folder in sorted(executed.glob("*"))
                if folder.is_dir() and folder.name.split("-")[0] in ("fast", "paper")]
    members = []
    for source, prefix in sources:
        if not source.is_dir():
            continue
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source)
            if not path.is_file() or any(p.startswith(".") for p in relative.parts):
                continue  # the cache, staging folders, running notebooks and temp files stay behind
            if source.is_relative_to(executed) and path.stat().st_mtime < since:
                continue
            members.append((f"{prefix}/{relative.as_posix()}", path))
    return members


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=540, help="wall seconds for the whole session (default 540: a "
                    "600-s command limit, less the packing and the transfer back)")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, in order (default {','.join(STEPS)})")
    ap.add_argument("--slice", default=DEFAULT_SLICE, help=f"run_all.sh arguments of the slice (default '{DEFAULT_SLICE}')")
    ap.add_argument("--data-root", default=None, help="full CIFAR-10 (default: .device/cifar10-jpeg.tar.gz unpacked)")
    ap.add_argument("--dryrun-only", default=None, help="notebooks of the dry run (default: all)")
    ap.add_argument("--wheels", default=str(DEVICE_DIR / "wheels"),
                    help="offline wheels of the Jupyter stack, installed where it is missing (default .device/wheels)")
    ap.add_argument("--python", default=sys.executable, help="the interpreter that has torch (default: this one)")
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu-session-out", help="where the results go ($OUT)")
    ap.add_argument("--work", default=None, help="scratch: cache, outputs, unpacked data (default /tmp/...)")
    ap.add_argument("--rehearse", action="store_true", help="on the CPU, every step cut down (checks the mechanics)")
    args = ap.parse_args(argv)
    steps = [s for s in args.steps.split(",") if s]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown or args.budget < 60:
        ap.error(f"unknown steps {unknown}; choose from {', '.join(STEPS)}" if unknown else "--budget is under 60 s")
    started = time.time()
    work = Path(args.work or f"/tmp/backdoor-gpu-session{'-rehearsal' if args.rehearse else ''}")
    session = Session(out=Path(args.out).resolve(), work=work.resolve(), deadline=started + args.budget,
                      rehearse=args.rehearse)
    device = "cpu" if args.rehearse else "cuda"
    print(f"GPU session: budget {args.budget} s, steps {','.join(steps)}, results to {session.out}", flush=True)
    try:
        setup = setup_environment(session, args.python, Path(args.wheels), DEVICE_DIR / "cifar10-jpeg.tar.gz",
                                  args.data_root)
        env, data_root = setup["env"], setup["data_root"]
        for step in steps:
            if step == "env":
                step_env(session, args.python, env)
            elif step == "dryrun":
                step_dryrun(session, env, device, args.dryrun_only or ("attacks" if args.rehearse else None))
            elif step in BENCH_PLANS:
                step_bench(session, step, args.python, env, device, data_root)
            elif step == "slice":
                step_slice(session, env, device, data_root, args.slice)
    finally:  # whatever happened, what was done comes back
        pack(session, started, args)
    # a dry run stopped at the budget left notebooks unchecked: not a success; a slice that did is (it resumes)
    failed = [r for r in session.records if r["status"] in ("failed", "timeout") or
              (r["step"] == "dryrun" and r["status"] == "stopped_at_budget")]
    print(f"done in {time.time() - started:.0f} s: {len(session.records) - len(failed)} of {len(session.records)} "
          f"commands ended well; {session.out}/summary.json, results.tar.gz, session.log", flush=True)
    if failed:  # the end of the log, where a failure's traceback is, lands in the reply's output tail
        print("---- end of session.log ----")
        print("\n".join(session.log_path.read_text().splitlines()[-60:]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

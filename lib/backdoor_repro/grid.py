"""The defense x attack grid: every cell (defense, attack, dataset, seed) is one job that builds, or takes from the
artifact cache, the poisoned set, the No-Defense model and the defense's stages, evaluates the defended model and
writes one record. A done cell is skipped on rerun; a failed cell is recorded with its error and does not stop
the others; rerunning runs only what is missing or failed. Jobs run in this process (``inline``), as local
processes through submitit (``local``: one or more cells per GPU, or CPU processes), or as a SLURM job array
(``slurm``) on a cluster that shares the repository and the cache; ``--dry-run`` prints the jobs (and the SLURM
submission script) without running anything::

    python -m backdoor_repro.grid --profile fast --defenses none,ft,fmp --attacks white3_bb,blend_kitty_bb \\
        --executor local --cells-per-gpu 2
    python -m backdoor_repro.grid --profile paper --executor slurm --partition gpu --time-min 240 --dry-run

Cells run under each defense's own protocol (its paper's model and schedule); the common protocol (one
architecture, rate and target for every cell) is not built yet. ``plumbing=True`` checks the machinery on a
20-image-per-class subset, a width-4 network and each defense's shortened config: its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

EXECUTORS = ("inline", "local", "slurm")


@dataclass(frozen=True)
class Cell:
    defense: str
    attack: str
    dataset: str = "default"  # the profile's dataset; or "cifar100", "gtsrb" on fast / paper
    seed: int = 0

    @property
    def id(self) -> str:
        return f"{self.defense}__{self.attack}__{self.dataset}__seed{self.seed}"


@dataclass(frozen=True)
class GridSettings:
    profile: str = "smoke"
    data_root: str | None = None
    device: str = "auto"
    data_seed: int = 0
    plumbing: bool = False  # tiny subset, width 4, shortened configs: checks the machinery, not the numbers
    cache_root: str | None = None  # the artifact cache (default: BACKDOOR_REPRO_CACHE or <repo>/.cache)


def make_cells(defenses, attacks, datasets=("default",), seeds=(0,)) -> list[Cell]:
    """The cross product, every key checked before any compute."""
    from .attacks import ATTACKS
    from .defenses import DEFENSES
    unknown = [d for d in defenses if d not in DEFENSES] + [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown defense or attack: {', '.join(unknown)}")
    if not defenses or not attacks:
        raise ValueError("a grid needs at least one defense and one attack")
    bad_seeds = [s for s in seeds if not isinstance(s, int) or s < 0]
    if bad_seeds:
        raise ValueError(f"seeds must be non-negative integers, got {bad_seeds}")
    return [Cell(d, a, ds, s) for ds in datasets for s in seeds for a in attacks for d in defenses]


class GridStore:
    """``root/cells/<id>.json`` for done cells, ``root/failed/<id>.json`` for failed ones (written atomically)."""

    def __init__(self, root):
        self.root = Path(root)

    def _path(self, kind: str, cell: Cell) -> Path:
        return self.root / kind / f"{cell.id}.json"

    def done(self, cell: Cell) -> bool:
        return self._path("cells", cell).exists()

    def read(self, cell: Cell) -> dict:
        return json.loads(self._path("cells", cell).read_text())

    def _write(self, kind: str, cell: Cell, record: dict) -> None:
        path = self._path(kind, cell)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
        os.replace(tmp, path)

    def write_done(self, cell: Cell, record: dict) -> None:
        self._write("cells", cell, record)
        self._path("failed", cell).unlink(missing_ok=True)

    def write_failed(self, cell: Cell, error: BaseException) -> None:
        self._write("failed", cell, {"cell": asdict(cell), "error": f"{type(error).__name__}: {error}",
                                     "traceback": traceback.format_exc(), "when": time.strftime("%Y-%m-%d %H:%M:%S")})

    def records(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.root / "cells").glob("*.json"))]

    def failures(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.root / "failed").glob("*.json"))]


def _experiment(cell: Cell, settings: GridSettings):
    from .cache import ArtifactCache
    from .data import class_balanced_subset
    from .experiment import setup
    ex = setup(settings.profile, settings.data_root, False, settings.device, settings.data_seed, cell.seed,
               defenses=(cell.defense,), quiet=True, dataset=None if cell.dataset == "default" else cell.dataset)
    if settings.cache_root is not None:
        ex.cache = ArtifactCache(settings.cache_root)
    if settings.plumbing:
        ex.train, ex.test = class_balanced_subset(ex.train, 20), class_balanced_subset(ex.test, 5)
    return ex


def compute_cell(cell: Cell, settings: GridSettings) -> dict:
    """Build (or reuse) everything the cell needs, run the defense, evaluate; the cell's record."""
    import torch

    from .defenses import get_defense
    from .train import TrainConfig
    started = time.perf_counter()
    ex = _experiment(cell, settings)
    defense = get_defense(cell.defense)
    cfg = defense.config(ex.profile.name)
    if settings.plumbing:
        spec = ex.spec(cell.attack, defense=cell.defense, rate=0.2).with_(
            width=4, supervised=TrainConfig(epochs=1, batch_size=50, lr=0.05, schedule="cosine", augmentation="none"))
        cfg = defense.shortened(cfg)
    else:
        spec = ex.spec(cell.attack, defense=cell.defense)
    result = ex.run(cell.defense, spec, cfg)
    metrics = ex.evaluate(result.model, spec)
    return {"cell": asdict(cell), "profile": ex.profile.name, "dataset": ex.profile.dataset,
            "plumbing": settings.plumbing, "model": spec.model, "width": spec.width, "metrics": metrics,
            "stage_seconds": {k: round(r.seconds, 2) for k, r in result.stages.items()},
            "seconds": round(time.perf_counter() - started, 2), "device": str(ex.device), "torch": torch.__version__,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def run_cell(cell: Cell, settings: GridSettings, store_root: str, gpu: int | None = None) -> dict:
    """One job: skip if done; else compute and record, or record the failure and re-raise."""
    if gpu is not None:  # before CUDA is initialised in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    store = GridStore(store_root)
    if store.done(cell):
        return store.read(cell)
    try:
        record = compute_cell(cell, settings)
    except Exception as error:
        store.write_failed(cell, error)
        raise
    store.write_done(cell, record)
    return record


@dataclass
class GridReport:
    ran: list[str]
    skipped: list[str]
    failed: dict[str, str]  # cell id -> error

    def summary(self) -> str:
        lines = [f"{len(self.ran)} ran, {len(self.skipped)} already done, {len(self.failed)} failed"]
        lines += [f"  FAILED {cid}: {err}" for cid, err in self.failed.items()]
        return "\n".join(lines)


def _submitit_local(store_root: Path, timeout_min: int):
    import submitit
    executor = submitit.LocalExecutor(folder=str(store_root / "jobs" / "%j"))
    executor.update_parameters(timeout_min=timeout_min)
    return executor


def run_grid(cells: list[Cell], settings: GridSettings, store_root, executor: str = "inline", workers: int = 1,
             gpus: int = 0, timeout_min: int = 600, log=print) -> GridReport:
    """Run the cells that are not done yet. ``local``: at most ``workers`` processes at once; with ``gpus`` > 0
    job slot i gets GPU i mod ``gpus`` (``workers`` = GPUs x cells per GPU)."""
    if executor not in ("inline", "local"):
        raise ValueError(f"run_grid runs 'inline' or 'local'; use submit_slurm for SLURM (got {executor!r})")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    store_root = Path(store_root)
    store = GridStore(store_root)
    todo = [c for c in cells if not store.done(c)]
    report = GridReport([], [c.id for c in cells if store.done(c)], {})
    log(f"grid: {len(cells)} cells, {len(report.skipped)} done, {len(todo)} to run ({executor}, {workers} worker(s))")
    if executor == "inline":
        for cell in todo:
            try:
                run_cell(cell, settings, str(store_root))
                report.ran.append(cell.id)
            except Exception as error:
                report.failed[cell.id] = f"{type(error).__name__}: {error}"
            log(f"  {cell.id}: {'FAILED' if cell.id in report.failed else 'done'}")
        return report
    pool, running, queue = _submitit_local(store_root, timeout_min), {}, list(todo)
    free_slots = list(range(workers))
    while queue or running:
        while queue and free_slots:
            cell, slot = queue.pop(0), free_slots.pop(0)
            gpu = slot % gpus if gpus > 0 else None
            running[cell] = (pool.submit(run_cell, cell, settings, str(store_root), gpu), slot)
        finished = [c for c, (job, _) in running.items() if job.done()]
        for cell in finished:
            job, slot = running.pop(cell)
            free_slots.append(slot)
            try:
                job.result()
                report.ran.append(cell.id)
            except Exception as error:  # the job's own failure record holds the traceback
                report.failed[cell.id] = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
            log(f"  {cell.id}: {'FAILED' if cell.id in report.failed else 'done'} "
                f"({len(report.ran)} done, {len(running)} running, {len(report.failed)} failed, {len(queue)} queued)")
        if not finished:
            time.sleep(0.5)
    return report


def slurm_script(n_cells: int, store_root, partition: str | None, gpus_per_node: int, time_min: int,
                 parallelism: int, cpus_per_task: int | None = None) -> str:
    """The sbatch script submitit writes for the job array (what ``--dry-run`` prints)."""
    from submitit.slurm.slurm import _make_sbatch_string
    folder = Path(store_root) / "jobs" / "%A_%a"
    command = f"{sys.executable} -u -m submitit.core._submit {folder}"
    return _make_sbatch_string(command=command, folder=folder, job_name="backdoor_grid", partition=partition,
                               time=time_min, gpus_per_node=gpus_per_node or None, cpus_per_task=cpus_per_task,
                               array_parallelism=parallelism, map_count=n_cells)


def submit_slurm(cells: list[Cell], settings: GridSettings, store_root, partition: str | None, gpus_per_node: int,
                 time_min: int, parallelism: int, cpus_per_task: int | None = None):
    """Submit the cells that are not done as one SLURM job array; returns the submitit jobs."""
    import submitit
    store = GridStore(store_root)
    todo = [c for c in cells if not store.done(c)]
    executor = submitit.AutoExecutor(folder=str(Path(store_root) / "jobs" / "%A_%a"), cluster="slurm")
    executor.update_parameters(slurm_partition=partition, gpus_per_node=gpus_per_node, timeout_min=time_min,
                               slurm_array_parallelism=parallelism, cpus_per_task=cpus_per_task)
    n = len(todo)
    return executor.map_array(run_cell, todo, [settings] * n, [str(store_root)] * n)


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backdoor_repro.grid", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke", choices=("smoke", "fast", "paper"))
    ap.add_argument("--defenses", required=True, help="comma-separated defense keys")
    ap.add_argument("--attacks", required=True, help="comma-separated attack keys")
    ap.add_argument("--datasets", default="default", help="comma-separated; 'default' = the profile's dataset")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="the grid's folder (default: <cache>/grid/<profile>)")
    ap.add_argument("--executor", default="inline", choices=EXECUTORS)
    ap.add_argument("--workers", type=int, default=None, help="local: processes at once (default: GPUs x cells)")
    ap.add_argument("--cells-per-gpu", type=int, default=1)
    ap.add_argument("--partition", default=None)
    ap.add_argument("--gpus-per-node", type=int, default=1)
    ap.add_argument("--cpus-per-task", type=int, default=None)
    ap.add_argument("--time-min", type=int, default=240)
    ap.add_argument("--array-parallelism", type=int, default=64)
    ap.add_argument("--plumbing", action="store_true", help="tiny subset, width 4, shortened configs")
    ap.add_argument("--dry-run", action="store_true", help="print the jobs (and the SLURM script); run nothing")
    args = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in _split(args.seeds)]
        cells = make_cells(_split(args.defenses), _split(args.attacks), _split(args.datasets), seeds)
    except ValueError as error:
        ap.error(str(error))
    if args.cells_per_gpu < 1:
        ap.error("--cells-per-gpu must be >= 1")
    from .paths import cache_dir
    out = Path(args.out) if args.out else cache_dir() / "grid" / args.profile
    settings = GridSettings(args.profile, args.data_root, args.device, args.data_seed, args.plumbing)
    store = GridStore(out)
    todo = [c for c in cells if not store.done(c)]
    if args.dry_run:
        print(f"{len(cells)} cells, {len(cells) - len(todo)} done; would run {len(todo)} ({args.executor}):")
        for cell in todo:
            print("  ", cell.id)
        if args.executor == "slurm":
            print(slurm_script(len(todo), out, args.partition, args.gpus_per_node, args.time_min,
                               args.array_parallelism, args.cpus_per_task))
        return 0
    if args.executor == "slurm":
        jobs = submit_slurm(cells, settings, out, args.partition, args.gpus_per_node, args.time_min,
                            args.array_parallelism, args.cpus_per_task)
        print(f"submitted {len(jobs)} jobs; rerun the same command when they finish to pick up failures")
        return 0
    import torch
    gpus = torch.cuda.device_count() if args.executor == "local" and args.device != "cpu" else 0
    workers = args.workers or max(1, gpus * args.cells_per_gpu)
    report = run_grid(cells, settings, out, args.executor, workers, gpus)
    print(report.summary())
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())

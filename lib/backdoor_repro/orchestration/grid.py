"""The defense x attack grid: every cell (defense, attack, dataset, seed) is one job that builds, or takes from the
artifact cache, the poisoned set, the No-Defense model and the defense's stages, evaluates the defended model and
writes one record. A done cell is skipped on rerun; a failed cell is recorded with its error and does not stop
the others; rerunning runs only what is missing or failed. Jobs run in this process (``inline``), as local
processes through submitit (``local``: one or more cells per GPU, or CPU processes), or as a SLURM job array
(``slurm``) on a cluster that shares the repository and the cache; ``--list-jobs`` prints the jobs (and the SLURM
submission script) without running anything::

    python -m backdoor_repro.orchestration.grid --profile fast --data-root DIR --defenses none,ft,fmp \\
        --attacks white3_bb,blend_kitty_bb --executor local --cells-per-gpu 2
    python -m backdoor_repro.orchestration.grid --profile paper --data-root DIR --executor slurm --partition gpu \\
        --time-min 240 --list-jobs          # the profile's whole grid (GRID_DEFENSES x GRID_ATTACKS)
    python -m backdoor_repro.orchestration.grid --defenses dbd --attacks badnets_dbd_2x2 --protocols own --reuse-only

A cell runs under the ``common`` protocol (one architecture, rate, target and holdout rule for every cell; see
:mod:`backdoor_repro.protocol`) or its defense's ``own`` (exactly what that paper's notebook runs, so it reuses that
notebook's cached artifacts). Each record holds the defended model's metrics, the No-Defense model's metrics of the
same spec and the DER between them. ``reuse_only=True`` never trains: a cell whose artifacts are not cached fails
with ``NotCached``. ``plumbing=True`` checks the machinery on a 20-image-per-class subset, a width-4 network and
each defense's shortened config: its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
import textwrap
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from ..defenses import DEFENSES
from ..deadline import TIME_BUDGET_EXIT, TimeBudgetExhausted

EXECUTORS = ("inline", "local", "slurm")
ALL_DEFENSES = tuple(DEFENSES)  # the registry, in registration order
# one attack per trigger family of the four papers (BadNets patches of three shapes, blends, Trojan, SIG, LF, WaNet,
# label-consistent)
PAPER_GRID_ATTACKS = ("badnets_dbd_2x2", "grid3", "white3_bb", "blend_kitty_dbd", "blend_strip_fct", "trojan3_fct",
                      "sig_fct", "lf_bb", "wanet", "lc_dbd")
# on the CPU profiles the budget allows the defenses that start from the No-Defense model; DBD, FCT and T&R train
# their own networks (smoke: minutes per cell; cpu: about 2 h per attack together, projected from measured epochs,
# ARCHITECTURE.md) and run on fast / paper; each paper notebook runs its own defense on the CPU profiles
CPU_GRID_DEFENSES = ("none", "ft", "fp", "fmp", "anp")
GRID_DEFENSES = {"smoke": CPU_GRID_DEFENSES, "cpu": CPU_GRID_DEFENSES, "fast": ALL_DEFENSES, "paper": ALL_DEFENSES}
INLINE_PROFILES = ("smoke", "cpu")  # the grid notebook trains its missing cells itself (fast / paper: the CLI)
# smoke: two attacks whose own settings are the common protocol's (target 0, 10 %), so that their No-Defense models
# are the attacks notebook's (no extra training); a third of the grid's smoke time was blend_kitty_dbd at target 0
GRID_ATTACKS = {"smoke": ("grid3", "blend_kitty_fct"), "cpu": ("grid3", "blend_kitty_fct"), "fast": PAPER_GRID_ATTACKS,
                "paper": PAPER_GRID_ATTACKS}
DRY_RUN_ATTACKS = ("grid3", "blend_kitty_dbd")  # the grid notebook's dry run: every defense, two attacks (CI's budget)


def _grid_common(tables: Path):
    import pandas as pd
    frame = pd.read_csv(Path(tables) / "grid_common.csv")
    return frame.groupby(["defense", "attack", "metric"])["value"].mean().unstack("metric")


def min_no_defense_effect(tables: Path) -> float:
    """The smallest No-Defense ASR − CTR over the grid's attacks."""
    nd = _grid_common(tables).xs("none", level="defense")
    return float((nd["ASR"] - nd["CTR"]).min())


def min_best_drop(tables: Path) -> float:
    """Over the attacks, the smallest drop of ASR from No Defense to the best defense on that attack."""
    common = _grid_common(tables)
    nd = common.xs("none", level="defense")["ASR"]
    best = common.drop("none", level="defense")["ASR"].groupby(level="attack").min()
    return float((nd - best).min())


def min_no_defense(metric: str):
    def read(tables: Path) -> float:
        """The smallest No-Defense ``metric`` over the grid's attacks."""
        return float(_grid_common(tables).xs("none", level="defense")[metric].min())
    return read


def _grid_record():
    from ..records import Check, ProtocolRecord
    return ProtocolRecord(
        notebook="grid", attacks=GRID_ATTACKS,
        checks={"smoke": (Check("every attack: ASR - CTR, no defense (min over attacks)", ">=", 40,
                                min_no_defense_effect),
                          Check("every attack: ASR drop to its best defense (min over attacks)", ">=", 30,
                                min_best_drop)),
                "cpu": (Check("every attack: ACC, no defense (min over attacks)", ">=", 80, min_no_defense("ACC")),
                        Check("every attack: ASR, no defense (min over attacks)", ">=", 90, min_no_defense("ASR")))})


def left_out_line(profile: str, defenses) -> str | None:
    """Which registered defenses the profile's grid leaves out, and why; None when it runs every one."""
    left = [d for d in ALL_DEFENSES if d not in defenses]
    if not left or tuple(defenses) != GRID_DEFENSES.get(profile):
        return None
    return (f"left out of the {profile} grid: {', '.join(left)}: they train their own networks, for longer than "
            "the CPU budget allows (cpu: about 2 h per attack together on 2 cores, projected from measured epochs); they run in the fast / paper "
            "grids, and each paper notebook runs its own defense on this profile under its paper's protocol")


GRID_RECORD = _grid_record()  # the smoke checks of the default grid (every defense of GRID_DEFENSES, GRID_ATTACKS)


@dataclass(frozen=True)
class Cell:
    defense: str
    attack: str
    dataset: str = "default"  # the profile's dataset; or "cifar100", "gtsrb" on fast / paper
    seed: int = 0
    protocol: str = "common"  # or "own": the defense's paper's protocol (protocol.PROTOCOLS)

    @property
    def id(self) -> str:
        return f"{self.protocol}__{self.defense}__{self.attack}__{self.dataset}__seed{self.seed}"


@dataclass(frozen=True)
class GridSettings:
    profile: str = "smoke"
    data_root: str | None = None
    device: str = "auto"
    data_seed: int = 0
    plumbing: bool = False  # tiny subset, width 4, shortened configs: checks the machinery, not the numbers
    cache_root: str | None = None  # the artifact cache (default: BACKDOOR_REPRO_CACHE or <repo>/.cache)
    reuse_only: bool = False  # read the cache, never train (a missing artifact fails the cell with NotCached)
    download: bool = False  # let torchvision download the dataset
    dry_run: bool = False  # the profile's configs cut to a couple of steps on bundled data (experiment.setup)


def default_store(profile: str, data_seed: int = 0, plumbing: bool = False, dry_run: bool = False) -> Path:
    """``<cache>/grid/<profile>[-plumbing][-dry-run][-data<k>]``: where the CLI and the grid notebook keep the cells
    (the data seed, plumbing runs and dry runs get their own folder, since a cell's id names none of them)."""
    from ..paths import cache_dir
    return cache_dir() / "grid" / (profile + ("-plumbing" if plumbing else "") + ("-dry-run" if dry_run else "")
                                   + (f"-data{data_seed}" if data_seed else ""))


def _unknown(names, known) -> list[str]:
    """The ``names`` not in ``known``, each with the known keys it begins or is closest to (difflib) as a
    suggestion."""
    out = []
    for name in names:
        if name in known:
            continue
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
        close = list(dict.fromkeys([k for k in known if k.startswith(name)] + close))[:3]
        out.append(f"{name} (did you mean {' or '.join(close)}?)" if close else name)
    return out


def make_cells(defenses, attacks, datasets=("default",), seeds=(0,), protocols=("common",)) -> list[Cell]:
    """The cross product, every key checked before any compute."""
    from ..attacks import ATTACKS
    from ..protocol import PROTOCOLS
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad or not protocols:
        raise ValueError(f"unknown protocol(s) {bad}; choose from {', '.join(PROTOCOLS)}")
    unknown = _unknown(defenses, DEFENSES) + _unknown(attacks, ATTACKS)
    if unknown:
        raise ValueError(f"unknown defense or attack: {', '.join(unknown)} (--help lists the keys)")
    if not defenses or not attacks:
        raise ValueError("a grid needs at least one defense and one attack")
    bad_seeds = [s for s in seeds if not isinstance(s, int) or s < 0]
    if bad_seeds:
        raise ValueError(f"seeds must be non-negative integers, got {bad_seeds}")
    return [Cell(d, a, ds, s, p) for p in protocols for ds in datasets for s in seeds for a in attacks
            for d in defenses]


class GridStore:
    """``root/cells/<id>.json`` for done cells, ``root/failed/<id>.json`` for failed ones (written atomically)."""

    def __init__(self, root):
        self.root = Path(root)

    def _path(self, kind: str, cell: Cell) -> Path:
        return self.root / kind / f"{cell.id}.json"

    def done(self, cell: Cell) -> bool:
        return self._path("cells", cell).exists()

    def todo(self, cells: list[Cell], refresh: bool = False) -> list[Cell]:
        """The cells a run computes: those not done, or every one with ``refresh``."""
        return list(cells) if refresh else [c for c in cells if not self.done(c)]

    def read(self, cell: Cell) -> dict:
        return json.loads(self._path("cells", cell).read_text())

    def _write(self, kind: str, cell: Cell, record: dict) -> None:
        from ..cache import atomic_write_text
        path = self._path(kind, cell)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True))

    def write_done(self, cell: Cell, record: dict) -> None:
        self._write("cells", cell, record)
        self._path("failed", cell).unlink(missing_ok=True)

    def withdraw(self, cell: Cell) -> None:
        """Remove a done record that could not be recomputed (it no longer describes the current code)."""
        self._path("cells", cell).unlink(missing_ok=True)

    def write_failed(self, cell: Cell, error: BaseException) -> None:
        self._write("failed", cell, {"cell": asdict(cell), "error": f"{type(error).__name__}: {error}",
                                     "traceback": traceback.format_exc(), "when": time.strftime("%Y-%m-%d %H:%M:%S")})

    def records(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.root / "cells").glob("*.json"))]

    def failures(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.root / "failed").glob("*.json"))]

    def failure(self, cell: Cell) -> str | None:
        """The recorded error of ``cell``'s last failed run, or None."""
        path = self._path("failed", cell)
        return json.loads(path.read_text()).get("error") if path.exists() else None


_EXPERIMENTS: dict = {}  # one loaded experiment per (settings, dataset, seed) in this process


def _experiment(cell: Cell, settings: GridSettings):
    from ..cache import ArtifactCache
    from ..experiment import setup
    memo = (settings, cell.dataset, cell.seed)
    if memo in _EXPERIMENTS:
        return _EXPERIMENTS[memo]
    ex = setup(settings.profile, settings.data_root, settings.download, settings.device, settings.data_seed, cell.seed,
               quiet=True, dataset=None if cell.dataset == "default" else cell.dataset, dry_run=settings.dry_run,
               small_run="plumbing" if settings.plumbing else None)
    ex.cache = ArtifactCache(settings.cache_root, build=not settings.reuse_only)
    _EXPERIMENTS.clear()  # keep one: a process runs the cells of one dataset and seed in a row
    _EXPERIMENTS[memo] = ex
    return ex


def cell_spec(cell: Cell, settings: GridSettings, ex=None):
    """``(experiment, spec, defense config)`` of ``cell``: builds nothing but the loaded data."""
    ex = ex or _experiment(cell, settings)
    spec = ex.spec(cell.attack, cell.defense, seed=cell.seed, protocol=cell.protocol)
    return ex, spec, ex.config(cell.defense)


def compute_cell(cell: Cell, settings: GridSettings) -> dict:
    """Build (or reuse) everything the cell needs, run the defense, evaluate it and its No-Defense model."""
    import torch

    from ..metrics import defense_effectiveness_rating
    started = time.perf_counter()
    ex, spec, cfg = cell_spec(cell, settings)
    result = ex.run(cell.defense, spec, cfg)
    metrics = ex.evaluate(result.model, spec)
    no_defense = metrics if cell.defense == "none" else ex.evaluate(ex.run("none", spec).model, spec)
    attack = spec.make_attack()
    return {"cell": asdict(cell), "protocol": cell.protocol, "profile": ex.profile.name, "dataset": ex.profile.dataset,
            "plumbing": settings.plumbing, "dry_run": settings.dry_run, "model": spec.model, "width": spec.width,
            "attack_settings": {"rate": attack.rate, "target": attack.target, "label_mode": attack.label_mode},
            "holdout": asdict(spec.holdout) if spec.holdout is not None else None,
            "metrics": metrics, "no_defense": no_defense,
            "DER": round(defense_effectiveness_rating(no_defense["ACC"], no_defense["ASR"], metrics["ACC"],
                                                      metrics["ASR"]), 2),
            "stage_seconds": {k: round(r.seconds, 2) for k, r in result.stages.items()},
            "seconds": round(time.perf_counter() - started, 2), "device": str(ex.device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def run_cell(cell: Cell, settings: GridSettings, store_root: str, gpu: int | None = None,
             refresh: bool = False) -> dict:
    """One job: skip if done (unless ``refresh``); else compute and record, or record the failure and re-raise.
    ``refresh`` recomputes a done cell from the cache (seconds when its artifacts are cached), so that a record
    made by older code or another config is replaced, or, if it can no longer be recomputed, withdrawn."""
    if gpu is not None:  # before CUDA is initialised in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    store = GridStore(store_root)
    if store.done(cell) and not refresh:
        return store.read(cell)
    try:
        record = compute_cell(cell, settings)
    except TimeBudgetExhausted:  # not a failure: the cell's progress is saved, the next slice continues it
        raise
    except Exception as error:
        store.write_failed(cell, error)
        store.withdraw(cell)
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


class GridIncomplete(RuntimeError):
    """Cells of a grid have no result (their run failed, or they have not run) and the caller did not ask to keep
    going: no table is written from part of a grid without saying so."""


def missing_cells(cells: list[Cell], store: GridStore, errors: dict[str, str] | None = None) -> list[dict]:
    """One row per cell of ``cells`` without a done record: its fields, ``status`` ("failed": with the error of this
    run (``errors``, cell id -> error) or of the last recorded one; else "not run") and ``error``."""
    errors = errors or {}
    rows = []
    for cell in cells:
        if store.done(cell):
            continue
        error = errors.get(cell.id) or store.failure(cell)
        rows.append({**asdict(cell), "status": "failed" if error else "not run", "error": error or ""})
    return rows


def require_complete(missing: list[dict], keep_going: bool, hint: str = "") -> None:
    """Raise :class:`GridIncomplete` naming every missing cell and its error, unless there is none or ``keep_going``
    (then the caller writes its tables with the missing cells marked: :func:`mark_missing`)."""
    if not missing or keep_going:
        return
    lines = [f"  {r['defense']} x {r['attack']} ({r['dataset']}, seed {r['seed']}, {r['protocol']}): {r['status']}"
             + (f": {r['error']}" if r["error"] else "") for r in missing]
    raise GridIncomplete(f"{len(missing)} cell(s) of this grid have no result, so no table is written:\n"
                         + "\n".join(lines) + (f"\n{hint}" if hint else "")
                         + "\nRerun (only the missing cells run), or set keep_going=True to write the tables with "
                           "these cells marked missing (grid_missing)")


def mark_missing(tidy, missing: list[dict]):
    """``tidy`` (a table's rows: attack, defense, seed, metric, value, ...) with one row per missing cell: metric
    ``missing`` = 1, with its ``status`` and ``error`` (empty in the other rows). Unchanged when none is missing."""
    import pandas as pd
    if not missing:
        return tidy
    rows = pd.DataFrame([{"attack": r["attack"], "defense": r["defense"], "seed": r["seed"], "metric": "missing",
                          "value": 1.0, "status": r["status"], "error": r["error"]} for r in missing])
    return pd.concat([tidy, rows], ignore_index=True)


def _submitit_local(store_root: Path, timeout_min: int):
    import submitit
    executor = submitit.LocalExecutor(folder=str(store_root / "jobs" / "%j"))
    executor.update_parameters(timeout_min=timeout_min)
    return executor


def run_grid(cells: list[Cell], settings: GridSettings, store_root, executor: str = "inline", workers: int = 1,
             gpus: int = 0, timeout_min: int = 600, log=print, refresh: bool = False) -> GridReport:
    """Run the cells that are not done yet (``refresh``: every cell, see :func:`run_cell`). ``local``: at most
    ``workers`` processes at once; with ``gpus`` > 0 job slot i gets GPU i mod ``gpus`` (``workers`` = GPUs x cells
    per GPU)."""
    if executor not in ("inline", "local"):
        raise ValueError(f"run_grid runs 'inline' or 'local'; use submit_slurm for SLURM (got {executor!r})")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    store_root = Path(store_root)
    store = GridStore(store_root)
    todo = store.todo(cells, refresh)
    skipped = set(cells) - set(todo)
    report = GridReport([], [c.id for c in cells if c in skipped], {})
    log(f"grid: {len(cells)} cells, {len(report.skipped)} done, {len(todo)} to run ({executor}, {workers} worker(s))")
    if executor == "inline":
        for cell in todo:
            try:
                run_cell(cell, settings, str(store_root), refresh=refresh)
                report.ran.append(cell.id)
            except TimeBudgetExhausted:
                raise
            except Exception as error:
                report.failed[cell.id] = f"{type(error).__name__}: {error}"
            log(f"  {cell.id}: {'FAILED' if cell.id in report.failed else 'done'}")
        return report
    pool, running, queue = _submitit_local(store_root, timeout_min), {}, list(todo)
    free_slots, budget_spent = list(range(workers)), False
    while queue or running:
        while queue and free_slots:
            cell, slot = queue.pop(0), free_slots.pop(0)
            gpu = slot % gpus if gpus > 0 else None
            running[cell] = (pool.submit(run_cell, cell, settings, str(store_root), gpu, refresh), slot)
        finished = [c for c, (job, _) in running.items() if job.done()]
        for cell in finished:
            job, slot = running.pop(cell)
            free_slots.append(slot)
            try:
                job.result()
                report.ran.append(cell.id)
            except Exception as error:  # the job's own failure record holds the traceback
                if "TimeBudgetExhausted" in str(error):  # the deadline of a sliced run: start nothing more
                    budget_spent = True
                    queue.clear()
                    continue
                report.failed[cell.id] = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
            log(f"  {cell.id}: {'FAILED' if cell.id in report.failed else 'done'} "
                f"({len(report.ran)} done, {len(running)} running, {len(report.failed)} failed, {len(queue)} queued)")
        if not finished:
            time.sleep(0.5)
    if budget_spent:
        raise TimeBudgetExhausted(f"time budget spent with {len(report.ran)} cells done; rerun to continue")
    return report


@dataclass(frozen=True)
class SlurmOptions:
    """What a SLURM job array asks for (``sbatch`` options; ``extra``: any other ``#SBATCH --key=value``)."""
    partition: str | None = None
    gpus_per_node: int = 1
    time_min: int = 240
    parallelism: int = 64
    cpus_per_task: int | None = None
    account: str | None = None
    qos: str | None = None
    mem: str | None = None  # e.g. "32G"
    constraint: str | None = None  # e.g. "a100"
    extra: tuple[tuple[str, str | bool], ...] = ()  # ("reservation", "r1"), ("exclusive", True)

    def parameters(self) -> dict:
        """submitit's ``slurm_*`` parameters (unset ones left out)."""
        named = {"slurm_partition": self.partition, "slurm_account": self.account, "slurm_qos": self.qos,
                 "slurm_mem": self.mem, "slurm_constraint": self.constraint, "cpus_per_task": self.cpus_per_task}
        out = {k: v for k, v in named.items() if v is not None}
        out.update(gpus_per_node=self.gpus_per_node, timeout_min=self.time_min,
                   slurm_array_parallelism=self.parallelism)
        if self.extra:
            out["slurm_additional_parameters"] = dict(self.extra)
        return out


def slurm_script(n_cells: int, store_root, slurm: SlurmOptions) -> str:
    """The sbatch script submitit writes for the job array (what ``--list-jobs`` prints)."""
    from submitit.slurm.slurm import _make_sbatch_string
    folder = Path(store_root) / "jobs" / "%A_%a"
    command = f"{sys.executable} -u -m submitit.core._submit {folder}"
    return _make_sbatch_string(command=command, folder=folder, job_name="backdoor_grid", partition=slurm.partition,
                               time=slurm.time_min, gpus_per_node=slurm.gpus_per_node or None,
                               cpus_per_task=slurm.cpus_per_task, array_parallelism=slurm.parallelism,
                               map_count=n_cells, account=slurm.account, qos=slurm.qos, mem=slurm.mem,
                               constraint=slurm.constraint, additional_parameters=dict(slurm.extra) or None)


def submit_slurm(cells: list[Cell], settings: GridSettings, store_root, slurm: SlurmOptions, refresh: bool = False):
    """Submit the cells that are not done (``refresh``: all) as one SLURM job array; returns the submitit jobs."""
    import submitit
    todo = GridStore(store_root).todo(cells, refresh)
    executor = submitit.AutoExecutor(folder=str(Path(store_root) / "jobs" / "%A_%a"), cluster="slurm")
    executor.update_parameters(**slurm.parameters())
    n = len(todo)
    return executor.map_array(run_cell, todo, [settings] * n, [str(store_root)] * n, [None] * n, [refresh] * n)


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum`` (a clear error naming the option otherwise)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    parse.__name__ = f"whole number >= {minimum}"
    return parse


def _seed_list(text: str) -> list[int]:
    seeds = _split(text)
    if not seeds or not all(s.isdigit() for s in seeds):
        raise argparse.ArgumentTypeError(f"must be comma-separated whole numbers >= 0, e.g. 0,1,2, got {text!r}")
    return [int(s) for s in seeds]


def _memory(text: str) -> str:
    if not re.fullmatch(r"\d+[KMGT]?", text):
        raise argparse.ArgumentTypeError(f"must be SLURM's --mem: a number with an optional K, M, G or T (e.g. 32G), "
                                         f"got {text!r}")
    return text


def _sbatch_extra(text: str) -> tuple[tuple[str, str | bool], ...]:
    """``key=value[,key=value...]`` (a bare ``key``: a flag) -> pairs for ``#SBATCH --key=value``."""
    pairs = []
    for item in _split(text):
        key, sep, value = item.partition("=")
        if not re.fullmatch(r"[a-z][a-z0-9-]*", key.strip()):
            raise argparse.ArgumentTypeError(f"{item!r}: expected key=value with an sbatch option name as key "
                                             "(e.g. reservation=r1, exclusive, gres=gpu:a100:1)")
        pairs.append((key.strip(), value.strip() if sep else True))
    return tuple(pairs)


def _epilog() -> str:
    from ..attacks import ATTACKS
    from ..protocol import PROTOCOLS
    wrap = textwrap.TextWrapper(width=110, initial_indent="  ", subsequent_indent="  ")
    return "\n".join([
        "examples:",
        "  # check the plumbing anywhere in seconds (tiny subset, width 4; the numbers mean nothing)",
        "  python -m backdoor_repro.orchestration.grid --defenses none,ft --attacks grid3,white3_bb --plumbing",
        "  # one GPU box: two cells per visible GPU",
        "  python -m backdoor_repro.orchestration.grid --profile fast --data-root ~/cifar10 --defenses none,ft,fmp \\",
        "      --attacks white3_bb,blend_kitty_bb --executor local --cells-per-gpu 2",
        "  # a SLURM job array (print the sbatch script first, then drop --list-jobs to submit)",
        "  python -m backdoor_repro.orchestration.grid --profile paper --data-root /shared/cifar10 --defenses dbd \\",
        "      --attacks grid3 --executor slurm --partition gpu --account proj42 --qos normal --mem 32G \\",
        "      --constraint a100 --time-min 240 --sbatch-extra reservation=r1,exclusive --list-jobs",
        "", "defenses (--defenses):", wrap.fill(", ".join(DEFENSES)),
        "attacks (--attacks):", wrap.fill(", ".join(sorted(ATTACKS))),
        f"protocols (--protocols): {', '.join(PROTOCOLS)}; executors (--executor): {', '.join(EXECUTORS)}",
        "", "Every option is checked before any cell runs or any job is submitted, and so are the device, the profile,",
        "the data, BACKDOOR_REPRO_THREADS and the output and cache folders (the checks run_all.sh runs)."])


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m backdoor_repro.orchestration.grid", description=__doc__.split("::")[0],
                                 epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    what = ap.add_argument_group("what to run")
    what.add_argument("--profile", default="smoke", choices=("smoke", "cpu", "fast", "paper"),
                      help="run profile (default smoke: CPU, bundled data; fast / paper need a GPU unless --executor "
                           "slurm submits to GPU nodes)")
    what.add_argument("--defenses", help="comma-separated defense keys (listed below), e.g. none,ft,fmp (default: the "
                                         "profile's grid, GRID_DEFENSES)")
    what.add_argument("--attacks", help="comma-separated attack keys (listed below), e.g. grid3,white3_bb (default: "
                                        "the profile's grid, GRID_ATTACKS)")
    what.add_argument("--datasets", default="default",
                      help="comma-separated datasets: 'default' (the profile's) or, on fast / paper, cifar100, gtsrb "
                           "(default: default)")
    what.add_argument("--seeds", type=_seed_list, default="0",
                      help="comma-separated training seeds, each >= 0, e.g. 0,1,2 (default: 0)")
    what.add_argument("--protocols", default="common",
                      help="common (one protocol for every cell), own (each defense's paper's), or both: common,own "
                           "(default: common)")
    what.add_argument("--data-seed", type=_at_least(0), default=0,
                      help="poison selection, holdout and random trigger parts, >= 0 (default 0; another seed gets "
                           "its own grid folder)")
    what.add_argument("--plumbing", action="store_true", help="tiny subset, width 4, shortened configs: checks the "
                      "machinery in seconds, its numbers mean nothing")
    what.add_argument("--reuse-only", action="store_true", help="never train: cells whose artifacts are not cached fail")
    what.add_argument("--refresh", action="store_true",
                      help="recompute done cells too (from the cache: seconds each), replacing records of older code")
    what.add_argument("--list-jobs", action="store_true", help="print the jobs (and the SLURM script); run nothing "
                      "(not the profiles' dry run, which runs every stage for a couple of steps)")
    _data_and_run_options(ap)
    _slurm_options(ap)
    return ap


def _data_and_run_options(ap: argparse.ArgumentParser) -> None:
    where = ap.add_argument_group("data, device, output and local execution")
    where.add_argument("--data-root", default=None,
                       help="torchvision root or image-folder tree of the profile's dataset (fast / paper / cpu), e.g. "
                            "~/data; not used by smoke")
    where.add_argument("--download", action="store_true", help="let torchvision download the dataset")
    where.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    where.add_argument("--out", default=None, help="the grid's folder (default: <cache>/grid/<profile>[-data<k>], as "
                       "the notebook reads); must be writable")
    where.add_argument("--executor", default="inline", choices=EXECUTORS,
                       help="inline: in this process; local: submitit processes (one or more per GPU); slurm: a "
                            "SLURM job array (default inline)")
    where.add_argument("--workers", type=_at_least(1), default=None,
                       help="local: processes at once, >= 1 (default: GPUs x --cells-per-gpu, or 1 without a GPU)")
    where.add_argument("--cells-per-gpu", type=_at_least(1), default=1,
                       help="local: cells sharing one GPU at once, >= 1 (default 1)")


def _slurm_options(ap: argparse.ArgumentParser) -> None:
    slurm = ap.add_argument_group("SLURM (--executor slurm)")
    slurm.add_argument("--partition", default=None, help="sbatch --partition, e.g. gpu")
    slurm.add_argument("--account", default=None, help="sbatch --account (the project charged), e.g. proj42")
    slurm.add_argument("--qos", default=None, help="sbatch --qos, e.g. normal")
    slurm.add_argument("--mem", type=_memory, default=None, help="sbatch --mem per node, e.g. 32G")
    slurm.add_argument("--constraint", default=None, help="sbatch --constraint (node features), e.g. a100")
    slurm.add_argument("--gpus-per-node", type=_at_least(0), default=1, help="sbatch --gpus-per-node, >= 0 (default 1)")
    slurm.add_argument("--cpus-per-task", type=_at_least(1), default=None, help="sbatch --cpus-per-task, >= 1")
    slurm.add_argument("--time-min", type=_at_least(1), default=240,
                       help="minutes per job, >= 1 (sbatch --time; default 240)")
    slurm.add_argument("--array-parallelism", type=_at_least(1), default=64,
                       help="jobs of the array running at once, >= 1 (default 64)")
    slurm.add_argument("--sbatch-extra", type=_sbatch_extra, action="append", default=[],
                       help="other sbatch options as key=value[,key=value...] (a bare key is a flag), e.g. "
                            "reservation=r1,exclusive; repeatable")


def slurm_options(args) -> SlurmOptions:
    return SlurmOptions(args.partition, args.gpus_per_node, args.time_min, args.array_parallelism, args.cpus_per_task,
                        args.account, args.qos, args.mem, args.constraint,
                        tuple(pair for group in args.sbatch_extra for pair in group))


def preflight(args, cells: list[Cell], out: Path) -> None:
    """``run_all.sh``'s checks for this grid, once, before any cell runs or any job is submitted: the profile on every
    dataset of ``cells``, the device (not for SLURM jobs, which run on other machines), the data, the thread count,
    and the grid's and the cache's folders (writable; nothing is created here)."""
    from ..paths import cache_dir
    from .preflight import check_run, check_threads, check_writable
    for dataset in dict.fromkeys(c.dataset for c in cells):
        check_run(args.profile, args.device, args.data_root, args.download, None if dataset == "default" else dataset,
                  need_device=args.executor != "slurm")
    check_threads()
    check_writable(out, "--out", create=False)
    check_writable(cache_dir(), "BACKDOOR_REPRO_CACHE", create=False)


def main(argv=None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    try:
        defenses = _split(args.defenses) if args.defenses else list(GRID_DEFENSES[args.profile])
        attacks = _split(args.attacks) if args.attacks else list(GRID_ATTACKS[args.profile])
        cells = make_cells(defenses, attacks, _split(args.datasets), args.seeds, _split(args.protocols))
    except ValueError as error:
        ap.error(str(error))
    out = Path(args.out) if args.out else default_store(args.profile, args.data_seed, args.plumbing)
    try:
        from .preflight import PREFLIGHT_ERRORS
        preflight(args, cells, out)
    except PREFLIGHT_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    settings = GridSettings(args.profile, args.data_root, args.device, args.data_seed, args.plumbing,
                            reuse_only=args.reuse_only, download=args.download)
    todo = GridStore(out).todo(cells, args.refresh)
    if args.list_jobs:
        return print_jobs(cells, todo, out, args)
    if args.executor == "slurm":
        jobs = submit_slurm(cells, settings, out, slurm_options(args), args.refresh)
        print(f"submitted {len(jobs)} jobs; rerun the same command when they finish to pick up failures")
        return 0
    import torch
    gpus = torch.cuda.device_count() if args.executor == "local" and args.device != "cpu" else 0
    workers = args.workers or max(1, gpus * args.cells_per_gpu)
    try:
        report = run_grid(cells, settings, out, args.executor, workers, gpus, refresh=args.refresh)
    except TimeBudgetExhausted as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        return TIME_BUDGET_EXIT
    print(report.summary())
    return 1 if report.failed else 0


def print_jobs(cells: list[Cell], todo: list[Cell], out: Path, args) -> int:
    """``--list-jobs``: the jobs that would run (and the SLURM submission script)."""
    print(f"{len(cells)} cells, {len(cells) - len(todo)} done; would run {len(todo)} ({args.executor}):")
    for cell in todo:
        print("  ", cell.id)
    if args.executor == "slurm":
        print(slurm_script(len(todo), out, slurm_options(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tables (tidy CSV + Markdown + LaTeX), reproduced-vs-reported comparisons, and figures with provenance.

Every table is stored as a tidy CSV, one row per number, with the columns of ``tables/reported``
(``paper, table, dataset, model, attack, defense, metric, value``) plus ``profile`` and ``seed``;
the Markdown and LaTeX files are wide views of the same rows.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import time
from pathlib import Path

import pandas as pd
import torch

from .cache import atomic_write_text
from .numerics import cpu_numerics
from .paths import output_root
from .reported import COLUMNS
from .table_text import to_latex, to_markdown

TIDY_COLUMNS = COLUMNS + ["profile", "seed"]
DATASET_LABELS = {"cifar10": "CIFAR-10", "cifar10-smoke": "CIFAR-10", "cifar100": "CIFAR-100", "gtsrb": "GTSRB"}


def dataset_label(name: str) -> str:
    """The name the papers' tables use for a dataset key (the bundled subset is CIFAR-10)."""
    return DATASET_LABELS.get(name, name)


def scale_note(profile: str, dataset: str, train_images: int, width: int) -> str:
    """The scale a run's numbers come from, in one line for figures and tables beside the papers' numbers."""
    return f"{profile} profile: {dataset_label(dataset)}, {train_images:,} training images, network width {width}"


def output_dir(kind: str, profile: str) -> Path:
    """``figures/<profile>`` or ``tables/<profile>`` under the project root (profiles never share one)."""
    if kind not in ("figures", "tables"):
        raise ValueError(kind)
    path = output_root() / kind / profile
    path.mkdir(parents=True, exist_ok=True)
    return path


def tidy(rows: list[dict], **constant) -> pd.DataFrame:
    """Rows of ``{metric: value, ...}`` results → one row per number, schema-checked."""
    records = []
    for row in rows:
        base = {**constant, **{k: v for k, v in row.items() if k not in ("metrics",)}}
        for metric, value in row["metrics"].items():
            records.append({**base, "metric": metric, "value": round(float(value), 2)})
    df = pd.DataFrame.from_records(records)
    missing = [c for c in TIDY_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"tidy table lacks columns {missing}")
    return df[TIDY_COLUMNS + [c for c in df.columns if c not in TIDY_COLUMNS]]


def mean_std(df: pd.DataFrame, index: list[str]) -> pd.DataFrame:
    """Tidy rows over seeds → one row per ``index`` with ``mean ± std (n)`` per metric (sample std)."""
    grouped = df.groupby(list(index) + ["metric"], sort=False)["value"]
    stats = grouped.agg(["mean", "std", "count"]).reset_index()
    stats["cell"] = [f"{m:.2f} ± {s:.2f}" if n > 1 else f"{m:.2f}"
                     for m, s, n in zip(stats["mean"], stats["std"], stats["count"])]
    view = stats.pivot_table(index=list(index), columns="metric", values="cell", aggfunc="first", sort=False)
    view["seeds"] = grouped.count().groupby(list(index), sort=False).max()
    return view.reset_index()


def wide(df: pd.DataFrame, index, columns) -> pd.DataFrame:
    return df.pivot_table(index=index, columns=columns, values="value", aggfunc="first", sort=False)


def write_table(df: pd.DataFrame, name: str, profile: str, index, columns,
                caption: str | None = None) -> dict[str, Path]:
    """Write ``<name>.csv`` (tidy) and ``<name>.md`` / ``<name>.tex`` (wide, the ``index`` levels as leading
    columns; ``caption``, e.g. the run's scale, as a line above) into ``tables/<profile>``."""
    out = output_dir("tables", profile)
    paths = {"csv": out / f"{name}.csv", "md": out / f"{name}.md", "tex": out / f"{name}.tex"}
    view = wide(df, index, columns)
    atomic_write_text(paths["csv"], df.to_csv(index=False))
    atomic_write_text(paths["md"], to_markdown(view, caption=caption))
    atomic_write_text(paths["tex"], to_latex(view, caption=caption))
    return paths


def compare_with_reported(ours: pd.DataFrame, reported: pd.DataFrame,
                          keys=("dataset", "attack", "defense", "metric")) -> pd.DataFrame:
    """Join our tidy rows with the reported ones on ``keys``: ``ours``, ``reported``, ``delta``, ``source``.

    Rows the papers do not report keep an empty ``reported``; where several tables report the same
    number, the first one (by file and row order) is shown and named in ``source``.
    """
    keys = list(keys)
    left = ours.groupby(keys, sort=False)["value"].mean().rename("ours").reset_index()
    right = (reported.assign(source=reported["paper"] + ":" + reported["table"])
             .groupby(keys, sort=False).agg(reported=("value", "first"), source=("source", "first")).reset_index())
    joined = left.merge(right, on=keys, how="left")
    joined["delta"] = (joined["ours"] - joined["reported"]).round(2)
    return joined[keys + ["ours", "reported", "delta", "source"]]


def write_frame(df: pd.DataFrame, name: str, profile: str, caption: str | None = None) -> dict[str, Path]:
    """Write an already-shaped table (e.g. a comparison; its index is dropped) as CSV, Markdown and LaTeX, with
    ``caption`` (e.g. the run's scale) as a line above the Markdown and a comment above the LaTeX table."""
    out = output_dir("tables", profile)
    paths = {"csv": out / f"{name}.csv", "md": out / f"{name}.md", "tex": out / f"{name}.tex"}
    atomic_write_text(paths["csv"], df.to_csv(index=False))
    atomic_write_text(paths["md"], to_markdown(df, index=False, caption=caption))
    atomic_write_text(paths["tex"], to_latex(df, index=False, caption=caption))
    return paths


def timed_run(record: dict, previous: dict | None) -> dict | None:
    """The run whose wall time the record stands by: this one if it trained a stage, else (a warm rerun, every stage
    from the cache) the one the previous record stood by, so a warm rerun never replaces a measured time."""
    if record["stages"]["built"] > 0:
        return {k: record[k] for k in ("wall_seconds", "stages", "commit", "created", "cpu", "device")}
    return (previous or {}).get("timed_run")


def from_empty_cache_seconds(wall_seconds: float, stage_log: dict[str, dict]) -> float | None:
    """The notebook's wall time from an empty cache, pieced together when its stages were built by earlier runs
    (slices of a long profile, or another notebook sharing a stage): this run's wall time plus, for every stage it
    used, the build time recorded for it less the part spent in this run. ``None`` when a stage's build time was
    never recorded (built before build times were kept)."""
    if any(entry["seconds"] is None for entry in stage_log.values()):
        return None
    return round(wall_seconds + sum(max(0.0, e["seconds"] - e["here"]) for e in stage_log.values()), 1)


def write_run_record(notebook: str, profile: str, wall_seconds: float, **details) -> Path:
    """``tables/<profile>/<notebook>_run.json``: machine, device, torch version, wall time, per-stage details, how
    many stages this run trained and took from the cache, the build time of each (``stage_builds``), the wall time
    from an empty cache (:func:`from_empty_cache_seconds`) and ``timed_run`` (:func:`timed_run`)."""
    from .cache import STAGE_COUNTS, STAGE_LOG
    reserved = {"stage_builds", "from_empty_cache_seconds", "timed_run", "stages"} & set(details)
    if reserved:
        raise ValueError(f"the run record writes {sorted(reserved)} itself: name the detail otherwise")
    path = output_dir("tables", profile) / f"{notebook}_run.json"
    record = provenance(notebook=notebook, profile=profile, wall_seconds=round(wall_seconds, 1),
                        stages=dict(STAGE_COUNTS), **details)
    record["stage_builds"] = [{"stage": e["stage"], "key": e["key"], "seconds": e["seconds"],
                                "built_in_this_run": e["built"], "seconds_in_this_run": e["here"]}
                               for e in STAGE_LOG.values()]
    record["from_empty_cache_seconds"] = from_empty_cache_seconds(wall_seconds, STAGE_LOG)
    # run_all.sh writes into a staging folder: the record it replaces is in the published one
    published = os.environ.get("BACKDOOR_REPRO_PUBLISHED")
    before = Path(published) / "tables" / path.parent.name / path.name if published else path
    try:
        previous = json.loads(before.read_text()) if before.is_file() else None
    except ValueError:
        previous = None
    record["timed_run"] = timed_run(record, previous)
    atomic_write_text(path, json.dumps(record, indent=1, default=str) + "\n")
    return path


@functools.lru_cache(maxsize=1)
def _commit() -> str:
    """The checkout's commit (``+dirty`` with uncommitted changes); outside a git checkout (a copy of the tree sent to
    a GPU machine without its .git) the commit named by ``BACKDOOR_REPRO_COMMIT``, else ``unknown``."""
    import subprocess
    from .paths import project_root
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=project_root(), capture_output=True, text=True,  # noqa: E731
                                        timeout=10, check=True).stdout.strip()
        return run("rev-parse", "--short=12", "HEAD") + ("+dirty" if run("status", "--porcelain", "--", "lib") else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("BACKDOOR_REPRO_COMMIT") or "unknown"


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), so that CPU timings name their machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def provenance(**extra) -> dict:
    info = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "python": platform.python_version(),
            "torch": torch.__version__, "machine": platform.machine(), "cpu": cpu_model(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)",
            "threads": torch.get_num_threads(), "cpu_numerics": cpu_numerics(), "commit": _commit()}
    info.update(extra)
    return info


NON_INTERACTIVE_BACKENDS = ("agg", "pdf", "svg", "ps", "cairo", "pgf", "template")
FIGURE_DPI = 150


def stamp(fig, text: str) -> None:
    """``text`` (the profile and scale) in small grey type under ``fig``; a second stamp replaces the first."""
    old = getattr(fig, "_backdoor_repro_stamp", None)
    if old is not None:
        old.remove()
    fig._backdoor_repro_stamp = fig.text(0.5, -0.01, text, ha="center", va="top", fontsize=7, color="0.35")


def show_in_notebook(png: Path) -> bool:
    """Display ``png`` in the running notebook's output when matplotlib cannot show the figure itself (run_all.sh
    runs the notebooks under ``MPLBACKEND=Agg``, where ``plt.show()`` draws nothing); False outside a kernel or
    under an interactive backend (e.g. Jupyter's inline one, which shows the figure at the end of the cell)."""
    import matplotlib
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return False
    if matplotlib.get_backend().lower() not in NON_INTERACTIVE_BACKENDS:
        return False
    from PIL import Image as PILImage
    with PILImage.open(png) as saved:  # shown at matplotlib's screen size (100 dpi), its pixels kept for zooming
        width = round(saved.width * 100 / FIGURE_DPI)
    display(Image(filename=str(png), width=width))
    return True


def save_figure(fig, name: str, profile: str, scale: str | None = None, **meta) -> dict[str, Path]:
    """Save ``fig`` as PNG and PDF in ``figures/<profile>`` with a JSON provenance sidecar, stamped with ``scale``
    (:func:`scale_note`; the profile alone without it), and show it in the notebook that made it."""
    out = output_dir("figures", profile)
    paths = {"png": out / f"{name}.png", "pdf": out / f"{name}.pdf", "json": out / f"{name}.json"}
    stamp(fig, scale or f"{profile} profile")
    for kind in ("png", "pdf"):
        tmp = paths[kind].with_name(f".{paths[kind].name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            fig.savefig(tmp, format=kind, dpi=FIGURE_DPI, bbox_inches="tight",
                        metadata={"Creator": "backdoor_repro"} if kind == "pdf" else None)
            tmp.replace(paths[kind])
        finally:
            tmp.unlink(missing_ok=True)
    atomic_write_text(paths["json"], json.dumps(provenance(profile=profile, scale=scale, **meta), indent=1,
                                                default=str))
    show_in_notebook(paths["png"])
    return paths

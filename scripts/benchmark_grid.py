"""Wall time of one small grid run by submitit's local executor with 1 and with 2 workers (fresh caches each),
and the ratio. Not a test. On 2 CPU cores the plumbing grid shows the executor's overhead and the gain from
overlapping data loading with training; on a GPU box pass ``--device cuda --profile fast`` for real cells.

    python scripts/benchmark_grid.py                       # plumbing cells on CPU
    python scripts/benchmark_grid.py --profile fast --data-root DIR --device cuda --no-plumbing --workers 1,2,4 \
        --defenses none,ft,fp,fmp --attacks grid3,white3_bb   # 1, 2 and 4 cells at once on one GPU
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from backdoor_repro.orchestration.grid import GridSettings, make_cells, run_grid
from backdoor_repro.report import provenance


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-root", default=None, help="the dataset (fast / paper)")
    ap.add_argument("--defenses", default="none,ft")
    ap.add_argument("--attacks", default="grid3,white3_bb")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--no-plumbing", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cells = make_cells(args.defenses.split(","), args.attacks.split(","))
    results = []
    for workers in (int(w) for w in args.workers.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            settings = GridSettings(args.profile, args.data_root, device=args.device, plumbing=not args.no_plumbing,
                                    cache_root=str(Path(tmp) / "cache"))
            started = time.perf_counter()
            report = run_grid(cells, settings, Path(tmp) / "grid", "local", workers=workers, log=lambda *_: None)
            seconds = time.perf_counter() - started
        if report.failed:
            raise SystemExit(report.summary())
        results.append({"workers": workers, "seconds": round(seconds, 1),
                        "cells_per_hour": round(3600 * len(cells) / seconds, 1)})
        print(f"{len(cells)} cells, {workers} worker(s): {seconds:.1f} s "
              f"(x{results[0]['seconds'] / seconds:.2f} against {results[0]['workers']})")
    record = provenance(benchmark="grid wall time by local workers", profile=args.profile,
                        plumbing=not args.no_plumbing, cells=[c.id for c in cells], results=results)
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()

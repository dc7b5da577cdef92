"""The orchestration layer, above the method package: command-line tools and the jobs they run.

* :mod:`.grid` — the defense × attack grid (``python -m backdoor_repro.orchestration.grid``): cells as jobs,
  inline, local processes or a SLURM array;
* :mod:`.seed_spread` — the smoke checks rerun across seeds (``python -m backdoor_repro.orchestration.seed_spread``);
* :mod:`.preflight` — a run's settings checked before any compute (``run_all.sh`` and the grid's command line call it);
* :mod:`.notebook_params` — a notebook's declared parameters, checked before papermill runs it.

Nothing in the method package imports this layer; the GPU-session tools (``scripts/``) sit above it too.
"""

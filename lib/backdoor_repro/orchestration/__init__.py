"""The orchestration layer, above the method package: command-line tools and the jobs they run.

* :mod:`.grid` — the defense × attack grid (``python -m backdoor_repro.orchestration.grid``): cells as jobs,
  inline, local processes or a SLURM array;
* :mod:`.seed_spread` — the smoke checks rerun across seeds (``python -m backdoor_repro.orchestration.seed_spread``);
* :mod:`.preflight` — a run's settings checked before any compute (``run_all.sh`` and the grid's command line call it);
* :mod:`.notebook_params` — a notebook's declared parameters, checked before papermill runs it;
* :mod:`.site` — the static HTML site of a profile (``python -m backdoor_repro.orchestration.site``): the results
  matrix (:mod:`.matrix`, rendered by :mod:`.site_html`) and every executed notebook, table and figure;
* :mod:`.summary` — ``run_all.sh``'s closing summary: the outputs written, the claims judged, the checks passed.

Nothing in the method package imports this layer; the GPU-session tools (``scripts/``) sit above it too.
"""

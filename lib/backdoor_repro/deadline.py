"""The time budget of a sliced run: ``run_all.sh --max-minutes N`` (or a wrapper, e.g. a cluster job that knows its
end) sets ``BACKDOOR_REPRO_DEADLINE``; a stage that passes it stops right after writing a checkpoint (or before
starting) with :class:`TimeBudgetExhausted`, and ``run_all.sh`` exits with :data:`TIME_BUDGET_EXIT` so the next slice
continues."""
from __future__ import annotations

import os
import time

DEADLINE_ENV = "BACKDOOR_REPRO_DEADLINE"  # seconds since the epoch (what `date +%s` prints)
TIME_BUDGET_EXIT = 75  # run_all.sh's exit status when it stopped at the deadline (EX_TEMPFAIL: rerun to continue)


class TimeBudgetExhausted(RuntimeError):
    """The run's time budget is spent; everything up to the last checkpoint is saved. Rerun to continue."""


def deadline() -> float | None:
    value = os.environ.get(DEADLINE_ENV)
    if not value:
        return None
    try:
        return float(value)
    except ValueError as error:
        raise ValueError(f"{DEADLINE_ENV} must be a time in seconds since the epoch, got {value!r}") from error


def deadline_passed() -> bool:
    """Whether a deadline is set and has passed (an epoch loop then writes its checkpoint at once and stops)."""
    end = deadline()
    return end is not None and time.time() >= end


def check_time_budget(where: str) -> None:
    """Raise :class:`TimeBudgetExhausted` if the deadline has passed (call only where stopping loses nothing)."""
    end = deadline()
    if end is not None and time.time() >= end:
        # named by its variable: run_all.sh --max-minutes sets it, and so may a wrapper (a cluster job's end)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(end))
        raise TimeBudgetExhausted(f"time budget spent at {where}: the deadline {DEADLINE_ENV}="
                                  f"{os.environ[DEADLINE_ENV]} ({when}) has passed; progress up to here is saved: "
                                  "rerun the same command to continue")

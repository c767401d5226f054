"""One OpenMP thread for every thread of a process that is not a job: the app's, and what stands in for it.

torch's CPU ops run on libgomp, which gives every thread that starts a parallel op its own team
of worker threads. Once a process holds more of those than it has cores, libgomp stops spinning
between ops (its "throttled" spin) and each of a training step's many small ops waits for sleeping
workers to wake. In the app the pages' threads load datasets and make thumbnails with torch, so a
job that would take 54 s took 66-67 s (a quick-demo MPL run cut to 300 steps, through the Studio,
on 2 cores). With one thread by default, only the job's team has workers: 53-56 s.

Jobs set their own count (Studio.start: app_threads, then job_threads between steps); the command
line and the benches that do not stand in for the app keep torch's default.
"""
from __future__ import annotations

import os
import sys


def one_thread_outside_jobs() -> bool:
    """Call before torch is imported (app.py's first lines). Returns whether it could still apply:
    libgomp reads OMP_NUM_THREADS once, when torch loads it. A value already set is kept."""
    if "torch" in sys.modules:
        return False
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return True

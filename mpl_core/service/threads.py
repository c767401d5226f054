"""One OpenMP thread for every thread of a process that is not a job: the app's, and what stands in for it.

torch's CPU ops run on libgomp, which gives every thread that starts a parallel op its own team
of worker threads. Once a process holds more of those than it has cores, libgomp stops spinning
between ops (its "throttled" spin) and each of a training step's many small ops waits for sleeping
workers to wake. A thread that loads a dataset before a job starts (a page's script thread in the
app, the main thread of bench/demo_time.py) keeps its team while it lives: in demo_time's process a
quick-demo MPL run cut to 300 steps took 66-67 s through the Studio on 2 cores, and 53-56 s with one
thread by default (two runs each). A page's thread ends with its rerun and libgomp frees its team
then, so in the app the cost lasts as long as such a thread; this guards both alike.

Jobs set their own count (Studio.start: app_threads, then job_threads between steps). torch takes
the last count set as the default of threads started later, so after a job a page thread may again
have a team, for the few of its ops that are large enough to run in parallel. The command line and
the benches that do not stand in for the app keep torch's default.
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

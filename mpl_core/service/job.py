"""One background job on a workspace: its worker thread, its status and its controls.

    job = TrainingJob(ws, "train", work).start()   # the work functions in service.work build these
    job.status()                                  # a copy of JobStatus, safe to read from any thread
    job.pause(); job.resume(); job.stop(); job.join()

The worker never touches the UI: it writes its status under a lock and its metrics to the
store, and callers poll. The job holds the workspace's JobLock from start() until the work ends.
An exception in the worker ends the job with the message in its status; the process keeps running.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from mpl_core.config import RunConfig
from mpl_core.engine.train import Progress, TrainControl
from mpl_core.errors import MPLStudioError
from mpl_core.service.lock import JobLock
from mpl_core.workspace.workspace import Workspace

ACTIVE_STATES = ("starting", "running", "paused", "stopping")
# How much lower a job started from the app runs than the pages' threads (a nice increment, 0..19).
# The scheduler then gives the pages the CPU whenever both want it, and a job loses nothing while
# the pages are idle: a priority only matters when threads compete for a core. The CLI and torchrun
# keep their jobs at their own priority (nice=0): no pages to protect, and ranks must keep pace.
BACKGROUND_NICE = 10


class JobStopped(Exception):
    """Raised inside non-training work when the stop flag is set: the job ends 'stopped'."""


@dataclass
class JobStatus:
    kind: str  # "train", "pseudo_label", "retrain" or "demo"
    state: str = "starting"  # starting, running, paused, stopping, done, stopped, failed
    run_id: int | None = None
    phase: str = ""
    step: int = 0
    total: int = 0
    metrics: dict = field(default_factory=dict)  # latest logged values
    images_per_s: float = 0.0
    eta_s: float = 0.0
    device: str = ""
    message: str = ""  # what happened, in words
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    result: dict = field(default_factory=dict)  # e.g. {"round": 3} or the final metrics
    notes: list[str] = field(default_factory=list)  # things the user should know (a smaller batch after OOM)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0


class TrainingJob:
    """One background job on a workspace; `work(job) -> result dict` runs in its thread.

    Construct through service.work's start_training / start_pseudo_labeling / start_retrain /
    start_demo, or directly with any work function (tests do)."""

    def __init__(self, ws: Workspace, kind: str, work: Callable[["TrainingJob"], dict], *,
                 run_id: int | None = None, on_progress: Callable[[Progress], None] | None = None, nice: int = 0):
        self.ws, self.kind, self._work, self._nice = ws, kind, work, nice
        self.control = TrainControl()
        self._on_progress = on_progress
        self._lock = threading.Lock()
        self._status = JobStatus(kind, run_id=run_id)
        self._thread = threading.Thread(target=self._main, name=f"mpl-{kind}", daemon=True)
        self._file_lock = JobLock(ws.lock_path)

    # --- control (any thread) ------------------------------------------------------------------

    def start(self, new_run: tuple[str, RunConfig] | None = None) -> "TrainingJob":
        """Take the workspace lock (or raise JobBusy), record the run, start the worker thread."""
        holder = {"kind": self.kind, "pid": os.getpid(), "started": time.time(), "run_id": self.run_id}
        self._file_lock.acquire(holder)
        try:
            if new_run is not None:
                self.set_run(self.ws.store.create_run(new_run[0], new_run[1].to_dict()))
                self._file_lock.describe({**holder, "run_id": self.run_id})
            self._store_status("running", message="")
        except BaseException:
            self._file_lock.release()
            raise
        self._thread.start()
        return self

    def pause(self) -> None:
        if self.status().active:
            self.control.resume.clear()
            self._set(state="paused", message="paused")
            self._store_status("paused")

    def resume(self) -> None:
        if self.status().state == "paused":
            self.control.resume.set()
            self._set(state="running", message="running")
            self._store_status("running")

    def stop(self) -> None:
        if self.status().active:
            self.control.stop.set()
            self.control.resume.set()  # a paused job must wake up to notice the stop
            self._set(state="stopping", message="stopping at the next step")

    def status(self) -> JobStatus:
        with self._lock:
            return dataclasses.replace(self._status, metrics=dict(self._status.metrics),
                                       result=dict(self._status.result), notes=list(self._status.notes))

    def join(self, timeout: float | None = None) -> JobStatus:
        self._thread.join(timeout)
        return self.status()

    @property
    def run_id(self) -> int | None:
        """The run the job works on now (a demo moves from its train run to its retrain run)."""
        with self._lock:
            return self._status.run_id

    # --- worker side ---------------------------------------------------------------------------

    def set_run(self, run_id: int) -> None:
        """The job now works on this run: metrics and status changes go to it."""
        self._set(run_id=run_id)

    def say(self, message: str, *, device: str | None = None) -> None:
        """What the job is doing now, in words (and on which device, once it knows)."""
        self._set(message=message, **({"device": device} if device is not None else {}))

    def note(self, text: str) -> None:
        """Tell the user something that changed how the job runs; kept in the status and the run."""
        with self._lock:
            self._status.notes.append(text)
            self._status.message = text

    def report(self, progress: Progress) -> None:
        """The training loop's progress hook: status for pollers, metrics rows for the store."""
        paused = not self.control.resume.is_set()
        self._set(phase=progress.phase, step=progress.step, total=progress.total, metrics=dict(progress.metrics),
                  images_per_s=progress.images_per_s, eta_s=progress.eta_s, device=progress.device,
                  state="paused" if paused else ("stopping" if self.control.stop.is_set() else "running"))
        run_id = self.run_id
        if run_id is not None and progress.phase in ("train", "finetune") and progress.metrics:
            self.ws.store.add_metrics(run_id, progress.step, progress.phase, progress.metrics)
        if self._on_progress:
            self._on_progress(progress)

    def _set(self, **fields) -> None:
        with self._lock:
            for key, value in fields.items():
                setattr(self._status, key, value)

    def _store_status(self, status: str, **kwargs) -> None:
        run_id = self.run_id
        if run_id is not None:
            self.ws.store.update_run(run_id, status=status, **kwargs)

    def _main(self) -> None:
        lower_priority(self._nice)  # first, so that the threads this one starts inherit it
        self._set(state="running", message="running")
        try:
            result = self._work(self)
            stopped = self.control.stop.is_set() and not result.get("completed", False)
            state = "stopped" if stopped else "done"
            self._set(result=result, message="stopped; resume to continue" if stopped else "finished")
        except JobStopped:
            state = "stopped"
            self._set(message="stopped before it finished; nothing was saved")
        except MPLStudioError as exc:
            state = "failed"
            self._set(error=str(exc), message=str(exc))
            self._store_status("failed", message=str(exc))
        except Exception as exc:  # a bug or an environment fault: keep the process alive, say what failed
            state = "failed"
            text = f"{exc.__class__.__name__}: {exc}"
            self._log_traceback()
            self._set(error=text, message=f"the job failed ({text}); details in {self.ws.root / 'logs'}")
            self._store_status("failed", message=text)
        finally:
            self._file_lock.release()
        self._set(state=state, finished=time.time())

    def _log_traceback(self) -> None:
        try:
            logs = self.ws.root / "logs"
            logs.mkdir(exist_ok=True)
            with open(logs / "jobs.log", "a") as f:
                f.write(f"--- {time.ctime()} {self.kind} run {self.run_id}\n{traceback.format_exc()}\n")
        except OSError:
            pass


def lower_priority(increment: int) -> int | None:
    """Lower the calling thread's CPU priority by `increment` nice steps; returns its nice value,
    or None where it was left as it was.

    Linux schedules threads, not processes, so this thread's nice value is its own, and the
    threads it starts later inherit it (its OpenMP team, which torch creates from the first
    thread that runs a parallel op). Elsewhere, or where the call is refused, nothing changes:
    a priority makes the app more responsive but is never required."""
    if not sys.platform.startswith("linux") or increment <= 0:
        return None
    tid = threading.get_native_id()
    try:
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, now + increment))
        return os.getpriority(os.PRIO_PROCESS, tid)
    except OSError:
        return None

"""How long a run would take here, said before Start (the Train page): timed by a short probe of its
own steps (engine/timing.py) in a thread of its own, or read from the rate that a run of the same
settings measured in this workspace. Never timed while a job trains: a probe would slow the job
down and be slowed by it.

    times = RunTimes()                                   # the Studio keeps one
    rt = times.get(ws, cfg, busy=False, threads=2)       # never waits for a probe: see RunTime.state
    rt.line(cfg)                                         # in words, for the page

A probe is kept per workspace and per what sets a step's time (timing.timing_key: models, image
size, algorithm, batch, device; not the steps), so a preset's or the steps' change costs no new probe.
"""
from __future__ import annotations

import atexit
import threading
import time
from dataclasses import dataclass

import torch

from mpl_core.config import RunConfig
from mpl_core.engine.algorithms import get_algorithm
from mpl_core.engine.timing import RunEstimate, StepTiming, estimate_run, time_steps, timing_key
from mpl_core.engine.train import TrainControl
from mpl_core.errors import MPLStudioError
from mpl_core.service.job import BACKGROUND_NICE, lower_priority
from mpl_core.workspace.workspace import Workspace


@dataclass(frozen=True)
class RunTime:
    """What is known of a run's time before it starts."""
    state: str  # "timed": a probe here; "measured": the rate a run of the same settings logged; "timing": a
    # probe runs now; "waiting": a job runs (timed when it ends); "failed": the probe's error is the message
    estimate: RunEstimate | None = None
    timing: StepTiming | None = None
    at: float = 0.0  # time.time() when timed or measured
    run_id: int | None = None  # "measured": the run whose rate it is
    message: str = ""

    def line(self) -> str:
        """The estimate in words: how long, and where the figure comes from."""
        if self.state == "timing":
            return "Timing a few steps of this run on this machine (seconds; the page stays usable)…"
        if self.state == "waiting":
            return ("The run time is timed when the running job ends: a probe now would slow it down and be "
                    "slowed by it.")
        if self.state == "failed":
            return f"Could not time this run: {self.message}"
        e, t = self.estimate, self.timing
        parts = [f"{name} {duration(s)}" for name, s in (("set-up", e.set_up_s), ("steps", e.steps_s),
                 ("fine-tune", e.finetune_s), ("evaluations", e.eval_s)) if s >= 0.5]
        if self.state == "measured":
            return (f"About {duration(e.total_s)} on this machine, at the rate run {self.run_id} measured with the "
                    f"same model, image size, batch and algorithm: {t.step_s:.3g} s a step ({', '.join(parts)}).")
        return (f"About {duration(e.total_s)} on this machine (timed: {t.step_s:.3g} s a step over {t.steps} "
                f"steps on {t.device}; {', '.join(parts)}).")


def duration(seconds: float) -> str:
    """e.g. "40 s", "17 min", "1.5 h"."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class RunTimes:
    """The probes of this process, one at a time, each in a thread of its own; their timings, kept."""

    def __init__(self):
        self._lock = threading.Lock()
        self._timings: dict[tuple, tuple[StepTiming, float]] = {}  # key -> (timing, time.time())
        self._failed: dict[tuple, str] = {}
        self._probe: tuple[tuple, threading.Thread, TrainControl] | None = None
        atexit.register(self.cancel)  # a daemon thread killed inside torch at exit aborts the process

    def get(self, ws: Workspace, cfg: RunConfig, busy: bool, threads: int) -> RunTime:
        """What is known of cfg's run time on ws; starts a probe where nothing is, unless busy (a job runs)."""
        dataset, split = ws.dataset_and_split()
        try:
            key = (str(ws.root), *timing_key(cfg, dataset.image_size))
        except MPLStudioError as exc:  # a device asked for that is not here: Start will say the same
            return RunTime("failed", message=str(exc))
        measured = measured_timing(ws, cfg, dataset.image_size)  # a whole run's rate: better than a probe's
        if measured is not None:
            timing, run, overhead = measured
            e = estimate_run(cfg, timing, dataset, split)
            e = RunEstimate(overhead, e.steps_s, e.finetune_s, 0.0)  # set-up, evaluations, saves: as that run's
            return RunTime("measured", e, timing, run["updated"], run["id"])
        with self._lock:
            kept, failed = self._timings.get(key), self._failed.get(key)
        if kept is not None:
            return RunTime("timed", estimate_run(cfg, kept[0], dataset, split), kept[0], kept[1])
        if failed is not None:
            return RunTime("failed", message=failed)
        if busy:
            return RunTime("waiting")
        self._start(key, ws, cfg, threads)
        return RunTime("timing")

    def _start(self, key: tuple, ws: Workspace, cfg: RunConfig, threads: int) -> None:
        """A probe of cfg in its own thread, unless one runs (the next call starts this one)."""
        with self._lock:
            if self._probe is not None and self._probe[1].is_alive():
                return
            control = TrainControl()
            thread = threading.Thread(target=self._run, args=(key, ws, cfg, threads, control), daemon=True,
                                      name="mpl-time-probe")
            self._probe = (key, thread, control)
            thread.start()  # under the lock: two pages asking at once start one probe

    def _run(self, key: tuple, ws: Workspace, cfg: RunConfig, threads: int, control: TrainControl) -> None:
        try:
            timing = run_probe(ws, cfg, threads, control)
        except MPLStudioError as exc:
            with self._lock:
                self._failed[key] = str(exc)
            return
        except Exception as exc:  # a bug or an environment fault: say so on the page, keep the app
            with self._lock:
                self._failed[key] = f"{exc.__class__.__name__}: {exc}"
            return
        if not control.stop.is_set():  # a probe cut short by a job's start measured nothing whole
            with self._lock:
                self._timings[key] = (timing, time.time())

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a running probe to end (tests, benches)."""
        with self._lock:
            probe = self._probe
        if probe is not None:
            probe[1].join(timeout)

    def cancel(self, timeout: float = 30.0) -> None:
        """Stop a running probe and wait for it (a job is about to start): it ends within a step."""
        with self._lock:
            probe = self._probe
        if probe is not None and probe[1].is_alive():
            probe[2].stop.set()
            probe[1].join(timeout)


def run_probe(ws: Workspace, cfg: RunConfig, threads: int, control: TrainControl | None = None) -> StepTiming:
    """Time cfg on ws as a job would run: this thread at a job's priority and with `threads` CPU threads
    (a job started from the app takes every core while no one uses the pages)."""
    lower_priority(BACKGROUND_NICE)
    torch.set_num_threads(max(1, threads))
    return time_steps(cfg, *ws.dataset_and_split(), control=control)


def probe_in_thread(ws: Workspace, cfg: RunConfig, threads: int) -> StepTiming:
    """run_probe in a thread that ends with it (its CPU threads then go: see service/threads.py), waited for."""
    out: list = []
    thread = threading.Thread(target=lambda: out.append(run_probe(ws, cfg, threads)), name="mpl-time-probe")
    thread.start()
    thread.join()
    if not out:
        raise MPLStudioError("the probe failed; see the error above")
    return out[0]


def measured_timing(ws: Workspace, cfg: RunConfig, image_size: int) -> tuple[StepTiming, dict, float] | None:
    """(seconds a step at its logged rates, the run, its seconds beyond its steps) of the newest run in ws
    with cfg's timing key that logged a rate; the seconds beyond: set-up, evaluations and saves, for a
    finished run (0 for one that runs). A run of a size the workspace had before is not told apart."""
    key = timing_key(cfg, image_size)
    for run in reversed(ws.store.runs()):
        try:
            saved = RunConfig.from_dict(run["config"])
        except MPLStudioError:
            continue
        if timing_key(saved, image_size) != key or run["metrics"].get("processes", 1) > 1:
            continue  # other settings, or torchrun's rate over several processes
        timing = logged_timing(saved, ws.store.metric_rows(run["id"]))
        if timing is None:
            continue
        finetunes = saved.train.finetune_steps if get_algorithm(saved.algorithm.name).finetune else 0
        steps_s = saved.train.steps * timing.step_s + finetunes * timing.finetune_step_s
        done = run["status"] == "done"
        return timing, run, max(0.0, run["updated"] - run["created"] - steps_s) if done else 0.0
    return None


def logged_timing(cfg: RunConfig, rows: list[dict]) -> StepTiming | None:
    """Seconds a step from a run's logged images/s (each phase's last row: its rate since the phase
    began); a fine-tune step not yet logged: a main step's share of its labeled images."""
    rates = {row["phase"]: row["images_per_s"] for row in rows if row.get("images_per_s")}
    if "train" not in rates:
        return None
    t = cfg.train
    main = t.batch_size * (1 + t.mu if get_algorithm(cfg.algorithm.name).unlabeled else 1)
    step_s = main / rates["train"]
    finetune_s = t.batch_size / rates["finetune"] if "finetune" in rates else step_s * t.batch_size / main
    steps = max(int(row["step"]) for row in rows if row["phase"] == "train")
    return StepTiming(0.0, step_s, finetune_s, 0.0, 0.0, steps, "")

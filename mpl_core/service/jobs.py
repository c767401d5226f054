"""Background jobs: training, pseudo-label generation and retrain rounds in one worker thread.

    job = start_training(ws, cfg)          # returns at once; the work runs in a thread
    job.status()                          # a copy of JobStatus, safe to read from any thread
    job.pause(); job.resume(); job.stop(); job.join()

The worker never touches the UI: it writes its status under a lock and its metrics to the
store, and callers poll. One job at a time per workspace, across threads and processes: the
job holds an exclusive `flock` on the workspace's job.lock, which the kernel releases if the
process dies, so a crash never leaves a stale lock behind. An exception in the worker ends the
job with the message in its status; the process keeps running.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from mpl_core.config import RunConfig
from mpl_core.engine import distributed as dist_
from mpl_core.engine.checkpoint import latest_checkpoint
from mpl_core.engine.train import Progress, TrainControl, device_label, load_model, pick_device, train
from mpl_core.errors import MPLStudioError
from mpl_core.workspace.workspace import Workspace

try:  # torch.cuda.OutOfMemoryError exists on every build (CPU ones too); its home moved over versions
    from torch import OutOfMemoryError as OutOfMemory
except ImportError:  # pragma: no cover
    from torch.cuda import OutOfMemoryError as OutOfMemory

ACTIVE_STATES = ("starting", "running", "paused", "stopping")
MIN_OOM_BATCH = 2  # below this, out of memory is an error: the model does not fit


class JobBusy(MPLStudioError):
    """Another job holds the workspace."""


class _Stopped(Exception):
    """Raised inside non-training work when the stop flag is set."""


@dataclass
class JobStatus:
    kind: str  # "train", "pseudo_label" or "retrain"
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


class JobLock:
    """An exclusive, non-blocking flock on the workspace's job.lock (released when the fd closes)."""

    def __init__(self, path):
        self.path = path
        self._fd: int | None = None

    def acquire(self, holder: dict) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise busy_error(self.path) from None
        self._fd = fd
        self.describe(holder)

    def describe(self, holder: dict) -> None:
        """Say who holds the lock (read by describe_holder for the 'busy' message)."""
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(holder).encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_holder(path) -> dict:
    """What the holder of the workspace's lock wrote about itself ({} if unreadable)."""
    try:
        with open(path) as f:
            h = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return {}
    return h if isinstance(h, dict) else {}


def describe_holder(path, holder: dict | None = None) -> str:
    """'train run 3, started 14:02 by process 4242' from the lock file (or a holder already read)."""
    h = holder if holder is not None else read_holder(path)
    if not h:
        return "unknown job"
    when = time.strftime("%H:%M", time.localtime(h.get("started", 0)))
    run = f" run {h['run_id']}" if h.get("run_id") else ""
    return f"{h.get('kind', 'a job')}{run}, started {when} by process {h.get('pid', '?')}"


def busy_error(path) -> JobBusy:
    return JobBusy(f"another job is running in this workspace ({describe_holder(path)}); "
                   "stop it or wait for it to finish")


def lock_is_held(path) -> bool:
    if not os.path.exists(path):
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def recover(ws: Workspace) -> int:
    """After a restart: runs a dead process left 'running' become 'interrupted' (resumable)."""
    if lock_is_held(ws.lock_path):
        return 0
    return ws.store.mark_interrupted()


class TrainingJob:
    """One background job on a workspace. Construct through start_training / start_pseudo_labeling /
    start_retrain."""

    def __init__(self, ws: Workspace, kind: str, work: Callable[["TrainingJob"], dict], *,
                 run_id: int | None = None, on_progress: Callable[[Progress], None] | None = None):
        self.ws, self.kind, self._work = ws, kind, work
        self.control = TrainControl()
        self._on_progress = on_progress
        self._lock = threading.Lock()
        self._status = JobStatus(kind, run_id=run_id)
        self._thread = threading.Thread(target=self._main, name=f"mpl-{kind}", daemon=True)
        self._file_lock = JobLock(ws.lock_path)

    # --- control (any thread) ------------------------------------------------------------------

    def start(self, new_run: tuple[str, RunConfig] | None = None) -> "TrainingJob":
        """Take the workspace lock (or raise JobBusy), record the run, start the worker thread."""
        holder = {"kind": self.kind, "pid": os.getpid(), "started": time.time(), "run_id": self._status.run_id}
        self._file_lock.acquire(holder)
        try:
            if new_run is not None:
                self._status.run_id = self.ws.store.create_run(new_run[0], new_run[1].to_dict())
                self._file_lock.describe({**holder, "run_id": self._status.run_id})
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

    # --- worker side ---------------------------------------------------------------------------

    def _set(self, **fields) -> None:
        with self._lock:
            for key, value in fields.items():
                setattr(self._status, key, value)

    def note(self, text: str) -> None:
        """Tell the user something that changed how the job runs; kept in the status and the run."""
        with self._lock:
            self._status.notes.append(text)
            self._status.message = text

    def _store_status(self, status: str, **kwargs) -> None:
        if self._status.run_id is not None:
            self.ws.store.update_run(self._status.run_id, status=status, **kwargs)

    def report(self, progress: Progress) -> None:
        """The training loop's progress hook: status for pollers, metrics rows for the store."""
        paused = not self.control.resume.is_set()
        self._set(phase=progress.phase, step=progress.step, total=progress.total, metrics=dict(progress.metrics),
                  images_per_s=progress.images_per_s, eta_s=progress.eta_s, device=progress.device,
                  state="paused" if paused else ("stopping" if self.control.stop.is_set() else "running"))
        if self._status.run_id is not None and progress.phase in ("train", "finetune") and progress.metrics:
            self.ws.store.add_metrics(self._status.run_id, progress.step, progress.phase, progress.metrics)
        if self._on_progress:
            self._on_progress(progress)

    def _main(self) -> None:
        self._set(state="running", message="running")
        try:
            result = self._work(self)
            stopped = self.control.stop.is_set() and not result.get("completed", False)
            state = "stopped" if stopped else "done"
            self._set(result=result, message="stopped; resume to continue" if stopped else "finished")
        except _Stopped:
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
                f.write(f"--- {time.ctime()} {self.kind} run {self._status.run_id}\n{traceback.format_exc()}\n")
        except OSError:
            pass


# --- the three kinds of work ---------------------------------------------------------------------

def start_training(ws: Workspace, cfg: RunConfig | None = None, *, run_id: int | None = None,
                   on_progress: Callable[[Progress], None] | None = None) -> TrainingJob:
    """Train a new run with cfg (the workspace's data settings win), or resume run_id."""
    store = ws.store
    if run_id is not None:
        run = store.run(run_id)
        cfg, kind = RunConfig.from_dict(run["config"]), run["kind"]
        work = _retrain_work(cfg) if kind == "retrain" else _train_work(cfg)
        return TrainingJob(ws, kind, work, run_id=run_id, on_progress=on_progress).start()
    if cfg is None:
        raise MPLStudioError("give a training configuration or a run to resume")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(ws.data))
    cfg.validate()
    return TrainingJob(ws, "train", _train_work(cfg), on_progress=on_progress).start(new_run=("train", cfg))


def start_retrain(ws: Workspace, cfg: RunConfig, *,
                  on_progress: Callable[[Progress], None] | None = None) -> TrainingJob:
    """A retrain round on given + accepted + human labels (rejected excluded), class-balanced."""
    cfg = _retrain_config(ws, cfg)
    return TrainingJob(ws, "retrain", _retrain_work(cfg), on_progress=on_progress).start(new_run=("retrain", cfg))


def start_pseudo_labeling(ws: Workspace, run_id: int | None = None, model: str = "auto", *,
                          on_progress: Callable[[Progress], None] | None = None) -> TrainingJob:
    """Label the unlabeled pool with a run's teacher (MPL, default) or student into a new round."""
    if lock_is_held(ws.lock_path):  # say "busy" before anything about the run
        raise busy_error(ws.lock_path)
    if run_id is None:
        runs = [r for r in ws.store.runs() if r["checkpoint"] or latest_checkpoint(ws.run_dir(r["id"]))]
        if not runs:
            raise MPLStudioError("no trained model in this workspace yet: train one first")
        run_id = runs[-1]["id"]
    ws.store.run(run_id)  # an unknown run is a clear error here, not in the worker
    if model not in ("auto", "teacher", "student"):
        raise MPLStudioError(f"model must be teacher or student, not {model!r}")
    job = TrainingJob(ws, "pseudo_label", _pseudo_label_work(run_id, model), on_progress=on_progress)
    return job.start()


def _train_work(cfg: RunConfig):
    def work(job: TrainingJob) -> dict:
        ws, run_id = job.ws, job._status.run_id
        dataset, split = ws.dataset(), ws.split()
        _announce({"kind": "train", "cfg": cfg.to_dict(), "labels": dataset.train.labels,
                   "fully_labeled": dataset.fully_labeled, "split": split})
        return _run_training(job, cfg, dataset, split, run_id, extra={})
    return work


def _retrain_work(cfg: RunConfig):
    def work(job: TrainingJob) -> dict:
        from mpl_core.workspace.review import reviewed_training_set
        job._set(message="collecting reviewed labels")
        reviewed = reviewed_training_set(job.ws)
        _announce({"kind": "retrain", "cfg": cfg.to_dict(), "labels": reviewed.dataset.train.labels,
                   "fully_labeled": reviewed.dataset.fully_labeled, "split": reviewed.split})
        counts = {f"labels_{k}": v for k, v in reviewed.counts.items()}
        return _run_training(job, cfg, reviewed.dataset, reviewed.split, job._status.run_id, extra=counts)
    return work


def _run_training(job: TrainingJob, cfg: RunConfig, dataset, split, run_id: int, extra: dict) -> dict:
    store = job.ws.store
    store.update_run(run_id, status="running", message="")
    if cfg.train.threads:
        import torch
        torch.set_num_threads(cfg.train.threads)
    while True:
        try:
            result = train(cfg, dataset, split, out_dir=job.ws.run_dir(run_id), on_progress=job.report,
                           control=job.control, resume=True)
            break
        except OutOfMemory as exc:
            if dist_.current() is not None:  # the other ranks cannot follow a retry; say what to change
                raise MPLStudioError(f"out of GPU memory at batch size {cfg.train.batch_size} per process; run "
                                     "again with a smaller --batch-size (it resumes from the last checkpoint)") from exc
            cfg = _halve_batch(job, cfg, run_id, exc)  # resumes from the newest checkpoint
    metrics = {**result.metrics, **extra, "labels_used": len(split.labeled), "step": result.step}
    if (ctx := dist_.current()) is not None:
        metrics["processes"] = ctx.world_size
    status = "stopped" if result.stopped else "done"
    store.update_run(run_id, status=status, checkpoint=str(result.checkpoint) if result.checkpoint else None,
                     metrics=metrics, message="stopped; resume to continue" if result.stopped else "")
    return {**metrics, "completed": not result.stopped}


def _halve_batch(job: TrainingJob, cfg: RunConfig, run_id: int, exc: BaseException) -> RunConfig:
    """Out of GPU memory: the same run again from its newest checkpoint with half the batch.

    The step's work is redone from the checkpoint rather than patched in place: an MPL step
    updates the student before the teacher, so a step cut short can leave them out of step.
    """
    old = cfg.train.batch_size
    if old // 2 < MIN_OOM_BATCH:
        raise MPLStudioError(f"out of GPU memory even with batch size {old}; pick a smaller model, fewer "
                             "unlabeled images per step (mu) or the CPU") from exc
    _free_accelerator_memory()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=old // 2))
    job.ws.store.update_run(run_id, config=cfg.to_dict())  # a later resume keeps the smaller batch
    job.note(f"out of GPU memory at batch size {old}; retrying with batch size {old // 2} from the "
             "last checkpoint")
    return cfg


def _free_accelerator_memory() -> None:
    import gc

    import torch
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _pseudo_label_work(run_id: int, which: str):
    def work(job: TrainingJob) -> dict:
        from mpl_core.engine.predict import predict_pool
        ws = job.ws
        nonlocal which
        if which == "auto":
            which = "teacher" if ws.store.run(run_id)["config"]["algorithm"]["name"] == "mpl" else "student"
        path = latest_checkpoint(ws.run_dir(run_id))
        if path is None:
            raise MPLStudioError(f"run {run_id} has no checkpoint yet; train it first")
        ctx = dist_.current()
        _announce({"kind": "pseudo_label", "checkpoint": str(path), "which": which})
        device = ctx.device() if ctx else pick_device(ws.store.run(run_id)["config"]["train"]["device"])
        job._set(message=f"loading the {which} of run {run_id}", device=device_label(device, amp=True))
        model, info = load_model(path, which, device)
        dataset, split = ws.dataset(), ws.split()
        if info["class_names"] != dataset.class_names:
            raise MPLStudioError("the run's classes differ from this workspace's data; pick another run")
        t0 = time.perf_counter()

        def on_batch(done: int, total: int) -> None:
            if job.control.stop.is_set():
                raise _Stopped()
            job.control.wait_if_paused()
            rate = done / max(1e-9, time.perf_counter() - t0)
            job.report(Progress("pseudo_label", done, total, {}, rate, (total - done) / max(rate, 1e-9),
                                device_label(device, amp=True)))  # predict_logits' default

        batch = 1024
        while True:
            try:
                probs, validation = predict_pool(model, dataset, _my_shard(split, ctx), device, batch_size=batch,
                                                 on_batch=on_batch)
                break
            except OutOfMemory as exc:
                if batch // 2 < MIN_OOM_BATCH:
                    raise MPLStudioError("out of GPU memory while pseudo-labeling even one image at a time; "
                                         "use the CPU") from exc
                _free_accelerator_memory()
                job.note(f"out of GPU memory at inference batch {batch}; retrying with {batch // 2}")
                batch //= 2
        if ctx is not None:
            job._set(message=f"collecting pseudo-labels from {ctx.world_size} processes")
            probs = np.concatenate(dist_.gather_objects(probs, ctx))
        job._set(message="saving pseudo-labels")
        ids = [dataset.train.ids[i] for i in split.unlabeled.tolist()]
        round_ = ws.store.add_pseudo_labels(run_id, which, ids, split.unlabeled.numpy(), probs, validation)
        return {"round": round_, "count": len(ids), "run_id": run_id, "model": which, "completed": True}
    return work


# --- several processes (torchrun) ----------------------------------------------------------------

def _announce(plan: dict) -> None:
    """Under torchrun, rank 0 (which runs the job and owns the store) tells the other ranks what to do."""
    ctx = dist_.current()
    if ctx is not None:
        dist_.broadcast_object(plan, ctx)


def _my_shard(split, ctx):
    """The part of the unlabeled pool this rank pseudo-labels (contiguous, so rank 0 concatenates)."""
    if ctx is None:
        return split
    return dataclasses.replace(split, unlabeled=split.unlabeled[dist_.contiguous_shard(len(split.unlabeled), ctx)])


def follow(ws_name: str, data_root: str) -> dict:
    """Ranks other than 0: wait for rank 0's plan for this workspace and do this rank's part of it.

    They read the workspace's images and checkpoints and write nothing: rank 0 sends the labels
    and split to train on, and gathers the pseudo-labels to store.
    """
    from mpl_core.engine.predict import pool_probabilities
    from mpl_core.workspace.workspace import open_workspace
    ctx = dist_.current()
    plan = dist_.broadcast_object(None, ctx)
    ws = open_workspace(ws_name, data_root)
    device = ctx.device()
    if plan["kind"] in ("train", "retrain"):
        base = ws.dataset()
        train_set = dataclasses.replace(base.train, labels=plan["labels"])
        dataset = dataclasses.replace(base, train=train_set, fully_labeled=plan["fully_labeled"])
        result = train(RunConfig.from_dict(plan["cfg"]), dataset, plan["split"], out_dir=None, resume=True)
        return result.metrics
    model, _ = load_model(plan["checkpoint"], plan["which"], device)
    mine = _my_shard(ws.split(), ctx).unlabeled  # rank 0 alone makes the validation predictions
    probs = pool_probabilities(model, ws.dataset().train.images[mine], device)
    dist_.gather_objects(probs, ctx)
    return {"count": len(probs)}


def start_demo(ws: Workspace, train_cfg: RunConfig, retrain_cfg: RunConfig, *, target_precision: float = 0.95,
               who: str = "demo", on_progress: Callable[[Progress], None] | None = None) -> TrainingJob:
    """The whole loop in one job: train -> pseudo-label -> accept above the threshold whose estimated
    precision reaches target_precision -> retrain. The result tells the story in numbers."""
    cfgs = [dataclasses.replace(train_cfg, data=dataclasses.replace(ws.data)).validate(),
            _retrain_config(ws, retrain_cfg)]
    return TrainingJob(ws, "demo", _demo_work(cfgs[0], cfgs[1], target_precision, who),
                       on_progress=on_progress).start()


def _retrain_config(ws: Workspace, cfg: RunConfig) -> RunConfig:
    """Retrain rounds sample labeled batches class-balanced: accepted pseudo-labels crowd into the
    classes the teacher finds easy, and the hard classes would be drowned out."""
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(ws.data),
                              train=dataclasses.replace(cfg.train, balance_classes=True))
    return cfg.validate()


def _demo_work(train_cfg: RunConfig, retrain_cfg: RunConfig, target: float, who: str):
    def work(job: TrainingJob) -> dict:
        from mpl_core.workspace.calibration import threshold_for_precision
        from mpl_core.workspace.review import decide_rows, select_by_threshold, threshold_index
        ws, story = job.ws, {}
        job._set(message="1/4 training the teacher and student (MPL)")
        job._status.run_id = ws.store.create_run("train", train_cfg.to_dict())
        trained = _train_work(train_cfg)(job)
        if not trained["completed"]:
            return trained
        story.update(before_test_acc=trained.get("test_acc"), train_run=job._status.run_id,
                     labels_given=trained["labels_used"])
        job._set(message="2/4 pseudo-labeling the unlabeled pool")
        labeled = _pseudo_label_work(job._status.run_id, "auto")(job)
        story.update(round=labeled["round"], pseudo_labels=labeled["count"])
        job._set(message="3/4 accepting confident pseudo-labels")
        threshold = threshold_for_precision(threshold_index(ws), target) or 0.99
        rows = ws.store.pseudo_labels()
        positions = select_by_threshold(rows, ws.store.current_decisions(), above=threshold)
        decide_rows(ws, rows, positions, "accept", who)
        story.update(threshold=threshold, accepted=len(positions))
        job._set(message="4/4 retraining on the reviewed labels")
        job._status.run_id = ws.store.create_run("retrain", retrain_cfg.to_dict())
        retrained = _retrain_work(retrain_cfg)(job)
        story.update(after_test_acc=retrained.get("test_acc"), retrain_run=job._status.run_id,
                     labels_used=retrained.get("labels_used"), completed=retrained["completed"])
        return story
    return work

"""What background jobs do: train, resume, retrain on reviewed labels, pseudo-label (the demo: demo.py).

    job = start_training(ws, cfg)          # returns at once; the work runs in the job's thread
    job = start_pseudo_labeling(ws)        # the newest trained run's teacher (MPL) or student
    job = start_retrain(ws, cfg)           # given + accepted + human labels, class-balanced

Each start_* checks what a user could have got wrong before the thread starts, then hands a work
function to a TrainingJob (service.job). Out of GPU memory, the work retries with half the batch.
Under torchrun, rank 0 runs the job and `follow` runs the other ranks' part of it.
"""
from __future__ import annotations

import dataclasses
import gc
import time
from typing import Callable

import numpy as np
import torch

from mpl_core.config import TORCHVISION_MODELS, RunConfig
from mpl_core.engine import distributed as dist_
from mpl_core.engine.algorithms import get_algorithm
from mpl_core.engine.backbones import imagenet_file, imagenet_state
from mpl_core.engine.checkpoint import latest_checkpoint, read_info
from mpl_core.engine.defaults import for_device
from mpl_core.engine.models import role_model, start_weights
from mpl_core.engine.predict import pool_probabilities, predict_pool
from mpl_core.engine.state import checkpoint_file, load_model, saved_model_config
from mpl_core.engine.train import Progress, device_label, pick_device, train
from mpl_core.errors import MPLStudioError
from mpl_core.presets import labels_alone_config
from mpl_core.service.job import JobStopped, TrainingJob
from mpl_core.service.lock import busy_error, lock_is_held
from mpl_core.workspace.attach import check_fits
from mpl_core.workspace.results import handed_back
from mpl_core.workspace.review import reviewed_training_set
from mpl_core.workspace.workspace import Workspace, open_workspace

try:  # torch.cuda.OutOfMemoryError exists on every build (CPU ones too); its home moved over versions
    from torch import OutOfMemoryError as OutOfMemory
except ImportError:  # pragma: no cover
    from torch.cuda import OutOfMemoryError as OutOfMemory

MIN_OOM_BATCH = 2  # below this, out of memory is an error: the model does not fit


def recover(ws: Workspace) -> int:
    """After a restart: runs a dead process left 'running' become 'interrupted' (resumable)."""
    if lock_is_held(ws.lock_path):
        return 0
    return ws.store.mark_interrupted()


# --- starting jobs -------------------------------------------------------------------------------

def start_training(ws: Workspace, cfg: RunConfig | None = None, *, run_id: int | None = None,
                   on_progress: Callable[[Progress], None] | None = None, nice: int = 0,
                   labels_alone: bool = False) -> TrainingJob:
    """Train a new run with cfg (the workspace's data settings win), or resume run_id. labels_alone: a
    run that learns from unlabeled images is preceded by a supervised run on the same labels, in a run
    of its own, and says where it ended below it on validation (with_labels_alone). Every start_*
    takes `nice`: how much lower than its caller the job's thread runs (see job.lower_priority)."""
    store = ws.store
    if run_id is not None:
        run = store.run(run_id)
        cfg, kind = RunConfig.from_dict(run["config"]), run["kind"]
        work = retrain_work(cfg) if kind == "retrain" else train_work(cfg)
        return TrainingJob(ws, kind, work, run_id=run_id, on_progress=on_progress, nice=nice).start()
    if cfg is None:
        raise MPLStudioError("give a training configuration or a run to resume")
    cfg = with_init_file(dataclasses.replace(cfg, data=dataclasses.replace(ws.data)))
    cfg.validate()
    if labels_alone and get_algorithm(cfg.algorithm.name).unlabeled and not cfg.model.init_from:
        return TrainingJob(ws, "train", with_labels_alone(cfg), on_progress=on_progress, nice=nice).start()
    return TrainingJob(ws, "train", train_work(cfg), on_progress=on_progress, nice=nice).start(new_run=("train", cfg))


def with_labels_alone(cfg: RunConfig):
    """The work of a run preceded by a supervised run on the same labels (presets.labels_alone_config:
    seconds beside it), each a run of its own. Where the run's model ends below it on validation, its
    message says so and names the run to use: a semi-supervised run is never silently worse than the
    labels it was given."""
    def work(job: TrainingJob) -> dict:
        base = labels_alone_config(cfg)
        job.set_run(job.ws.store.create_run("train", base.to_dict()))
        alone, alone_run = train_work(base)(job), job.run_id
        if not alone["completed"]:
            return alone
        job.set_run(job.ws.store.create_run("train", cfg.to_dict()))
        result = train_work(cfg)(job)
        if result["completed"]:
            result.update(_against_labels_alone(job, alone_run, alone, result))
        return result
    return work


def _against_labels_alone(job: TrainingJob, alone_run: int, alone: dict, result: dict) -> dict:
    """labels_alone_run and labels_alone_val_acc in the run's metrics; a message where it is behind."""
    store, run_id = job.ws.store, job.run_id
    role, val, _ = handed_back(result)
    base = alone.get("val_acc")
    extra = {"labels_alone_run": alone_run, "labels_alone_val_acc": base}
    store.update_run(run_id, metrics={**store.run(run_id)["metrics"], **extra})
    if base is not None and val is not None and val < base:  # NaN (no validation) compares False
        store.update_run(run_id, message=f"its {role} ended below the labels alone on validation ({val:.1%} "
                                         f"against {base:.1%}): run {alone_run}, supervised on the same labels, "
                                         "is the better model")
    return extra


def start_retrain(ws: Workspace, cfg: RunConfig, *,
                  on_progress: Callable[[Progress], None] | None = None, nice: int = 0) -> TrainingJob:
    """A retrain round on given + accepted + human labels (rejected excluded), class-balanced."""
    cfg = retrain_config(ws, cfg)
    return TrainingJob(ws, "retrain", retrain_work(cfg), on_progress=on_progress,
                       nice=nice).start(new_run=("retrain", cfg))


def start_pseudo_labeling(ws: Workspace, run_id: int | None = None, model: str = "auto", *,
                          on_progress: Callable[[Progress], None] | None = None, nice: int = 0) -> TrainingJob:
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
    job = TrainingJob(ws, "pseudo_label", pseudo_label_work(run_id, model), on_progress=on_progress, nice=nice)
    return job.start()


def retrain_config(ws: Workspace, cfg: RunConfig) -> RunConfig:
    """Retrain rounds sample labeled batches class-balanced: accepted pseudo-labels crowd into the
    classes the teacher finds easy, and the hard classes would be drowned out."""
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(ws.data),
                              train=dataclasses.replace(cfg.train, balance_classes=True))
    return with_init_file(cfg).validate()


def fine_tune_source(ws: Workspace) -> dict | None:
    """What a retrain round needs to fine-tune a model of the run that made the newest pseudo-labels:
    {"run_id", "starts": {"student": overrides, "teacher": overrides}} (its newest checkpoint and
    that model, as the checkpoint records it; "teacher" only where the run has one), or None before
    the first round or without a checkpoint."""
    rounds = ws.store.rounds()
    if not rounds:
        return None
    run_id = rounds[-1]["run_id"]
    path = latest_checkpoint(ws.run_dir(run_id))
    if path is None:
        return None
    info = read_info(path)
    model = saved_model_config(info)
    student = {"init_from": str(path.resolve()), "init_role": "student", "model": role_model(model, "student")[0],
               "width": model.width, "weights": model.weights}
    starts = {"student": student}
    if get_algorithm(info["config"]["algorithm"]["name"]).teacher:
        starts["teacher"] = {**student, "init_role": "teacher", "model": role_model(model, "teacher")[0]}
    return {"run_id": run_id, "starts": starts}


def with_init_file(cfg: RunConfig) -> RunConfig:
    """init_from as the checkpoint file it names (a run folder means its newest): checked before the
    job starts, and the run's record says exactly which weights it started from."""
    if not cfg.model.init_from:
        return cfg
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_from=str(checkpoint_file(
        cfg.model.init_from).resolve())))


# --- training ------------------------------------------------------------------------------------

def train_work(cfg: RunConfig):
    def work(job: TrainingJob) -> dict:
        ws = job.ws
        dataset, split = ws.dataset(), ws.split()
        _announce({"kind": "train", "cfg": cfg.to_dict(), "labels": dataset.train.labels,
                   "fully_labeled": dataset.fully_labeled, "split": split})
        return _run_training(job, cfg, dataset, split, job.run_id, extra={})
    return work


def retrain_work(cfg: RunConfig):
    def work(job: TrainingJob) -> dict:
        job.say("collecting reviewed labels")
        reviewed = reviewed_training_set(job.ws)
        _announce({"kind": "retrain", "cfg": cfg.to_dict(), "labels": reviewed.dataset.train.labels,
                   "fully_labeled": reviewed.dataset.fully_labeled, "split": reviewed.split})
        counts = {f"labels_{k}": v for k, v in reviewed.counts.items()}
        extra = {**counts, "reviewed_at": reviewed.read_at}  # a resumed round reads (and records) them again
        return _run_training(job, cfg, reviewed.dataset, reviewed.split, job.run_id, extra=extra)
    return work


def _run_training(job: TrainingJob, cfg: RunConfig, dataset, split, run_id: int, extra: dict) -> dict:
    store = job.ws.store
    store.update_run(run_id, status="running", message="")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    ctx = dist_.current()
    cfg = for_device(cfg, ctx.device() if ctx else pick_device(cfg.train.device))
    store.update_run(run_id, config=cfg.to_dict())  # the run's record says what the device chose
    if ctx is None:
        _fetch_start_weights(job, cfg, dataset.image_size, run_id)
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
    if ctx is not None:
        metrics["processes"] = ctx.world_size
    status = "stopped" if result.stopped else "done"
    store.update_run(run_id, status=status, checkpoint=str(result.checkpoint) if result.checkpoint else None,
                     metrics=metrics, message="stopped; resume to continue" if result.stopped else "")
    return {**metrics, "completed": not result.stopped}


def _fetch_start_weights(job: TrainingJob, cfg: RunConfig, image_size: int, run_id: int) -> None:
    """Download the ImageNet weights a fresh run starts from before it trains, saying so in the job's
    status (the Train page shows it): the first download takes seconds to minutes."""
    if latest_checkpoint(job.ws.run_dir(run_id)) is not None:
        return  # a resumed run's checkpoint brings its own weights
    model = dataclasses.replace(cfg.model, image_size=image_size)
    for arch, weights in start_weights(model, get_algorithm(cfg.algorithm.name).teacher):
        if weights == "imagenet" and arch in TORCHVISION_MODELS and not imagenet_file(arch).is_file():
            imagenet_state(arch, on_download=job.say)
            job.say("running")


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
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- pseudo-labeling -----------------------------------------------------------------------------

def pseudo_label_work(run_id: int, which: str):
    def work(job: TrainingJob) -> dict:
        ws = job.ws
        nonlocal which
        if which == "auto":
            algorithm = get_algorithm(ws.store.run(run_id)["config"]["algorithm"]["name"])
            which = "teacher" if algorithm.teacher else "student"  # MPL's teacher labels the pool
        path = latest_checkpoint(ws.run_dir(run_id))
        if path is None:
            raise MPLStudioError(f"run {run_id} has no checkpoint yet; train it first")
        ctx = dist_.current()
        _announce({"kind": "pseudo_label", "checkpoint": str(path), "which": which})
        device = ctx.device() if ctx else pick_device(ws.store.run(run_id)["config"]["train"]["device"])
        job.say(f"loading the {which} of run {run_id}", device=device_label(device, amp=True))
        model, info = load_model(path, which, device)
        dataset, split = ws.dataset(), ws.split()
        check_fits(ws, info)  # same classes, channels and training size as the data now
        probs, validation = _predict_with_halving(job, model, dataset, _my_shard(split, ctx), device)
        if ctx is not None:
            job.say(f"collecting pseudo-labels from {ctx.world_size} processes")
            probs = np.concatenate(dist_.gather_objects(probs, ctx))
        job.say("saving pseudo-labels")
        ids = [dataset.train.ids[i] for i in split.unlabeled.tolist()]
        round_ = ws.store.add_pseudo_labels(run_id, which, ids, split.unlabeled.numpy(), probs, validation)
        return {"round": round_, "count": len(ids), "run_id": run_id, "model": which, "completed": True}
    return work


def _predict_with_halving(job: TrainingJob, model, dataset, split, device):
    """predict_pool with progress, pause and stop; out of GPU memory, again with half the batch."""
    t0 = time.perf_counter()

    def on_batch(done: int, total: int) -> None:
        if job.control.stop.is_set():
            raise JobStopped()
        job.control.wait_if_paused()
        job.control.apply_threads()  # as training does between steps (the app: see service/threads.py)
        rate = done / max(1e-9, time.perf_counter() - t0)
        job.report(Progress("pseudo_label", done, total, {}, rate, (total - done) / max(rate, 1e-9),
                            device_label(device, amp=True)))  # predict_logits' default

    job.control.apply_threads()  # the job's threads from the first batch on (training: between steps)
    batch = 1024
    while True:
        try:
            return predict_pool(model, dataset, split, device, batch_size=batch, on_batch=on_batch)
        except OutOfMemory as exc:
            if batch // 2 < MIN_OOM_BATCH:
                raise MPLStudioError("out of GPU memory while pseudo-labeling even one image at a time; "
                                     "use the CPU") from exc
            _free_accelerator_memory()
            job.note(f"out of GPU memory at inference batch {batch}; retrying with {batch // 2}")
            batch //= 2


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
    probs = pool_probabilities(model, ws.dataset().train.images, device, indices=mine)
    dist_.gather_objects(probs, ctx)
    return {"count": len(probs)}

"""What background jobs do: train, resume, retrain on reviewed labels, pseudo-label, the demo loop.

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
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mpl_core.config import RunConfig
from mpl_core.engine import distributed as dist_
from mpl_core.engine.algorithms import get_algorithm
from mpl_core.engine.checkpoint import latest_checkpoint, read_info
from mpl_core.engine.defaults import for_device
from mpl_core.engine.models import role_model
from mpl_core.engine.predict import pool_probabilities, predict_pool
from mpl_core.engine.state import checkpoint_file, load_model, saved_model_config
from mpl_core.engine.train import Progress, device_label, pick_device, train
from mpl_core.errors import MPLStudioError
from mpl_core.presets import DEMO_BUDGET_S, DEMO_SUPERVISED_STEP_COST, DEMO_TARGET_PRECISION
from mpl_core.service.job import JobStopped, TrainingJob
from mpl_core.service.lock import busy_error, lock_is_held
from mpl_core.workspace.attach import check_fits
from mpl_core.workspace.calibration import threshold_to_accept
from mpl_core.workspace.review import decide_rows, reviewed_training_set, select_by_threshold, threshold_index
from mpl_core.workspace.simulate import review_first
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
                   on_progress: Callable[[Progress], None] | None = None, nice: int = 0) -> TrainingJob:
    """Train a new run with cfg (the workspace's data settings win), or resume run_id. Every start_*
    takes `nice`: how much lower than its caller the job's thread runs (see job.lower_priority)."""
    store = ws.store
    if run_id is not None:
        run = store.run(run_id)
        cfg, kind = RunConfig.from_dict(run["config"]), run["kind"]
        work = _retrain_work(cfg) if kind == "retrain" else _train_work(cfg)
        return TrainingJob(ws, kind, work, run_id=run_id, on_progress=on_progress, nice=nice).start()
    if cfg is None:
        raise MPLStudioError("give a training configuration or a run to resume")
    cfg = _with_init_file(dataclasses.replace(cfg, data=dataclasses.replace(ws.data)))
    cfg.validate()
    return TrainingJob(ws, "train", _train_work(cfg), on_progress=on_progress, nice=nice).start(new_run=("train", cfg))


def start_retrain(ws: Workspace, cfg: RunConfig, *,
                  on_progress: Callable[[Progress], None] | None = None, nice: int = 0) -> TrainingJob:
    """A retrain round on given + accepted + human labels (rejected excluded), class-balanced."""
    cfg = _retrain_config(ws, cfg)
    return TrainingJob(ws, "retrain", _retrain_work(cfg), on_progress=on_progress,
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
    job = TrainingJob(ws, "pseudo_label", _pseudo_label_work(run_id, model), on_progress=on_progress, nice=nice)
    return job.start()


def start_demo(ws: Workspace, train_cfg: RunConfig, retrain_cfg: RunConfig, *,
               review_cfg: RunConfig | None = None, full_retrain_cfg: RunConfig | None = None,
               budget_s: float = DEMO_BUDGET_S, target_precision: float = DEMO_TARGET_PRECISION,
               fine_tune: bool = False, who: str = "demo", on_progress: Callable[[Progress], None] | None = None,
               nice: int = 0) -> TrainingJob:
    """The whole loop in one job: train -> pseudo-label -> accept above the threshold whose estimated
    precision reaches target_precision -> retrain (retrain_cfg); on a built-in dataset then a
    simulated reviewer's DEMO_REVIEW decisions -> a review round (review_cfg; retrain_cfg where
    None). With fine_tune, the retrain starts from the MPL run's student or teacher (its
    model.init_role) and the review round from the retrain's model. full_retrain_cfg: a round from
    scratch that replaces the retrain where, at the MPL run's speed, it and the review round are
    projected to end within budget_s of the start, and the review round too where two of it fit
    (plan_rounds). The result tells the story in numbers."""
    review_cfg = review_cfg or retrain_cfg
    review_cfg = dataclasses.replace(review_cfg, model=dataclasses.replace(review_cfg.model, init_role="student"))
    cfgs = [dataclasses.replace(train_cfg, data=dataclasses.replace(ws.data)).validate(),
            _retrain_config(ws, retrain_cfg), _retrain_config(ws, review_cfg)]
    if fine_tune:  # checked before minutes of MPL
        _check_fine_tunes(cfgs)
    if full_retrain_cfg and full_retrain_cfg.model.init_from:
        raise MPLStudioError("the demo's round from scratch must not start from a checkpoint (init_from)")
    full = _retrain_config(ws, full_retrain_cfg) if full_retrain_cfg else None
    if full and fine_tune and _model_of(full, "student") != _model_of(cfgs[2], "student"):
        raise MPLStudioError(f"the demo's review round goes on from its round from scratch, so their models must "
                             f"be the same: {_model_of(full, 'student')} and {_model_of(cfgs[2], 'student')}")
    return TrainingJob(ws, "demo", _demo_work(cfgs, full, budget_s, target_precision, who, fine_tune),
                       on_progress=on_progress, nice=nice).start()


def _model_of(cfg: RunConfig, role: str) -> tuple[str, int]:
    return role_model(cfg.model, role)[0], cfg.model.width


def _check_fine_tunes(cfgs: list[RunConfig]) -> None:
    """The retrain fine-tunes the MPL run's model of its init_role, and the review round the retrain's."""
    role = cfgs[1].model.init_role
    start = _model_of(cfgs[0], role)
    for cfg in cfgs[1:]:
        if start != _model_of(cfg, "student"):
            raise MPLStudioError(f"a demo that fine-tunes the MPL {role} needs its retrain model to be the "
                                 f"{role}'s: {start[0]} of width {start[1]}")


def _retrain_config(ws: Workspace, cfg: RunConfig) -> RunConfig:
    """Retrain rounds sample labeled batches class-balanced: accepted pseudo-labels crowd into the
    classes the teacher finds easy, and the hard classes would be drowned out."""
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(ws.data),
                              train=dataclasses.replace(cfg.train, balance_classes=True))
    return _with_init_file(cfg).validate()


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


def _with_init_file(cfg: RunConfig) -> RunConfig:
    """init_from as the checkpoint file it names (a run folder means its newest): checked before the
    job starts, and the run's record says exactly which weights it started from."""
    if not cfg.model.init_from:
        return cfg
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_from=str(checkpoint_file(
        cfg.model.init_from).resolve())))


# --- training ------------------------------------------------------------------------------------

def _train_work(cfg: RunConfig):
    def work(job: TrainingJob) -> dict:
        ws = job.ws
        dataset, split = ws.dataset(), ws.split()
        _announce({"kind": "train", "cfg": cfg.to_dict(), "labels": dataset.train.labels,
                   "fully_labeled": dataset.fully_labeled, "split": split})
        return _run_training(job, cfg, dataset, split, job.run_id, extra={})
    return work


def _retrain_work(cfg: RunConfig):
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

def _pseudo_label_work(run_id: int, which: str):
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


# --- the demo loop -------------------------------------------------------------------------------

DEMO_REVIEW = 100  # decisions the demo's simulated reviewer makes (built-in datasets only)


def _demo_work(cfgs: list[RunConfig], full: RunConfig | None, budget_s: float, target: float, who: str,
               fine_tune: bool):
    train_cfg, retrain_cfg, review_cfg = cfgs

    def work(job: TrainingJob) -> dict:
        nonlocal retrain_cfg, review_cfg
        ws, t0 = job.ws, time.perf_counter()
        oracle = ws.dataset().fully_labeled  # hidden labels: a simulated reviewer can stand in for a person
        story: dict = {"phase_s": []}  # (phase, seconds since the start) as each phase begins

        def phase(n: int, what: str) -> None:
            story["phase_s"].append([what, round(time.perf_counter() - t0, 2)])
            job.say(f"{n}/{5 if oracle else 4} {what}")

        phase(1, "training the teacher and student (MPL)")
        job.set_run(ws.store.create_run("train", train_cfg.to_dict()))
        trained = _train_work(train_cfg)(job)
        if not trained["completed"]:
            return trained
        story.update(before_test_acc=trained.get("test_acc"), teacher_test_acc=trained.get("teacher_test_acc"),
                     train_run=job.run_id, mpl_s=round(time.perf_counter() - t0, 2),
                     labels_given=trained["labels_used"])
        mpl_run = job.run_id
        phase(2, "pseudo-labeling the unlabeled pool")
        labeled = _pseudo_label_work(job.run_id, "auto")(job)
        story.update(round=labeled["round"], pseudo_labels=labeled["count"])
        phase(3, "accepting confident pseudo-labels")
        index = threshold_index(ws)
        threshold = threshold_to_accept(index, target)
        rows = ws.store.pseudo_labels()
        positions = select_by_threshold(rows, ws.store.current_decisions(), above=threshold)
        decide_rows(ws, rows, positions, "accept", who)
        stats = index.stats(threshold)  # what the accepted labels are worth, estimated and (built-in data) true
        story.update(threshold=threshold, accepted=len(positions), est_precision=stats.est_precision,
                     est_low=stats.est_low, est_high=stats.est_high, val_support=stats.val_support,
                     true_precision=stats.true_precision, truth_inside=stats.truth_inside, target_precision=target,
                     target_reached=bool(stats.est_precision >= target))
        rounds = plan_rounds(story["mpl_s"], train_cfg, full, review_cfg if oracle else None,
                             time.perf_counter() - t0, budget_s)
        # without fine_tune every round trains from scratch, the review round on review_cfg's steps
        story.update(budget_s=budget_s, projected_s=rounds.projected_s,
                     projected_rounds=2 if rounds.review_from == "scratch" else 1,
                     review_from=rounds.review_from if fine_tune else "scratch")
        if rounds.scratch is not None:
            retrain_cfg, story["retrain_from"] = rounds.scratch, "scratch"
        else:  # the planned retrain: fine-tuning the MPL run's teacher (or student), or from scratch
            story["retrain_from"] = retrain_cfg.model.init_role if fine_tune else "scratch"
            retrain_cfg = _start_from(retrain_cfg, ws.run_dir(mpl_run)) if fine_tune else retrain_cfg
        if rounds.review_from == "scratch":
            review_cfg = full
        story.update(trusted_share=retrain_cfg.train.trusted_share, mixup=retrain_cfg.algorithm.mixup,
                     retrain_steps=retrain_cfg.train.steps)
        phase(4, "retraining on the reviewed labels")
        retrained = _demo_retrain(job, retrain_cfg)
        story.update(after_test_acc=retrained.get("test_acc"), retrain_run=job.run_id,
                     labels_used=retrained.get("labels_used"), completed=retrained["completed"])
        if oracle and retrained["completed"]:
            phase(5, f"a simulated reviewer decides {DEMO_REVIEW} pseudo-labels (likely mistakes first), then a "
                     "retrain")
            review = review_first(ws, DEMO_REVIEW, threshold)
            story.update(reviewed=sum(review.values()), review_relabeled=review["relabeled"])
            if story["reviewed"]:  # nothing left pending: the first retrain is the answer
                if fine_tune and rounds.review_from == "retrain":  # the retrain's model goes on learning
                    review_cfg = _start_from(review_cfg, ws.run_dir(story["retrain_run"]))
                retrained = _demo_retrain(job, review_cfg)
                story.update(after_review_test_acc=retrained.get("test_acc"), review_run=job.run_id,
                             completed=retrained["completed"])
        story["phase_s"].append(["end", round(time.perf_counter() - t0, 2)])
        return story
    return work


@dataclasses.dataclass
class DemoRounds:
    review_from: str  # "scratch" (the Rounds page's default round again), or "retrain": review_cfg, going on
    projected_s: float | None  # when the demo was projected to end with the round(s) from scratch
    scratch: RunConfig | None = None  # the retrain from scratch to run (the full round, or half its steps)

    @property
    def retrain_from(self) -> str:
        """"scratch", or "planned": retrain_cfg as given (fine-tuning where fine_tune)."""
        return "planned" if self.scratch is None else "scratch"


def plan_rounds(mpl_s: float, train_cfg: RunConfig, full: RunConfig | None, review: RunConfig | None,
                elapsed: float, budget_s: float) -> DemoRounds:
    """The demo's rounds, the best that is projected to end within budget_s: both the retrain and
    the review round from scratch (the Rounds page's default round each time: 0.6 to 0.7 points more
    after 100 decisions than going on from the retrain's model for 200 steps, docs/results.md); else
    the retrain from scratch and the review round going on from it; else the same with half the
    round's steps (3x the preset's with mixup: 0.9 points ahead of fine-tuning the teacher, docs/
    results.md "Mixup and longer rounds"); else the planned retrain (where fine_tune, fine-tuning the
    MPL teacher) and the review round going on from it. review: the going-on round's config, None
    without a review (no hidden labels)."""
    if full is None:
        return DemoRounds("retrain", None)
    both = _projected_end(mpl_s, train_cfg, full, full if review else None, elapsed)
    if review is not None and both <= budget_s:
        return DemoRounds("scratch", both, full)
    half = dataclasses.replace(full, train=dataclasses.replace(full.train, steps=max(1, full.train.steps // 2)))
    for scratch in (full, half):
        projected = _projected_end(mpl_s, train_cfg, scratch, review, elapsed)
        if projected <= budget_s:
            return DemoRounds("retrain", projected, scratch)
    return DemoRounds("retrain", _projected_end(mpl_s, train_cfg, full, review, elapsed))


def _projected_end(mpl_s: float, train_cfg: RunConfig, full: RunConfig | None, review: RunConfig | None,
                   elapsed: float) -> float | None:
    """When the demo would end, in seconds from its start, with the round from scratch (then the
    review round): each supervised step at DEMO_SUPERVISED_STEP_COST of the MPL run's seconds a step
    (mpl_s: its phase's wall time, so a pause during MPL counts as slowness and errs toward the
    quicker round)."""
    if full is None:
        return None
    mpl_step_s = mpl_s / max(1, train_cfg.train.steps + train_cfg.train.finetune_steps)
    steps = full.train.steps + (review.train.steps if review else 0)
    return round(elapsed + DEMO_SUPERVISED_STEP_COST * mpl_step_s * steps, 1)


def _start_from(cfg: RunConfig, run_dir: Path) -> RunConfig:
    """cfg starting from the model (cfg.model.init_role) in the run's newest checkpoint (the same model)."""
    return _with_init_file(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_from=str(run_dir))))


def _demo_retrain(job: TrainingJob, retrain_cfg: RunConfig) -> dict:
    job.set_run(job.ws.store.create_run("retrain", retrain_cfg.to_dict()))
    return _retrain_work(retrain_cfg)(job)


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

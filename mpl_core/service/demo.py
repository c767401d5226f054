"""The one-click demo: the whole loop in one job, and the story it tells in numbers.

    job = start_demo(ws, **demo_plan().start_args())   # presets.demo_plan

labels alone (a supervised run on the given labels) -> MPL (teacher and student) -> pseudo-label
the pool -> accept above the threshold whose estimated precision reaches the target -> a retrain
round -> on a built-in dataset, a simulated reviewer's DEMO_REVIEW decisions and a review round.

Every gain the story shows is measured from the best model that existed before that step, chosen
on validation (workspace/results.py): a round that only matches the MPL teacher shows no gain,
whatever the student scored.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

from mpl_core.config import RunConfig
from mpl_core.engine.models import role_model
from mpl_core.engine.train import Progress
from mpl_core.errors import MPLStudioError
from mpl_core.presets import DEMO_BUDGET_S, DEMO_SUPERVISED_STEP_COST, DEMO_TARGET_PRECISION
from mpl_core.service.job import TrainingJob
from mpl_core.service.work import (
    pseudo_label_work,
    retrain_config,
    retrain_work,
    train_work,
    with_init_file,
)
from mpl_core.workspace.calibration import threshold_to_accept
from mpl_core.workspace.results import Stage, handed_back, with_gains
from mpl_core.workspace.review import decide_rows, select_by_threshold, threshold_index
from mpl_core.workspace.simulate import review_first
from mpl_core.workspace.workspace import Workspace

DEMO_REVIEW = 100  # decisions the demo's simulated reviewer makes (built-in datasets only)


@dataclasses.dataclass
class DemoConfigs:
    train: RunConfig  # the MPL run
    retrain: RunConfig  # the round on the accepted pseudo-labels, as planned
    review: RunConfig  # the round after the simulated reviewer's decisions
    full: RunConfig | None  # a round from scratch that replaces the retrain where it fits the budget
    baseline: RunConfig | None  # labels alone: a supervised run on the given labels


def start_demo(ws: Workspace, train_cfg: RunConfig, retrain_cfg: RunConfig, *,
               review_cfg: RunConfig | None = None, full_retrain_cfg: RunConfig | None = None,
               baseline_cfg: RunConfig | None = None, budget_s: float = DEMO_BUDGET_S,
               target_precision: float = DEMO_TARGET_PRECISION, fine_tune: bool = False, who: str = "demo",
               on_progress: Callable[[Progress], None] | None = None, nice: int = 0) -> TrainingJob:
    """The whole loop in one job (see the module's doc). baseline_cfg: the supervised run on the
    given labels that the story starts from (None: none). With fine_tune, the retrain starts from the
    MPL run's student or teacher (its model.init_role) and the review round from the retrain's model.
    full_retrain_cfg: a round from scratch that replaces the retrain where, at the MPL run's speed, it
    and the review round are projected to end within budget_s of the start, and the review round too
    where two of it fit (plan_rounds)."""
    review_cfg = review_cfg or retrain_cfg
    review_cfg = dataclasses.replace(review_cfg, model=dataclasses.replace(review_cfg.model, init_role="student"))
    mpl = dataclasses.replace(train_cfg, data=dataclasses.replace(ws.data)).validate()
    cfgs = DemoConfigs(mpl, retrain_config(ws, retrain_cfg), retrain_config(ws, review_cfg), None, None)
    if fine_tune:  # checked before minutes of MPL
        _check_fine_tunes(cfgs)
    if full_retrain_cfg and full_retrain_cfg.model.init_from:
        raise MPLStudioError("the demo's round from scratch must not start from a checkpoint (init_from)")
    cfgs.full = retrain_config(ws, full_retrain_cfg) if full_retrain_cfg else None
    if cfgs.full and fine_tune and _model_of(cfgs.full, "student") != _model_of(cfgs.review, "student"):
        raise MPLStudioError(f"the demo's review round goes on from its round from scratch, so their models must "
                             f"be the same: {_model_of(cfgs.full, 'student')} and {_model_of(cfgs.review, 'student')}")
    if baseline_cfg is not None:
        if baseline_cfg.algorithm.name != "supervised" or baseline_cfg.model.init_from:
            raise MPLStudioError("the demo's labels-alone run must be supervised, from scratch")
        cfgs.baseline = dataclasses.replace(baseline_cfg, data=dataclasses.replace(ws.data)).validate()
    demo = _Demo(cfgs, budget_s, target_precision, who, fine_tune)
    return TrainingJob(ws, "demo", demo.work, on_progress=on_progress, nice=nice).start()


def _model_of(cfg: RunConfig, role: str) -> tuple[str, int]:
    return role_model(cfg.model, role)[0], cfg.model.width


def _check_fine_tunes(cfgs: DemoConfigs) -> None:
    """The retrain fine-tunes the MPL run's model of its init_role, and the review round the retrain's."""
    role = cfgs.retrain.model.init_role
    start = _model_of(cfgs.train, role)
    for cfg in (cfgs.retrain, cfgs.review):
        if start != _model_of(cfg, "student"):
            raise MPLStudioError(f"a demo that fine-tunes the MPL {role} needs its retrain model to be the "
                                 f"{role}'s: {start[0]} of width {start[1]}")


class _Demo:
    """The demo job's steps; story is its result, read by the Home page and bench/demo_time.py."""

    def __init__(self, cfgs: DemoConfigs, budget_s: float, target: float, who: str, fine_tune: bool):
        self.cfgs, self.budget_s, self.target, self.who, self.fine_tune = cfgs, budget_s, target, who, fine_tune
        self.story: dict = {"phase_s": []}  # (phase, seconds since the start) as each phase begins
        self.stages: list[Stage] = []  # the models so far, for the gains (see stage())
        self.phases: list[str] = []  # the keys of the phases this demo runs, for "2/6 ..."
        self.job: TrainingJob | None = None
        self.t0 = 0.0

    def work(self, job: TrainingJob) -> dict:
        self.job, self.t0 = job, time.perf_counter()
        oracle = job.ws.dataset().fully_labeled  # hidden labels: a simulated reviewer can stand in for a person
        self.phases = [p for p, on in (("baseline", self.cfgs.baseline is not None), ("mpl", True),
                                       ("label", True), ("accept", True), ("retrain", True), ("review", oracle)) if on]
        if self.cfgs.baseline is not None and not self.baseline():
            return self.finish()
        if not self.mpl():
            return self.finish()
        threshold = self.accept()
        rounds = self.plan(oracle)
        if self.retrain(rounds) and oracle:
            self.review(rounds, threshold)
        return self.finish()

    # --- the steps -------------------------------------------------------------------------------

    def phase(self, key: str, what: str) -> None:
        self.story["phase_s"].append([what, round(time.perf_counter() - self.t0, 2)])
        self.job.say(f"{self.phases.index(key) + 1}/{len(self.phases)} {what}")

    def run(self, kind: str, cfg: RunConfig, work) -> dict:
        self.job.set_run(self.job.ws.store.create_run(kind, cfg.to_dict()))
        return work(cfg)(self.job)

    def baseline(self) -> bool:
        self.phase("baseline", "training on the labels alone (supervised), for comparison")
        result = self.run("train", self.cfgs.baseline, train_work)
        self.story.update(supervised_test_acc=result.get("test_acc"), supervised_val_acc=result.get("val_acc"),
                          supervised_run=self.job.run_id, completed=result["completed"])
        self.stage("labels alone (supervised)", result)
        return result["completed"]

    def mpl(self) -> bool:
        self.phase("mpl", "training the teacher and student (MPL)")
        t = time.perf_counter()
        trained = self.run("train", self.cfgs.train, train_work)
        self.story.update(before_test_acc=trained.get("test_acc"), teacher_test_acc=trained.get("teacher_test_acc"),
                          student_val_acc=trained.get("val_acc"), teacher_val_acc=trained.get("teacher_val_acc"),
                          hands_back=handed_back(trained)[0], train_run=self.job.run_id,
                          mpl_s=round(time.perf_counter() - t, 2), labels_given=trained["labels_used"],
                          completed=trained["completed"])
        self.stage("MPL student", {**trained, "hands_back": "student"})
        if trained.get("teacher_val_acc") is not None:  # the same step: one is not the other's "before"
            self.stage("MPL teacher", {**trained, "hands_back": "teacher"}, same_step=True)
        return trained["completed"]

    def accept(self) -> float:
        ws, mpl_run = self.job.ws, self.job.run_id
        self.phase("label", "pseudo-labeling the unlabeled pool")
        labeled = pseudo_label_work(mpl_run, "auto")(self.job)
        self.story.update(round=labeled["round"], pseudo_labels=labeled["count"])
        self.phase("accept", "accepting confident pseudo-labels")
        index = threshold_index(ws)
        threshold = threshold_to_accept(index, self.target)
        rows = ws.store.pseudo_labels()
        positions = select_by_threshold(rows, ws.store.current_decisions(), above=threshold)
        decide_rows(ws, rows, positions, "accept", self.who)
        stats = index.stats(threshold)  # what the accepted labels are worth, estimated and (built-in data) true
        self.story.update(threshold=threshold, accepted=len(positions), est_precision=stats.est_precision,
                          est_low=stats.est_low, est_high=stats.est_high, val_support=stats.val_support,
                          true_precision=stats.true_precision, truth_inside=stats.truth_inside,
                          target_precision=self.target, target_reached=bool(stats.est_precision >= self.target))
        return threshold

    def plan(self, oracle: bool) -> DemoRounds:
        """Which rounds run: from scratch where projected to fit the budget (plan_rounds)."""
        c, s = self.cfgs, self.story
        rounds = plan_rounds(s["mpl_s"], c.train, c.full, c.review if oracle else None,
                             time.perf_counter() - self.t0, self.budget_s)
        # without fine_tune every round trains from scratch, the review round on review's steps
        s.update(budget_s=self.budget_s, projected_s=rounds.projected_s,
                 projected_rounds=2 if rounds.review_from == "scratch" else 1,
                 review_from=rounds.review_from if self.fine_tune else "scratch")
        if rounds.scratch is not None:
            c.retrain, s["retrain_from"] = rounds.scratch, "scratch"
        else:  # the planned retrain: fine-tuning the MPL run's teacher (or student), or from scratch
            s["retrain_from"] = c.retrain.model.init_role if self.fine_tune else "scratch"
            c.retrain = _start_from(c.retrain, self.job.ws.run_dir(s["train_run"])) if self.fine_tune else c.retrain
        if rounds.review_from == "scratch":
            c.review = c.full
        s.update(trusted_share=c.retrain.train.trusted_share, mixup=c.retrain.algorithm.mixup,
                 retrain_steps=c.retrain.train.steps)
        return rounds

    def retrain(self, rounds: DemoRounds) -> bool:
        self.phase("retrain", "retraining on the reviewed labels")
        retrained = self.run("retrain", self.cfgs.retrain, retrain_work)
        self.story.update(after_test_acc=retrained.get("test_acc"), after_val_acc=retrained.get("val_acc"),
                          retrain_run=self.job.run_id, labels_used=retrained.get("labels_used"),
                          completed=retrained["completed"])
        self.stage(f"retrained on {self.story['accepted']:,} accepted pseudo-labels", retrained)
        return retrained["completed"]

    def review(self, rounds: DemoRounds, threshold: float) -> None:
        self.phase("review", f"a simulated reviewer decides {DEMO_REVIEW} pseudo-labels (likely mistakes first), "
                             "then a retrain")
        review = review_first(self.job.ws, DEMO_REVIEW, threshold)
        self.story.update(reviewed=sum(review.values()), review_relabeled=review["relabeled"])
        if not self.story["reviewed"]:  # nothing left pending: the first retrain is the answer
            return
        cfg = self.cfgs.review
        if self.fine_tune and rounds.review_from == "retrain":  # the retrain's model goes on learning
            cfg = _start_from(cfg, self.job.ws.run_dir(self.story["retrain_run"]))
        retrained = self.run("retrain", cfg, retrain_work)
        self.story.update(after_review_test_acc=retrained.get("test_acc"), review_run=self.job.run_id,
                          completed=retrained["completed"])
        self.stage(f"retrained after {self.story['reviewed']} review decisions", retrained)

    # --- the story -------------------------------------------------------------------------------

    def stage(self, name: str, result: dict, same_step: bool = False) -> None:
        """A finished step's model, the one its run hands back, as the next step of the story (or, with
        same_step, another model of the last step)."""
        if result.get("completed"):
            _, val, test = handed_back(result)
            step = len({s.step for s in self.stages}) - same_step
            self.stages.append(Stage(name, val, test, step, self.job.run_id))

    def finish(self) -> dict:
        """The story, with each model's gain over the best one before its step (on validation)."""
        stages = with_gains(self.stages)
        self.story["stages"] = [s.to_dict() for s in stages]
        by_run = {s.run: s for s in stages}
        for key in ("retrain", "review"):  # the gains the Home page's metrics show
            s = by_run.get(self.story.get(f"{key}_run"))
            if s is not None:
                self.story[f"{key}_gain"], self.story[f"{key}_gain_over"] = s.gain, s.best_before
                over = next((t for t in stages if t.name == s.best_before), None)
                self.story[f"{key}_gain_over_test_acc"] = over.test_acc if over else None
        self.story["phase_s"].append(["end", round(time.perf_counter() - self.t0, 2)])
        return self.story


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
    return with_init_file(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_from=str(run_dir))))

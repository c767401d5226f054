"""What each model is worth, and what each step gained over the best model that existed before it.

Pure functions over run metrics and plain dicts (no torch): the app's pages, the demo's story, the
command line and the benches all measure gains the same way.

The best model before a step is chosen on the validation split, never on the test set; the gain
a step shows is its test accuracy minus that model's. A run that trains a teacher and a student
hands back the one ahead on validation (metrics["hands_back"], engine/evaluate.handed_role).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Stage:
    """One model of a sequence of steps, e.g. "labels alone (supervised)", "MPL teacher"."""
    name: str
    val_acc: float | None  # on the validation split: what "best" is chosen on
    test_acc: float | None  # on the test set, where it has labels: what a gain is measured in
    step: int = 0  # stages of one step (a teacher and the student it taught) are alternatives, not a sequence
    run: int | None = None
    best_before: str | None = None  # the name of the best model of the earlier stages, on validation
    gain: float | None = None  # test_acc minus best_before's, in accuracy (0.02 = 2 points)

    def to_dict(self) -> dict:
        return asdict(self)


def _usable(x: float | None) -> bool:
    return x is not None and not math.isnan(x)


def best_of(stages: list[Stage]) -> Stage | None:
    """The stage with the highest validation accuracy (the earliest on a tie: a later model must
    beat it to count); None where no stage has one."""
    scored = [s for s in stages if _usable(s.val_acc)]
    return max(scored, key=lambda s: s.val_acc, default=None)


def with_gains(stages: list[Stage]) -> list[Stage]:
    """Each stage with the best stage of the earlier steps (on validation) and its gain in test
    accuracy over it; the first step's stages have nothing before them."""
    out = []
    for s in stages:
        best = best_of([t for t in stages if t.step < s.step])
        gain = s.test_acc - best.test_acc if best and _usable(s.test_acc) and _usable(best.test_acc) else None
        out.append(Stage(s.name, s.val_acc, s.test_acc, s.step, s.run, best.name if best else None, gain))
    return out


# --- runs ------------------------------------------------------------------------------------------

def handed_back(metrics: dict) -> tuple[str, float | None, float | None]:
    """(role, validation accuracy, test accuracy) of the model a run hands back: its student, or its
    teacher where metrics["hands_back"] says so (runs before it was recorded: the student)."""
    if metrics.get("hands_back") == "teacher":
        return "teacher", metrics.get("teacher_val_acc"), metrics.get("teacher_test_acc")
    return "student", metrics.get("val_acc"), metrics.get("test_acc")


def run_stage(run: dict) -> Stage:
    """A finished run as a stage: "run 3 (mpl teacher)", with the model it hands back."""
    role, val, test = handed_back(run["metrics"])
    algorithm = run["config"]["algorithm"]["name"]
    what = f"{algorithm} {role}" if "teacher_val_acc" in run["metrics"] else algorithm
    return Stage(f"run {run['id']} ({what})", val, test, run["id"], run["id"])


def run_gains(runs: list[dict]) -> dict[int, Stage]:
    """For every run that finished (status "done"), in the order they were made: its stage with the
    best earlier finished run on validation and the gain in test accuracy over it. The first
    finished run has nothing before it (best_before None)."""
    stages = [run_stage(r) for r in runs if r["status"] == "done" and r["metrics"]]
    return {s.run: s for s in with_gains(stages)}

"""Honest gains: which model a run hands back, and each step's gain over the best model before it."""
import math

import pytest

from mpl_core.engine.evaluate import handed_role
from mpl_core.workspace.results import Stage, best_of, handed_back, run_gains, with_gains


def test_a_run_hands_back_its_teacher_only_where_the_teacher_is_ahead_on_validation():
    assert handed_role(0.70, 0.75) == "teacher"
    assert handed_role(0.75, 0.70) == "student"
    assert handed_role(0.75, 0.75) == "student"  # a tie: the method's output
    assert handed_role(0.70, None) == "student"  # no teacher
    assert handed_role(math.nan, math.nan) == "student"  # no validation split: nothing to choose on


def test_handed_back_reads_the_role_the_run_recorded():
    m = {"val_acc": 0.6, "test_acc": 0.61, "teacher_val_acc": 0.7, "teacher_test_acc": 0.69}
    assert handed_back({**m, "hands_back": "teacher"}) == ("teacher", 0.7, 0.69)
    assert handed_back({**m, "hands_back": "student"}) == ("student", 0.6, 0.61)
    assert handed_back(m) == ("student", 0.6, 0.61)  # runs saved before it was recorded


def test_each_step_gains_over_the_best_earlier_model_on_validation_not_on_test():
    stages = [Stage("labels alone", 0.60, 0.62, 0), Stage("MPL student", 0.66, 0.67, 1),
              Stage("MPL teacher", 0.72, 0.70, 1),
              # best on test among the earlier ones is not what counts: the teacher is best on validation
              Stage("retrained", 0.74, 0.73, 2), Stage("after review", 0.73, 0.76, 3)]
    out = with_gains(stages)
    assert [s.best_before for s in out] == [None, "labels alone", "labels alone", "MPL teacher", "retrained"]
    assert [s.gain for s in out] == pytest.approx([None, 0.05, 0.08, 0.03, 0.03], nan_ok=True)
    # a teacher and the student it taught are one step: neither is the other's "before"
    assert out[2].best_before == "labels alone"


def test_the_best_before_is_chosen_on_validation_even_where_another_is_better_on_test():
    stages = [Stage("labels alone", 0.60, 0.68, 0), Stage("MPL student", 0.66, 0.67, 1),
              Stage("MPL teacher", 0.72, 0.65, 1), Stage("retrained", 0.74, 0.70, 2)]
    out = with_gains(stages)
    # the teacher leads on validation though it is the worst on test: the gain is measured from it
    assert out[3].best_before == "MPL teacher" and out[3].gain == pytest.approx(0.05)
    assert out[2].gain == pytest.approx(-0.03)  # and a model behind the one before shows a loss


def test_the_best_is_the_earliest_on_a_tie_and_none_without_validation():
    a, b = Stage("a", 0.7, 0.7, 0), Stage("b", 0.7, 0.9, 1)
    assert best_of([a, b]) is a
    assert best_of([Stage("c", math.nan, 0.9, 0), Stage("d", None, 0.9, 1)]) is None
    assert with_gains([Stage("c", math.nan, 0.9, 0), Stage("d", 0.5, 0.5, 1)])[1].gain is None


def test_run_gains_compare_finished_runs_in_order():
    def run(i, status, **m):
        return {"id": i, "status": status, "config": {"algorithm": {"name": "mpl" if "teacher_val_acc" in m
                                                                    else "supervised"}}, "metrics": m}
    runs = [run(1, "done", val_acc=0.6, test_acc=0.6),
            run(2, "done", val_acc=0.65, test_acc=0.66, teacher_val_acc=0.7, teacher_test_acc=0.72,
                hands_back="teacher"),
            run(3, "stopped", val_acc=0.9, test_acc=0.9),  # never finished: not a model anyone has
            run(4, "done", val_acc=0.75, test_acc=0.74)]
    gains = run_gains(runs)
    assert set(gains) == {1, 2, 4}
    assert gains[2].name == "run 2 (mpl teacher)" and gains[2].gain == pytest.approx(0.12)
    assert gains[4].best_before == "run 2 (mpl teacher)" and gains[4].gain == pytest.approx(0.02)
    assert gains[1].best_before is None and gains[1].gain is None

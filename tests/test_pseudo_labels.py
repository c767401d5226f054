import math

import numpy as np
import pytest
import torch

from mpl_core.config import AlgorithmConfig, DataConfig, ModelConfig, RunConfig, TrainConfig
from mpl_core.engine.checkpoint import latest_checkpoint
from mpl_core.errors import MPLStudioError
from mpl_core.service.work import start_pseudo_labeling, start_training
from mpl_core.workspace.calibration import (
    Calibration,
    ThresholdIndex,
    aim_for,
    class_thresholds_to_accept,
    classes_short_of_validation,
    confidence_histogram,
    fit_calibration,
    precision_coverage_table,
    precision_interval,
    threshold_for_precision,
    threshold_to_accept,
)
from mpl_core.workspace.review import threshold_index
from mpl_core.workspace.workspace import create_workspace

IDENTITY = fit_calibration([], [])  # no validation evidence: the model's confidence is taken as is


def hand_example(calibration=IDENTITY, estimator="isotonic"):
    label = np.array([0, 0, 0, 1, 1])
    confidence = np.array([0.9, 0.8, 0.4, 0.95, 0.6])
    truth = np.array([0, 1, 0, 1, 0])
    validation = {"confidence": [0.85, 0.5, 0.97], "label": [0, 0, 1], "truth": [0, 1, 1]}
    return ThresholdIndex(label, confidence, 2, calibration, truth, validation, estimator=estimator)


def test_the_estimate_counts_the_validation_images_that_pass_with_a_jeffreys_interval():
    s = hand_example(estimator="count").stats(0.8)  # validation passing: 0.85 (class 0, right), 0.97 (class 1, right)
    assert s.val_support == 2 and s.est_precision == pytest.approx(2.5 / 3)
    assert (s.est_precision, s.est_low, s.est_high) == precision_interval(2, 2)
    assert 0.3 < s.est_low < s.est_precision < s.est_high < 1.0  # two images say little
    c0, c1 = s.per_class
    assert (c0["val_support"], c1["val_support"]) == (1, 1) and c0["est_precision"] == pytest.approx(0.75)
    s = hand_example(estimator="count").stats(0.5)  # the 0.5 one passes too, and it is wrong
    assert s.val_support == 3 and s.est_precision == pytest.approx(2.5 / 4)
    nothing = hand_example(estimator="count").stats([0.9, 0.99])  # pool passes, no validation image does
    assert nothing.passed == 1 and math.isnan(nothing.est_precision) and (nothing.est_low, nothing.est_high) == (0, 1)


def test_the_stats_say_whether_the_truth_is_inside_the_interval():
    assert hand_example(estimator="count").stats(0.8).truth_inside is True  # 2 of 3 right, the interval from 2 of 2
    all_right = {"confidence": [0.95] * 40, "label": [0] * 40, "truth": [0] * 40}
    pool_wrong = ThresholdIndex(np.array([0, 0]), np.array([0.9, 0.95]), 2, IDENTITY, np.array([1, 1]), all_right)
    s = pool_wrong.stats(0.9)
    assert s.est_low > 0.9 and s.true_precision == 0 and s.truth_inside is False
    no_truth = ThresholdIndex(np.array([0, 0]), np.array([0.9, 0.95]), 2, IDENTITY, validation=all_right)
    assert no_truth.stats(0.9).truth_inside is None
    no_evidence = ThresholdIndex(np.array([0, 0]), np.array([0.9, 0.95]), 2, IDENTITY, np.array([0, 1]))
    assert no_evidence.stats(0.9).truth_inside is None  # no validation labels, no interval to hold it


def test_the_interval_widens_as_the_validation_split_shrinks():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 2000)
    right = rng.random(2000) < conf  # calibrated: right as often as it says
    label = np.zeros(2000, dtype=np.int64)
    widths = []
    for n in (2000, 500, 100, 20):
        validation = {"confidence": conf[:n].tolist(), "label": [0] * n, "truth": np.where(right[:n], 0, 1).tolist()}
        s = ThresholdIndex(label, conf, 2, IDENTITY, validation=validation).stats(0.7)
        widths.append(s.est_high - s.est_low)
        assert s.est_low <= s.est_precision <= s.est_high
    assert widths == sorted(widths) and widths[-1] > 3 * widths[0]
    for a, b, lev in ((3, 10, 0.9), (40, 45, 0.9), (250, 300, 0.8)):  # the quantiles invert the Beta CDF
        est, low, high = precision_interval(a, b, lev)
        draws = np.random.default_rng(1).beta(a + 0.5, b - a + 0.5, 400_000)
        assert np.mean(draws < low) == pytest.approx((1 - lev) / 2, abs=0.003)
        assert np.mean(draws > high) == pytest.approx((1 - lev) / 2, abs=0.003)


def test_threshold_stats_match_a_hand_computed_example():
    s = hand_example().stats(0.8)  # passes: 0.9, 0.8 (class 0) and 0.95 (class 1); >= is inclusive
    assert (s.passed, s.total) == (3, 5) and s.coverage == pytest.approx(0.6)
    assert s.est_precision == pytest.approx((0.9 + 0.8 + 0.95) / 3)
    assert s.true_precision == pytest.approx(2 / 3)  # the 0.8 one is wrong
    c0, c1 = s.per_class
    assert (c0["predicted"], c0["passed"], c0["true_precision"]) == (3, 2, 0.5)
    assert (c1["predicted"], c1["passed"], c1["true_precision"]) == (2, 1, 1.0)
    assert c0["est_precision"] == pytest.approx(0.85)
    assert s.val_support == 2  # validation images at 0.85 and 0.97 also pass
    assert hand_example().stats([0.9, 0.99]).val_support == 0


def test_per_class_thresholds_and_empty_results():
    s = hand_example().stats([0.3, 0.99])
    assert [c["passed"] for c in s.per_class] == [3, 0] and s.passed == 3
    assert math.isnan(s.per_class[1]["est_precision"])
    none = hand_example().stats(1.0)
    assert none.passed == 0 and math.isnan(none.est_precision) and none.coverage == 0.0
    with pytest.raises(MPLStudioError):
        hand_example().stats([0.5])
    with pytest.raises(MPLStudioError):
        hand_example().stats(1.5)


def test_calibration_is_isotonic_and_drives_the_estimate():
    cal = fit_calibration([0.1, 0.2, 0.3, 0.4], [1, 0, 1, 1])  # the first two pool into 0.5
    assert cal(np.array([0.15]))[0] == pytest.approx(0.5) and cal(np.array([0.35]))[0] == pytest.approx(1.0)
    assert np.all(np.diff(cal(np.linspace(0, 1, 50))) >= 0)
    pessimist = Calibration(np.array([0.0, 1.0]), np.array([0.0, 0.5]), 10)  # right half as often as it says
    s = hand_example(pessimist).stats(0.8)
    assert s.est_precision == pytest.approx((0.45 + 0.4 + 0.475) / 3)


def test_threshold_for_precision_and_histogram():
    index = hand_example()
    # 0.8 admits 0.8, 0.9, 0.95 (mean 0.883); the next grid step, 0.805, admits 0.9 and 0.95 (0.925)
    assert threshold_for_precision(index, 0.9) == pytest.approx(0.805)
    assert threshold_for_precision(index, 0.99) is None
    assert threshold_to_accept(index, 0.9) == pytest.approx(0.805)  # reachable: the same threshold
    assert threshold_to_accept(index, 0.99, min_support=10**6) == 0.99  # nothing has the evidence: the strict one
    # unreachable: the best estimate with >= 2 validation images behind it (2 of 3 right above 0.5: 2.5/3)
    counted = hand_example(estimator="count")
    assert threshold_to_accept(counted, 0.99, min_support=2) == pytest.approx(0.505)
    assert counted.stats(0.505).est_precision == pytest.approx(2.5 / 3)
    hist = confidence_histogram(np.array([0, 0, 1]), np.array([0.05, 1.0, 0.5]), 2, bins=10)
    assert hist.shape == (2, 10) and hist[0, 0] == 1 and hist[0, 9] == 1 and hist[1, 5] == 1


def two_class_validation() -> ThresholdIndex:
    """Class 0 right at every confidence; class 1 wrong below 0.71 and right above 0.8."""
    conf = np.concatenate([np.linspace(0.3, 0.95, 20), np.linspace(0.4, 0.7, 10), np.linspace(0.81, 0.99, 20)])
    label = np.array([0] * 20 + [1] * 30)
    truth = np.array([0] * 20 + [0] * 10 + [1] * 20)
    validation = {"confidence": conf.tolist(), "label": label.tolist(), "truth": truth.tolist()}
    rng = np.random.default_rng(0)
    return ThresholdIndex(rng.integers(0, 2, 500), rng.uniform(0.2, 1.0, 500), 2, IDENTITY,
                          validation=validation, estimator="count")


def test_class_thresholds_each_reach_the_target_on_their_own_class():
    index = two_class_validation()
    easy, hard = class_thresholds_to_accept(index, 0.9)
    assert easy == 0.0  # every class-0 validation image is right: the whole class passes
    assert 0.6667 < hard <= 0.7  # one wrong image left in: 20.5 / 22 = 0.93; two: 0.89
    per_class = index.stats([easy, hard]).per_class
    assert all(r["est_precision"] >= 0.9 for r in per_class)
    assert index.stats([easy, hard - 0.005]).per_class[1]["est_precision"] < 0.9  # the lowest that reaches it
    overall = threshold_to_accept(index, 0.9)  # one threshold for both: stricter on the easy class, laxer on the hard
    assert easy < overall < hard
    # unreachable: the best-supported estimate per class (class 1: every wrong image out, all 20 right in)
    best = class_thresholds_to_accept(index, 0.99, min_support=5)
    assert best[1] == pytest.approx(0.70, abs=0.006) and index.stats(best).per_class[1]["val_support"] == 20
    assert class_thresholds_to_accept(index, 0.99, min_support=10**6) == [0.99, 0.99]
    assert classes_short_of_validation(index, fewest=25) == {0: 20}  # class 1 has 30
    assert classes_short_of_validation(index, fewest=20) == {} and classes_short_of_validation(index) == {0: 20, 1: 30}
    validation = {"confidence": [0.9] * 3, "label": [0] * 3, "truth": [0] * 3}  # none predicted as class 1
    only_class_0 = ThresholdIndex(np.zeros(5, dtype=int), np.full(5, 0.9), 2, IDENTITY, validation=validation,
                                  estimator="count")
    assert classes_short_of_validation(only_class_0, fewest=5) == {0: 3}  # class 1: no pool image predicted so
    no_validation = ThresholdIndex(np.array([0, 1]), np.full(2, 0.9), 2, IDENTITY, estimator="count")
    assert classes_short_of_validation(no_validation) == {0: 0, 1: 0}


def test_aim_for_says_what_the_thresholds_reach():
    index = two_class_validation()
    one, each = aim_for(index, 0.9), aim_for(index, 0.9, per_class=True)
    assert one.thresholds == [round(threshold_to_accept(index, 0.9), 3)] * 2 and one.reached and not one.short
    assert each.thresholds == [round(t, 3) for t in class_thresholds_to_accept(index, 0.9)] and each.reached
    assert each.short_of_validation == {0: 20, 1: 30} and one.short_of_validation == {}  # per class only
    unreachable = aim_for(index, 0.99, per_class=True)
    assert unreachable.short == [0, 1] and not unreachable.reached
    assert aim_for(index, 0.99).strict_fallback  # 50 validation images: fewer than the fallback's 100
    with pytest.raises(MPLStudioError, match="between 0 and 1"):
        aim_for(index, 1.0)


def test_precision_coverage_table_keeps_only_columns_with_values():
    table = precision_coverage_table(hand_example(), [0.5, 0.8, 1.0])
    assert [list(r) for r in table] == [["threshold", "est_precision", "true_precision", "coverage"]] * 3
    assert table[1]["coverage"] == pytest.approx(0.6) and table[1]["true_precision"] == pytest.approx(2 / 3)
    validation = {"confidence": [0.95, 0.7], "label": [0, 1], "truth": [0, 0]}
    no_truth = ThresholdIndex(np.array([0, 1]), np.array([0.9, 0.6]), 2, IDENTITY, validation=validation)
    rows = precision_coverage_table(no_truth)  # the default sweep: 34 thresholds from 0 to 0.99
    assert len(rows) == 34 and rows[-1]["threshold"] == pytest.approx(0.99)
    # no true labels, no true precision; the estimate comes with its interval
    assert list(rows[0]) == ["threshold", "est_precision", "est_low", "est_high", "coverage"]
    no_evidence = ThresholdIndex(np.array([0, 1]), np.array([0.9, 0.6]), 2, IDENTITY)
    assert list(precision_coverage_table(no_evidence)[0]) == ["threshold", "coverage"]

def test_estimated_precision_tracks_true_precision_on_fashion_mnist(fmnist, tmp_path):
    """A small supervised model labels 10k pool images; the calibrated estimate from 500 validation
    images must stay within a few points of the truth wherever at least 500 samples pass."""
    ws = create_workspace("cal", DataConfig(max_unlabeled=10000), tmp_path)
    cfg = RunConfig(model=ModelConfig(width=8), algorithm=AlgorithmConfig(name="supervised"),
                    train=TrainConfig(steps=600, eval_every=0, batch_size=16, device="cpu"))
    assert start_training(ws, cfg).join().state == "done"
    assert start_pseudo_labeling(ws).join().state == "done"
    rows = threshold_index(ws).sweep([0.3, 0.5, 0.7, 0.8, 0.9, 0.95])
    checked = [r for r in rows if r["passed"] >= 500]
    assert len(checked) >= 4
    for r in checked:
        assert abs(r["est_precision"] - r["true_precision"]) < 0.06, r
        assert r["est_low"] < r["est_precision"] < r["est_high"]
    # Only validation labels count: hiding other labels in the pool and the test split changes nothing.
    ds = ws.dataset()
    gen = torch.Generator().manual_seed(0)
    unl = ws.split().unlabeled
    ds.train.labels[unl] = ds.train.labels[unl][torch.randperm(len(unl), generator=gen)]
    ds.test.labels[:] = ds.test.labels[torch.randperm(len(ds.test), generator=gen)]
    again = threshold_index(ws).sweep([0.3, 0.5, 0.7, 0.8, 0.9, 0.95])
    for r, s in zip(rows, again):
        assert (r["est_precision"], r["est_low"], r["est_high"]) == (s["est_precision"], s["est_low"], s["est_high"])
    assert any(r["true_precision"] != s["true_precision"] for r, s in zip(rows, again))  # the swap did happen


def test_the_simulated_reviewer_answers_with_hidden_labels_and_only_where_there_are_some(fmnist, tmp_path):
    from conftest import write_stripes_folder
    from mpl_core.workspace.simulate import oracle_review
    ws = create_workspace("oracle", DataConfig(max_unlabeled=300), tmp_path)
    cfg = RunConfig(model=ModelConfig(width=4), algorithm=AlgorithmConfig(name="supervised"),
                    train=TrainConfig(steps=20, eval_every=0, batch_size=16, device="cpu"))
    assert start_training(ws, cfg).join().state == "done"
    assert start_pseudo_labeling(ws).join().state == "done"
    rows = ws.store.pseudo_labels()
    done = oracle_review(ws, np.arange(30))
    assert done["accepted"] + done["relabeled"] == 30
    truth = ws.dataset().train.labels.numpy()[rows.idx[:30]]
    decisions = ws.store.current_decisions()
    assert sorted(decisions["idx"].tolist()) == sorted(rows.idx[:30].tolist())
    by_idx = dict(zip(decisions["idx"].tolist(), decisions["label"].tolist()))
    assert [by_idx[i] for i in rows.idx[:30].tolist()] == truth.tolist()  # every decided label is the truth
    assert decisions["seen"].all()  # it looked at each image: its accepts count among people's labels
    assert oracle_review(ws, np.arange(30, 40), hand_labels=True) == {"labeled": 10}
    write_stripes_folder(tmp_path / "stripes")
    own = create_workspace("own", DataConfig(dataset="stripes"), tmp_path)
    with pytest.raises(MPLStudioError, match="hidden labels"):
        oracle_review(own, [0])


def tiny_demo(steps: int, finetune_steps: int, full_steps: int) -> tuple[RunConfig, RunConfig, RunConfig]:
    """A demo's MPL run, its retrain that fine-tunes the teacher, and its round from scratch, all tiny."""
    train = dict(eval_every=0, batch_size=16, device="cpu")
    return (RunConfig(model=ModelConfig(width=4), algorithm=AlgorithmConfig(name="mpl"),
                      train=TrainConfig(steps=steps, finetune_steps=finetune_steps, mu=2, **train)),
            RunConfig(model=ModelConfig(width=4, init_role="teacher"), algorithm=AlgorithmConfig(name="supervised"),
                      train=TrainConfig(steps=steps, **train)),
            RunConfig(model=ModelConfig(width=4), algorithm=AlgorithmConfig(name="supervised"),
                      train=TrainConfig(steps=full_steps, **train)))


def test_the_demo_adds_a_simulated_review_and_a_second_retrain_where_there_are_hidden_labels(fmnist, tmp_path):
    from mpl_core.service.demo import DEMO_REVIEW, start_demo
    ws = create_workspace("demo", DataConfig(max_unlabeled=400), tmp_path)
    cfg, retrain, full = tiny_demo(steps=20, finetune_steps=5, full_steps=60)
    review = RunConfig(model=ModelConfig(width=4), algorithm=AlgorithmConfig(name="supervised"),
                       train=TrainConfig(steps=10, eval_every=0, batch_size=16, device="cpu", trusted_share=0.5))
    status = start_demo(ws, cfg, retrain, review_cfg=review, full_retrain_cfg=full, budget_s=0.0,
                        target_precision=0.5, fine_tune=True).join(300)
    assert status.state == "done", status.error
    r = status.result
    # a round from scratch would not end within the budget: the retrain fine-tunes the teacher as planned
    assert r["retrain_from"] == "teacher" and r["projected_s"] > r["budget_s"] == 0.0
    runs = ws.store.runs()
    assert [x["kind"] for x in runs] == ["train", "retrain", "retrain"]
    mpl, retrained = (str(latest_checkpoint(ws.run_dir(x["id"])).resolve()) for x in runs[:2])
    # the retrain fine-tunes the MPL teacher, the review round goes on from the retrain's model
    assert [x["config"]["model"]["init_from"] for x in runs[1:]] == [mpl, retrained]
    assert [x["config"]["model"]["init_role"] for x in runs[1:]] == ["teacher", "student"]
    assert r["teacher_test_acc"] == runs[0]["metrics"]["teacher_test_acc"]  # the story's teacher is run 1's
    assert runs[2]["config"]["train"]["steps"] == 10 and runs[2]["config"]["train"]["trusted_share"] == 0.5
    pending_before = r["pseudo_labels"] - r["accepted"]
    assert r["reviewed"] == min(DEMO_REVIEW, pending_before) and 0 <= r["review_relabeled"] <= r["reviewed"]
    assert r["review_run"] == ws.store.runs()[-1]["id"] and 0.0 <= r["after_review_test_acc"] <= 1.0
    decisions = ws.store.current_decisions()
    by_oracle = np.asarray(decisions["who"]) == "simulated reviewer"
    assert by_oracle.sum() == r["reviewed"]  # said who decided: a person can tell them apart and undo them
    truth = ws.dataset().train.labels.numpy()[decisions["idx"][by_oracle]]
    assert (decisions["label"][by_oracle] == truth).all()


def test_the_demo_trains_its_round_from_scratch_where_that_is_projected_to_fit(fmnist, tmp_path):
    from mpl_core.service.demo import start_demo
    ws = create_workspace("demo", DataConfig(max_unlabeled=200), tmp_path)
    cfg, retrain, full = tiny_demo(steps=10, finetune_steps=2, full_steps=30)
    status = start_demo(ws, cfg, retrain, full_retrain_cfg=full, budget_s=3600.0, target_precision=0.5,
                        fine_tune=True).join(300)
    assert status.state == "done", status.error
    r, runs = status.result, ws.store.runs()
    assert r["retrain_from"] == "scratch" and r["projected_s"] <= r["budget_s"]
    assert runs[1]["config"]["model"]["init_from"] == "" and runs[1]["config"]["train"]["steps"] == 30
    # both rounds fit: the review round trains from scratch too, on the decisions as well
    assert r["review_from"] == "scratch" and [x["kind"] for x in runs] == ["train", "retrain", "retrain"]
    assert runs[2]["config"]["model"]["init_from"] == "" and runs[2]["config"]["train"]["steps"] == 30
    assert r["review_run"] == runs[2]["id"] and r["reviewed"] > 0


def test_the_demo_projects_a_round_from_the_mpl_runs_seconds_a_step():
    from mpl_core.presets import DEMO_SUPERVISED_STEP_COST
    from mpl_core.service.demo import _projected_end
    mpl = RunConfig(train=TrainConfig(steps=90, finetune_steps=10))
    full, review = RunConfig(train=TrainConfig(steps=300)), RunConfig(train=TrainConfig(steps=100))
    mpl_s = 20.0  # 0.2 s an MPL step
    assert _projected_end(mpl_s, mpl, full, review, 30.0) == pytest.approx(30 + DEMO_SUPERVISED_STEP_COST * 0.2 * 400)
    assert _projected_end(mpl_s, mpl, full, None, 30.0) == pytest.approx(30 + DEMO_SUPERVISED_STEP_COST * 0.2 * 300)
    assert _projected_end(mpl_s, mpl, None, review, 30.0) is None  # no round from scratch to project


def test_the_demo_plans_the_best_rounds_that_fit_its_budget():
    from mpl_core.presets import DEMO_SUPERVISED_STEP_COST
    from mpl_core.service.demo import plan_rounds
    mpl = RunConfig(train=TrainConfig(steps=90, finetune_steps=10))
    full, review = RunConfig(train=TrainConfig(steps=300)), RunConfig(train=TrainConfig(steps=100))
    step_s = DEMO_SUPERVISED_STEP_COST * 0.2  # 20 s over 100 MPL steps
    both, one = 30 + step_s * 600, 30 + step_s * 400  # two rounds from scratch; one, then going on for 100 steps
    half = 30 + step_s * 250  # one round from scratch on half its steps, then going on for 100

    def plan(budget, rev=review, f=full):
        p = plan_rounds(20.0, mpl, f, rev, 30.0, budget)
        return p.retrain_from, p.review_from, p.projected_s, p.scratch and p.scratch.train.steps

    assert plan(both) == ("scratch", "scratch", pytest.approx(both), 300)
    assert plan(both - 1) == ("scratch", "retrain", pytest.approx(one), 300)
    assert plan(one - 1) == ("scratch", "retrain", pytest.approx(half), 150)  # a shorter round still fits
    assert plan(half - 1) == ("planned", "retrain", pytest.approx(one), None)
    assert plan(30 + step_s * 300, rev=None) == ("scratch", "retrain", pytest.approx(30 + step_s * 300), 300)
    assert plan(10**6, f=None) == ("planned", "retrain", None, None)  # no round from scratch offered
    assert full.train.steps == 300  # the half round is a copy

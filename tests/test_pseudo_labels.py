import math

import numpy as np
import pytest

from mpl_core.config import AlgorithmConfig, DataConfig, ModelConfig, RunConfig, TrainConfig
from mpl_core.errors import MPLStudioError
from mpl_core.service.work import start_pseudo_labeling, start_training
from mpl_core.workspace.calibration import (
    Calibration,
    ThresholdIndex,
    confidence_histogram,
    fit_calibration,
    precision_coverage_table,
    threshold_for_precision,
)
from mpl_core.workspace.review import threshold_index
from mpl_core.workspace.workspace import create_workspace

IDENTITY = fit_calibration([], [])  # no validation evidence: the model's confidence is taken as is


def hand_example(calibration=IDENTITY):
    label = np.array([0, 0, 0, 1, 1])
    confidence = np.array([0.9, 0.8, 0.4, 0.95, 0.6])
    truth = np.array([0, 1, 0, 1, 0])
    validation = {"confidence": [0.85, 0.5, 0.97], "label": [0, 0, 1], "truth": [0, 1, 1]}
    return ThresholdIndex(label, confidence, 2, calibration, truth, validation)


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
    hist = confidence_histogram(np.array([0, 0, 1]), np.array([0.05, 1.0, 0.5]), 2, bins=10)
    assert hist.shape == (2, 10) and hist[0, 0] == 1 and hist[0, 9] == 1 and hist[1, 5] == 1


def test_precision_coverage_table_keeps_only_columns_with_values():
    table = precision_coverage_table(hand_example(), [0.5, 0.8, 1.0])
    assert [list(r) for r in table] == [["threshold", "est_precision", "true_precision", "coverage"]] * 3
    assert table[1]["coverage"] == pytest.approx(0.6) and table[1]["true_precision"] == pytest.approx(2 / 3)
    no_truth = ThresholdIndex(np.array([0, 1]), np.array([0.9, 0.6]), 2, IDENTITY)
    rows = precision_coverage_table(no_truth)  # the default sweep: 34 thresholds from 0 to 0.99
    assert len(rows) == 34 and rows[-1]["threshold"] == pytest.approx(0.99)
    assert list(rows[0]) == ["threshold", "est_precision", "coverage"]  # no true labels, no true precision

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

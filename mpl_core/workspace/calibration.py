"""Calibration and threshold statistics of a round of pseudo-labels.

    index = ThresholdIndex(rows.label, rows.confidence, num_classes, fit_calibration(...))
    stats = index.stats(0.9)              # or one threshold per class
    stats.passed, stats.coverage, stats.est_precision, stats.per_class

Estimated precision. The model's predictions on the held-out labeled validation split give a
calibration curve: how often it is right at each confidence (isotonic regression, so the curve
never falls as confidence rises). The estimated precision of what a threshold admits is the
mean of that curve over the admitted pool samples: it weighs the validation evidence by the
pool's own confidence distribution, which is steadier at high thresholds than counting the
few validation samples that pass. One curve serves every class: 50 validation images per
class are too few for a curve each. Where true labels exist (built-in datasets), the true
precision is computed beside it so the estimate can be checked.

Speed. `ThresholdIndex` sorts confidences once per class and keeps running sums, so a
statistics query for any threshold is a few binary searches: O(K log N), not a pass over N.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from mpl_core.errors import MPLStudioError

# --- calibration ---------------------------------------------------------------------------------

@dataclass
class Calibration:
    """P(correct | confidence) as a non-decreasing piecewise-linear curve through (x, y)."""
    x: np.ndarray
    y: np.ndarray
    n: int  # validation samples behind it

    def __call__(self, confidence: np.ndarray) -> np.ndarray:
        if self.n == 0:
            return np.asarray(confidence, dtype=np.float64)  # no evidence: trust the model's confidence
        return np.interp(confidence, self.x, self.y)


def fit_calibration(confidence: Sequence[float], correct: Sequence[bool]) -> Calibration:
    """Isotonic regression (pool adjacent violators) of correctness on confidence."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    if len(conf) == 0:
        return Calibration(np.array([0.0, 1.0]), np.array([0.0, 1.0]), 0)
    order = np.argsort(conf, kind="stable")
    conf, hit = conf[order], hit[order]
    means, weights, xs = [], [], []  # blocks: mean correctness, size, mean confidence
    for c, h in zip(conf, hit):
        means.append(h)
        weights.append(1.0)
        xs.append(c)
        while len(means) > 1 and means[-2] > means[-1]:
            w = weights[-2] + weights[-1]
            means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / w
            xs[-2] = (xs[-2] * weights[-2] + xs[-1] * weights[-1]) / w
            weights[-2] = w
            del means[-1], weights[-1], xs[-1]
    return Calibration(np.asarray(xs), np.asarray(means), len(conf))


def calibration_from_validation(validation: dict) -> Calibration:
    truth = np.asarray(validation.get("truth", []))
    label = np.asarray(validation.get("label", []))
    return fit_calibration(validation.get("confidence", []), truth == label)


def reliability_table(validation: dict, bins: int = 10) -> list[dict]:
    """Validation accuracy per confidence bin (for a reliability plot)."""
    conf = np.asarray(validation.get("confidence", []), dtype=np.float64)
    hit = np.asarray(validation.get("truth", [])) == np.asarray(validation.get("label", []))
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf >= lo) & ((conf < hi) | (hi == 1.0))
        n = int(inside.sum())
        rows.append({"bin_low": float(lo), "bin_high": float(hi), "count": n,
                     "confidence": float(conf[inside].mean()) if n else float("nan"),
                     "accuracy": float(hit[inside].mean()) if n else float("nan")})
    return rows


# --- threshold statistics ------------------------------------------------------------------------

@dataclass
class ThresholdStats:
    thresholds: list[float]  # one per class
    total: int  # pseudo-labels in the round
    passed: int  # how many reach their class's threshold
    coverage: float  # passed / total
    est_precision: float  # calibrated estimate of the accuracy of what passes (nan if none)
    true_precision: float | None  # from the true labels where known
    mean_confidence: float  # the model's own (uncalibrated) claim about what passes
    val_support: int  # validation images that pass too: the evidence behind est_precision
    per_class: list[dict] = field(default_factory=list)  # class, predicted, passed, coverage, precisions


class ThresholdIndex:
    """Answers threshold questions about one round of pseudo-labels in O(K log N) each."""

    def __init__(self, label: np.ndarray, confidence: np.ndarray, num_classes: int, calibration: Calibration,
                 truth: np.ndarray | None = None, validation: dict | None = None):
        label = np.asarray(label, dtype=np.int64)
        confidence = np.asarray(confidence, dtype=np.float64)
        if len(label) != len(confidence):
            raise MPLStudioError("labels and confidences differ in length")
        self.num_classes, self.total = num_classes, len(label)
        self.has_truth = truth is not None
        expected = calibration(confidence)
        correct = (np.asarray(truth) == label).astype(np.float64) if truth is not None else None
        val_conf = np.asarray((validation or {}).get("confidence", []), dtype=np.float64)
        val_label = np.asarray((validation or {}).get("label", []), dtype=np.int64)
        self._val = [np.sort(val_conf[val_label == c]) for c in range(num_classes)]
        self._classes = []
        for c in range(num_classes):
            members = np.nonzero(label == c)[0]
            order = members[np.argsort(-confidence[members], kind="stable")]  # most confident first
            self._classes.append((
                -confidence[order],  # ascending, for searchsorted
                np.concatenate([[0.0], np.cumsum(expected[order])]),
                np.concatenate([[0.0], np.cumsum(correct[order])]) if correct is not None else None,
                np.concatenate([[0.0], np.cumsum(confidence[order])]),
            ))

    def _thresholds(self, threshold: float | Sequence[float]) -> list[float]:
        values = [float(threshold)] * self.num_classes if np.isscalar(threshold) else [float(t) for t in threshold]
        if len(values) != self.num_classes:
            raise MPLStudioError(f"give one threshold or one per class ({self.num_classes})")
        if any(not 0.0 <= t <= 1.0 for t in values):
            raise MPLStudioError("thresholds must be between 0 and 1")
        return values

    def stats(self, threshold: float | Sequence[float]) -> ThresholdStats:
        thresholds = self._thresholds(threshold)
        per_class, passed, est_sum, true_sum, conf_sum = [], 0, 0.0, 0.0, 0.0
        support = sum(len(v) - int(np.searchsorted(v, t, side="left")) for v, t in zip(self._val, thresholds))
        for c, (neg_conf, exp_cum, cor_cum, conf_cum) in enumerate(self._classes):
            n = int(np.searchsorted(neg_conf, -thresholds[c], side="right"))  # confidence >= threshold
            row = {"class": c, "predicted": len(neg_conf), "passed": n,
                   "coverage": n / len(neg_conf) if len(neg_conf) else 0.0,
                   "est_precision": _ratio(exp_cum[n], n),
                   "true_precision": _ratio(cor_cum[n], n) if cor_cum is not None else None}
            per_class.append(row)
            passed += n
            est_sum += exp_cum[n]
            true_sum += cor_cum[n] if cor_cum is not None else 0.0
            conf_sum += conf_cum[n]
        return ThresholdStats(thresholds, self.total, passed, _ratio(passed, self.total, empty=0.0),
                              _ratio(est_sum, passed), _ratio(true_sum, passed) if self.has_truth else None,
                              _ratio(conf_sum, passed), support, per_class)

    def sweep(self, thresholds: Sequence[float]) -> list[dict]:
        """Coverage and precision for a list of global thresholds (for a precision/coverage plot)."""
        out = []
        for t in thresholds:
            s = self.stats(float(t))
            out.append({"threshold": float(t), "passed": s.passed, "coverage": s.coverage,
                        "est_precision": s.est_precision, "true_precision": s.true_precision,
                        "mean_confidence": s.mean_confidence, "val_support": s.val_support})
        return out


def _ratio(num: float, den: int, empty: float = float("nan")) -> float:
    return float(num) / den if den else empty


def threshold_for_precision(index: ThresholdIndex, target: float, grid: int = 201) -> float | None:
    """The lowest global threshold whose estimated precision reaches target (None if none does)."""
    for t in np.linspace(0.0, 1.0, grid):
        s = index.stats(float(t))
        if s.passed and s.est_precision >= target:
            return float(t)
    return None


def confidence_histogram(label: np.ndarray, confidence: np.ndarray, num_classes: int,
                         bins: int = 20) -> np.ndarray:
    """(K, bins) counts of pseudo-labels per predicted class and confidence bin on [0, 1]."""
    b = np.minimum((np.asarray(confidence) * bins).astype(np.int64), bins - 1)
    flat = np.bincount(np.asarray(label) * bins + b, minlength=num_classes * bins)
    return flat.reshape(num_classes, bins)


def precision_coverage_table(index: ThresholdIndex, thresholds: Sequence[float] | None = None) -> list[dict]:
    """Estimated precision, true precision and coverage per global threshold (34 from 0 to 0.99 by
    default), for a precision/coverage plot. A column with no value at any threshold is left out:
    true precision without true labels, estimated precision when nothing ever passes."""
    rows = index.sweep(np.linspace(0.0, 0.99, 34) if thresholds is None else thresholds)
    keep = [k for k in ("est_precision", "true_precision", "coverage")
            if any(r[k] is not None and not np.isnan(r[k]) for r in rows)]
    return [{"threshold": r["threshold"], **{k: r[k] for k in keep}} for r in rows]

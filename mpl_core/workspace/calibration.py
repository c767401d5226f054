"""Calibration and threshold statistics of a round of pseudo-labels.

    index = ThresholdIndex(rows.label, rows.confidence, num_classes, fit_calibration(...), validation=...)
    stats = index.stats(0.9)              # or one threshold per class
    stats.passed, stats.coverage, stats.est_precision, stats.est_low, stats.est_high, stats.per_class

Estimated precision, with a 90% interval ("count", the default). Of the held-out validation
images that pass the same thresholds (each by its predicted class), k of n were labeled right:
the estimate is the posterior mean and the interval the central 90% of the Jeffreys posterior,
Beta(k + 1/2, n - k + 1/2). The interval widens as fewer validation images pass, which is the
honest answer at high thresholds. Per class the same, from the validation images predicted as
that class. Measured against the alternatives on Fashion-MNIST (bench/calibration.py, 3 seeds,
thresholds 0.50-0.99): isotonic regression of correctness on confidence, temperature scaling and
Kumar et al.'s scaling-binning, each with a bootstrap interval, and Bayesian histogram binning
weighted by the pool's confidences. The calibrators turned the pool's confidence into an estimate
that was 2-6 points optimistic above 0.9 (the pool has confident mistakes that the curve fitted
on 500 images does not see), and their bootstrap intervals covered the truth for only 30-68% of
the pairs; counting covered it for 98%, and per class for 90%. Over 300 validation sets drawn from
each of 6 teachers' pools (bench/calibration.py --repeat) the count's 90% interval held the truth 92%
of the time; PPI++ (the pool's confidence as a control variate) gained too little to trade for a
normal approximation. docs/results.md has the tables.
`estimator="isotonic"` keeps the former estimate (no interval) for comparison.

Where true labels exist (built-in datasets), the true precision is computed beside it so the
estimate can be checked. Validation labels are the only labels the estimate uses.

Speed. `ThresholdIndex` sorts confidences once per class and keeps running sums, so a
statistics query for any threshold is a few binary searches: O(K log N), not a pass over N;
intervals are cached by (k, n).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
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


# --- intervals -----------------------------------------------------------------------------------

ESTIMATORS = ("count", "isotonic")
LEVEL = 0.90  # the central share of the posterior the interval holds


@lru_cache(maxsize=65536)
def precision_interval(k: int, n: int, level: float = LEVEL) -> tuple[float, float, float]:
    """(estimate, low, high) of a success rate from k successes in n: the Jeffreys posterior
    Beta(k + 1/2, n - k + 1/2), its mean and its central `level` interval. nan without evidence."""
    if n <= 0:
        return float("nan"), 0.0, 1.0
    a, b = k + 0.5, n - k + 0.5
    tail = (1.0 - level) / 2
    return a / (a + b), _beta_quantile(tail, a, b), _beta_quantile(1.0 - tail, a, b)


def interval_width(precision: float, n: int, level: float = LEVEL) -> float:
    """The width of the interval (precision_interval) of a precision estimated at `precision` from n
    images (k = precision * n of them right, rounded); 1 with none."""
    if n <= 0:
        return 1.0
    _, low, high = precision_interval(int(round(precision * n)), int(n), level)
    return high - low


def images_for_width(precision: float, width: float, most: int = 10_000_000) -> int:
    """The fewest images behind an estimate at `precision` for its interval to be narrower than
    `width` (bisection: the width falls as n grows, but for the rounding of k); `most` if none is."""
    lo, hi = 0, 1
    while interval_width(precision, hi) >= width:
        if hi >= most:
            return most
        lo, hi = hi, min(hi * 2, most)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if interval_width(precision, mid) >= width else (lo, mid)
    return hi


def _beta_quantile(q: float, a: float, b: float) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(60):  # bisection: the regularized incomplete beta function rises in x
        mid = (lo + hi) / 2
        if _betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (continued fraction, Lentz's method)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny, f, c, d = 1e-300, 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + num / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        f *= c * d
        if abs(1.0 - c * d) < 1e-12:
            break
    return math.exp(log_front) * (f - 1.0) / a


# --- threshold statistics ------------------------------------------------------------------------

@dataclass
class ThresholdStats:
    thresholds: list[float]  # one per class
    total: int  # pseudo-labels in the round
    passed: int  # how many reach their class's threshold
    coverage: float  # passed / total
    est_precision: float  # estimated accuracy of what passes (nan without evidence)
    true_precision: float | None  # from the true labels where known
    mean_confidence: float  # the model's own (uncalibrated) claim about what passes
    val_support: int  # validation images that pass too: the evidence behind est_precision
    per_class: list[dict] = field(default_factory=list)  # class, predicted, passed, coverage, precisions
    est_low: float = float("nan")  # the 90% interval of the estimate ("count" estimator)
    est_high: float = float("nan")

    @property
    def truth_inside(self) -> bool | None:
        """Whether the true precision lies in the 90% interval; None where either is unknown."""
        known = [self.true_precision, self.est_precision, self.est_low, self.est_high]  # no estimate: no interval
        if any(v is None or v != v for v in known):
            return None
        return bool(self.est_low <= self.true_precision <= self.est_high)


class ThresholdIndex:
    """Answers threshold questions about one round of pseudo-labels in O(K log N) each."""

    def __init__(self, label: np.ndarray, confidence: np.ndarray, num_classes: int, calibration: Calibration,
                 truth: np.ndarray | None = None, validation: dict | None = None, estimator: str = "count"):
        label = np.asarray(label, dtype=np.int64)
        confidence = np.asarray(confidence, dtype=np.float64)
        if len(label) != len(confidence):
            raise MPLStudioError("labels and confidences differ in length")
        if estimator not in ESTIMATORS:
            raise MPLStudioError(f"estimator must be one of {', '.join(ESTIMATORS)}, not {estimator!r}")
        self.num_classes, self.total, self.estimator = num_classes, len(label), estimator
        self.has_truth = truth is not None
        expected = calibration(confidence)
        correct = (np.asarray(truth) == label).astype(np.float64) if truth is not None else None
        val_conf = np.asarray((validation or {}).get("confidence", []), dtype=np.float64)
        val_label = np.asarray((validation or {}).get("label", []), dtype=np.int64)
        val_truth = np.asarray((validation or {}).get("truth", []), dtype=np.int64)
        self._val = []  # per predicted class: -confidence ascending, running count of right labels
        for c in range(num_classes):
            mine = np.nonzero(val_label == c)[0]
            mine = mine[np.argsort(-val_conf[mine], kind="stable")]
            self._val.append((-val_conf[mine], np.concatenate([[0], np.cumsum(val_truth[mine] == c)])))
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
        per_class, passed, est_sum, true_sum, conf_sum, val_n, val_k = [], 0, 0.0, 0.0, 0.0, 0, 0
        for c, (neg_conf, exp_cum, cor_cum, conf_cum) in enumerate(self._classes):
            n = int(np.searchsorted(neg_conf, -thresholds[c], side="right"))  # confidence >= threshold
            vn = int(np.searchsorted(self._val[c][0], -thresholds[c], side="right"))
            vk = int(self._val[c][1][vn])
            est, low, high = self._estimate(exp_cum[n], n, vk, vn)
            row = {"class": c, "predicted": len(neg_conf), "passed": n,
                   "coverage": n / len(neg_conf) if len(neg_conf) else 0.0,
                   "est_precision": est, "est_low": low, "est_high": high, "val_support": vn,
                   "true_precision": _ratio(cor_cum[n], n) if cor_cum is not None else None}
            per_class.append(row)
            passed += n
            est_sum += exp_cum[n]
            true_sum += cor_cum[n] if cor_cum is not None else 0.0
            conf_sum += conf_cum[n]
            val_n, val_k = val_n + vn, val_k + vk
        est, low, high = self._estimate(est_sum, passed, val_k, val_n)
        return ThresholdStats(thresholds, self.total, passed, _ratio(passed, self.total, empty=0.0),
                              est, _ratio(true_sum, passed) if self.has_truth else None,
                              _ratio(conf_sum, passed), val_n, per_class, low, high)

    def _estimate(self, expected_sum: float, passed: int, val_right: int, val_passed: int):
        """(estimate, low, high) of the precision of what passes: see the module's docstring."""
        if passed == 0:
            return float("nan"), float("nan"), float("nan")
        if self.estimator == "isotonic":
            return _ratio(expected_sum, passed), float("nan"), float("nan")
        return precision_interval(val_right, val_passed)

    def sweep(self, thresholds: Sequence[float]) -> list[dict]:
        """Coverage and precision for a list of global thresholds (for a precision/coverage plot)."""
        out = []
        for t in thresholds:
            s = self.stats(float(t))
            out.append({"threshold": float(t), "passed": s.passed, "coverage": s.coverage,
                        "est_precision": s.est_precision, "est_low": s.est_low, "est_high": s.est_high,
                        "true_precision": s.true_precision,
                        "mean_confidence": s.mean_confidence, "val_support": s.val_support})
        return out


def validation_count(validation: dict, thresholds: Sequence[float]) -> tuple[int, int]:
    """(right, passing): how many validation images reach their predicted class's threshold, and how
    many of those were labeled right, as ThresholdIndex.stats counts them for its estimate."""
    conf = np.asarray(validation.get("confidence", []), dtype=np.float64)
    label = np.asarray(validation.get("label", []), dtype=np.int64)
    truth = np.asarray(validation.get("truth", []), dtype=np.int64)
    passing = conf >= np.asarray(thresholds, dtype=np.float64)[label]
    return int((passing & (truth == label)).sum()), int(passing.sum())


def _ratio(num: float, den: int, empty: float = float("nan")) -> float:
    return float(num) / den if den else empty


def threshold_for_precision(index: ThresholdIndex, target: float, grid: int = 201) -> float | None:
    """The lowest global threshold whose estimated precision reaches target (None if none does)."""
    for t in np.linspace(0.0, 1.0, grid):
        s = index.stats(float(t))
        if s.passed and s.est_precision >= target:
            return float(t)
    return None


ACCEPT_MIN_SUPPORT = 100  # threshold_to_accept's fallback: validation images behind the best estimate


def threshold_to_accept(index: ThresholdIndex, target: float, min_support: int = ACCEPT_MIN_SUPPORT,
                        grid: int = 201) -> float:
    """The threshold the demo accepts above: the lowest whose estimated precision reaches target;
    where none does (a teacher whose precision levels off just under it: the estimate's standard
    error at 95% with 150 validation images is 1.8 points), the one with the best estimate among
    those with at least min_support validation images behind them, so that the fallback is not a
    near-empty threshold whose estimate rests on a handful of images. 0.99 if nothing qualifies."""
    found = threshold_for_precision(index, target, grid)
    if found is not None:
        return found
    best, best_est = 0.99, -1.0
    for t in np.linspace(0.0, 1.0, grid):
        s = index.stats(float(t))
        if s.val_support >= min_support and s.est_precision > best_est:
            best, best_est = float(t), s.est_precision
    return best


# Below this many validation images a class, the Data and Review pages say how wide the estimate's
# interval is and how much narrower it would be with more labels (validation.py's advice). At 30 a
# class and a precision of 90%, an estimate from all of them has an interval 12.7 points wide with 2
# classes and 5.7 with 10 (Fashion-MNIST's); one at a threshold rests only on the images that pass,
# so it is wider. At 2 a class (the issue that brought this: 6 right of 9, 39.6% to 86.8%) it is 47.
MIN_VALIDATION_PER_CLASS = 30


# Per-class thresholds need evidence in every class: on Fashion-MNIST's demo teachers, what passed
# thresholds chosen per class truly reached a 90% aim in 95% of validation draws of 200 a class (one
# threshold for all: 56%), but in 22% of draws of 50 a class (one threshold: 54%): ten thresholds each
# chosen on a few dozen images favour lucky ones (bench/calibration.py --choice, docs/results.md).
# What a class's threshold rests on is the validation images predicted as that class: the fewest of
# them (shirts, which these teachers seldom predict) were 12 to 41 in draws of 50 a class and 68 to
# 121 in draws of 200 a class. Below this many the app says one threshold is the safer choice.
PER_CLASS_MIN_VALIDATION = 60


def classes_short_of_validation(index: ThresholdIndex, fewest: int = PER_CLASS_MIN_VALIDATION) -> dict[int, int]:
    """{class: validation images predicted as it} for the classes the pool is predicted as that have
    fewer than `fewest` of them: the evidence a per-class threshold rests on at most."""
    rows = index.stats(0.0).per_class
    return {r["class"]: r["val_support"] for r in rows if r["predicted"] and r["val_support"] < fewest}


def class_thresholds_to_accept(index: ThresholdIndex, target: float, min_support: int = 20,
                               grid: int = 201) -> list[float]:
    """One threshold per predicted class, each chosen as threshold_to_accept chooses the global one
    but on that class's own estimate: the lowest whose estimated precision for the class reaches
    target; where none does, the one with the best estimate among those with at least min_support of
    the class's validation images behind them; 0.99 if nothing qualifies. An easy class then gives
    more of its pool, a confusable one less, and each class's accepted labels are about equally sure."""
    grid_t = [float(t) for t in np.linspace(0.0, 1.0, grid)]
    sweeps = [index.stats(t).per_class for t in grid_t]
    chosen = []
    for c in range(index.num_classes):
        rows = [(t, s[c]) for t, s in zip(grid_t, sweeps)]
        reach = [t for t, r in rows if r["passed"] and r["est_precision"] >= target]
        if reach:
            chosen.append(reach[0])
            continue
        supported = [(r["est_precision"], -t) for t, r in rows
                     if r["val_support"] >= min_support and r["est_precision"] == r["est_precision"]]  # not NaN
        chosen.append(-max(supported)[1] if supported else 0.99)
    return chosen


@dataclass
class Aim:
    """The thresholds for a precision to aim for (aim_for), and what the validation images say of them."""
    target: float
    per_class: bool
    thresholds: list[float]  # one per class (all equal for one threshold)
    stats: ThresholdStats  # of what passes them
    short: list[int]  # per_class: the predicted classes whose own estimate misses the target
    reached: bool  # the estimate of all that passes reaches the target
    short_of_validation: dict[int, int]  # per_class: classes_short_of_validation

    @property
    def strict_fallback(self) -> bool:
        """One threshold, none reaching the target with min_support validation images: the strict 0.99."""
        return not self.per_class and not self.reached and self.stats.val_support < ACCEPT_MIN_SUPPORT


def aim_for(index: ThresholdIndex, target: float, per_class: bool = False, grid: int = 201) -> Aim:
    """The lowest threshold whose estimated precision reaches target (threshold_to_accept; per_class:
    each class's own, class_thresholds_to_accept), on a grid of `grid` thresholds from 0 to 1."""
    if not 0.0 < target < 1.0:
        raise MPLStudioError(f"the precision to aim for must be between 0 and 1, not {target}")
    found = class_thresholds_to_accept(index, target, grid=grid) if per_class else \
        [threshold_to_accept(index, target, grid=grid)] * index.num_classes
    found = [round(t, 3) for t in found]  # the grid's values, without float noise (0.7850000000000001)
    stats = index.stats(found)
    short = [r["class"] for r in stats.per_class if r["predicted"] and not r["est_precision"] >= target] \
        if per_class else []
    return Aim(target, per_class, found, stats, short, bool(stats.est_precision >= target),
               classes_short_of_validation(index) if per_class else {})


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
    keep = [k for k in ("est_precision", "est_low", "est_high", "true_precision", "coverage")
            if any(r[k] is not None and not np.isnan(r[k]) for r in rows)]
    if "est_precision" not in keep:  # no estimate anywhere: an interval of [0, 1] says nothing either
        keep = [k for k in keep if k not in ("est_low", "est_high")]
    return [{"threshold": r["threshold"], **{k: r[k] for k in keep}} for r in rows]

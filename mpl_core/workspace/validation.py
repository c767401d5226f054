"""Validation labels that mean something: what the validation images there are can say about the
precision of pseudo-labels, in words, and the validation queue that adds to them from the pool.

    split_outlook([2, 2, 2]).message             # the Data page: validation images per class
    round_outlook(view, stats).message           # the Review page: the estimate at its thresholds
                                                 # (queue.outlook(stats) for the newest round)
    queue = ValidationQueue(ws, session)
    positions = queue.draw(24)                   # pool rows, in a seeded random order
    queue.record(positions, labels, who="ana")   # they become validation images

The queue labels a random sample of the pool, so that the estimate stays unbiased: the images a
person picks, or those the model is least sure of, are not like the pool. Its order is a shuffle of
the pool drawn from the split's seed, the same in every round and for every reviewer; it shows the
first rows of it that nobody has labeled for validation, decided in review or not: the estimate is
of every pseudo-label that passes, and after "accept all above the threshold" the pending ones are
only those below it, so a sample of them would say nothing of what passes. A label given there
makes the image a validation image under that label (Workspace.split, splits.with_validation_labels):
it leaves the pool, and the next round of pseudo-labels counts it in the estimate. The round on show
already holds a pseudo-label of it from the same model, so `preview` gives the interval that a new
round of the same model would: the interval narrowing as the labels come in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mpl_core.errors import MPLStudioError
from mpl_core.workspace.calibration import (
    MIN_VALIDATION_PER_CLASS,
    ThresholdStats,
    interval_width,
    precision_interval,
    validation_count,
)
from mpl_core.workspace.review_session import ReviewSession, ReviewView
from mpl_core.workspace.workspace import Workspace

REFERENCE_PRECISION = 0.9  # where no estimate is at hand, widths are for this precision (the Review page's aim)
NONE_OF_THEM = -1  # the label of an image that is none of the classes: it stays in the pool
QUEUE_STREAM = 38  # mixed into the split's seed: the queue's shuffle is not the review's "a random sample"


@dataclass
class Outlook:
    """How far an estimate of precision can be trusted with the validation images there are."""
    images: int  # validation images behind the estimate (on the Review page: those that pass)
    total: int  # validation images in all
    classes: int
    precision: float  # the estimate, or REFERENCE_PRECISION where there is none
    width: float  # its 90% interval's width now (1: no estimate)
    more: int  # labels that bring validation to MIN_VALIDATION_PER_CLASS a class
    width_more: float  # the width with `more` labels drawn at random from the pool
    message: str  # what the pages say; "" where validation holds enough

    @property
    def short(self) -> bool:
        return bool(self.message)


def points(width: float) -> str:
    """A width of an interval in percentage points, as the pages write it."""
    return f"{width * 100:.1f}" if width < 0.1 else f"{width * 100:.0f}"


def split_outlook(per_class: Sequence[int]) -> Outlook:
    """The Data page's words on a split's validation images per class: short of
    MIN_VALIDATION_PER_CLASS a class, how wide an estimate of 90% from all of them would be, and
    with how many more labels it would be how wide."""
    total, k = int(sum(per_class)), max(1, len(per_class))
    more = max(0, MIN_VALIDATION_PER_CLASS * k - total)
    width, width_more = interval_width(REFERENCE_PRECISION, total), interval_width(REFERENCE_PRECISION, total + more)
    message = ""
    if more and total == 0:
        message = (f"There are no validation images, so the precision of pseudo-labels cannot be estimated. "
                   f"{more} validation labels ({MIN_VALIDATION_PER_CLASS} a class) would give an estimated precision "
                   f"of 90% from all of them a 90% interval {points(width_more)} points wide: label a random sample "
                   "of the pool on the Review page (Validation labels).")
    elif more:
        message = (f"Validation holds {total} image(s) ({_one_decimal(total / k)} a class), under "
                   f"{MIN_VALIDATION_PER_CLASS} a class: an estimated precision of 90% from all of them would have a "
                   f"90% interval {points(width)} points wide, and one at a threshold, from the images that pass it, "
                   "a wider one. "
                   f"{more} more validation labels ({MIN_VALIDATION_PER_CLASS} a class) would bring it to "
                   f"{points(width_more)} points: label a random sample of the pool on the Review page "
                   "(Validation labels).")
    return Outlook(total, total, k, REFERENCE_PRECISION, width, more, width_more, message)


def round_outlook(view: ReviewView, stats: ThresholdStats) -> Outlook:
    """The Review page's words on the estimate at its thresholds, where the round's validation holds
    fewer than MIN_VALIDATION_PER_CLASS a class: its interval's width now, and about how wide it would
    be with the labels that bring validation there, drawn at random from the pool (of which the pool's
    coverage at these thresholds pass: a random pool image passes as often as the pool does)."""
    k, total = len(view.class_names), len(view.rows.validation.get("label", []))
    more = max(0, MIN_VALIDATION_PER_CLASS * k - total)
    known = stats.val_support > 0 and stats.est_precision == stats.est_precision  # not NaN
    precision = stats.est_precision if known else REFERENCE_PRECISION
    width = stats.est_high - stats.est_low if known else 1.0
    passing_more = int(round(more * stats.coverage))
    width_more = interval_width(precision, stats.val_support + passing_more if passing_more else total + more)
    if not more:
        return Outlook(stats.val_support, total, k, precision, width, more, width_more, "")
    held = f"{total} in all, {_one_decimal(total / k)} a class, under {MIN_VALIDATION_PER_CLASS}"
    now = (f"This estimate rests on {stats.val_support} validation image(s) that pass ({held}): its 90% interval "
           f"is {points(width)} points wide. " if known else
           f"No estimate: no validation image passes these thresholds ({held}). ")
    at = "" if known else " at a precision of 90%"
    then = (f"{more} more validation labels ({MIN_VALIDATION_PER_CLASS} a class) drawn at random from the pool, of "
            f"which about {passing_more} would pass these thresholds, would bring it to about {points(width_more)} "
            f"points{at}. " if passing_more else
            f"{more} more validation labels ({MIN_VALIDATION_PER_CLASS} a class) would give an estimate from all of "
            f"them an interval about {points(width_more)} points wide{at}; no pseudo-label passes these thresholds. ")
    message = now + then + "Label them in the Validation labels tab; they count from the next round of pseudo-labels."
    return Outlook(stats.val_support, total, k, precision, width, more, width_more, message)


def _one_decimal(x: float) -> str:
    return f"{x:.1f}".removesuffix(".0")


class ValidationQueue:
    """A random sample of one workspace's pool to label for validation, and the labels given."""

    def __init__(self, ws: Workspace, session: ReviewSession):
        self.ws, self.session = ws, session

    def view(self) -> ReviewView:
        view = self.session.view()
        if view is None:
            raise MPLStudioError("no pseudo-labels yet: the validation queue draws from a round's pool")
        return view

    def outlook(self, stats: ThresholdStats) -> Outlook:
        """round_outlook of the newest round at the thresholds `stats` is for."""
        return round_outlook(self.view(), stats)

    def draw(self, n: int) -> np.ndarray:
        """Row positions of the newest round: the first n of the queue's shuffle of the pool that have
        no validation label (nor a "none of the classes"), whatever their review status."""
        view = self.view()
        idx = view.rows.idx
        # one number per pool image, the same in every round (a round's rows are some of the pool)
        key = np.random.default_rng([int(self.ws.data.seed), QUEUE_STREAM]).random(len(self.ws.dataset().train))
        order = np.argsort(key[idx], kind="stable")
        open_ = ~np.isin(idx, self.ws.store.validation.in_force()["idx"])
        return order[open_[order]][:n]

    def given(self) -> tuple[np.ndarray, np.ndarray]:
        """(row positions, labels) of the newest round's pool images labeled for validation, in the
        order they were labeled: those its stored validation does not hold yet."""
        view, found = self.view(), self.ws.store.validation.in_force()
        keep = found["label"] >= 0
        idx, labels = found["idx"][keep], found["label"][keep]
        pos = np.clip(np.searchsorted(view.rows.idx, idx), 0, max(0, len(view.rows) - 1))
        hit = (view.rows.idx[pos] == idx) if len(view.rows) else np.zeros(len(idx), dtype=bool)
        return pos[hit], labels[hit]

    def record(self, positions, labels: int | Sequence[int], who: str) -> int:
        """Label rows of the newest round for validation (NONE_OF_THEM: none of the classes), one class
        for all or one per row, in one transaction; rows that have a label already are left. Returns
        how many were recorded."""
        view = self.view()
        positions = [int(p) for p in np.asarray(positions, dtype=np.int64).reshape(-1)]
        if any(not 0 <= p < len(view.rows) for p in positions):
            raise MPLStudioError("these images are not in the newest round of pseudo-labels")
        labels = np.broadcast_to(np.asarray(labels, dtype=np.int64), (len(positions),)).tolist()
        k = len(view.class_names)
        if any(not (0 <= c < k or c == NONE_OF_THEM) for c in labels):
            raise MPLStudioError(f"a validation label is a class between 0 and {k - 1}")
        samples = [(view.rows.sample_ids[p], int(view.rows.idx[p])) for p in positions]
        return self.ws.store.validation.add(samples, labels, who)

    def undo(self, who: str | None = None) -> int:
        """Take back the newest batch of validation labels (by `who` if given)."""
        return self.ws.store.validation.undo(who)

    def apply(self, batch: dict, who: str) -> dict:
        """The review grid's operations in its labeling-queue mode, as validation labels: a class (A, a
        digit) labels the image, X marks it none of the classes, U undoes this reviewer's last.
        Answers as ReviewSession.apply does: {"id", "results", "message"}."""
        results, messages = [], []
        for op in batch.get("ops") or []:
            try:
                if batch.get("round") != self.session.latest_round():
                    raise MPLStudioError("a new round of pseudo-labels arrived and the queue was drawn again: "
                                         "label those images again")
                results.append(self._apply_one(op, who))
            except MPLStudioError as exc:
                results.append({"error": str(exc)})
                messages.append(str(exc))
        return {"id": batch.get("id"), "results": results, "message": "; ".join(dict.fromkeys(messages))}

    def _apply_one(self, op, who: str) -> dict:
        if not isinstance(op, dict) or op.get("op") not in ("decide", "undo"):
            raise MPLStudioError(f"unknown validation operation {op!r}")
        if op["op"] == "undo":
            return {"undone": self.undo(who)}
        positions = op.get("positions")
        if not isinstance(positions, list) or not positions or not all(isinstance(p, int) for p in positions):
            raise MPLStudioError("a validation label needs the positions of its tiles")
        rows = self.view().rows
        if op.get("action") == "reject":
            labels = NONE_OF_THEM
        elif op.get("label") is None:
            labels = [int(rows.label[p]) if 0 <= p < len(rows) else -2 for p in positions]  # the model's class
        else:
            labels = op["label"]
        n = self.record(positions, labels, who)
        return {"decided": n, "conflicts": len(positions) - n}

    def preview(self, thresholds: Sequence[float]) -> dict:
        """The estimate at `thresholds` from the round's validation images ("before") and with the
        labels given in the queue since ("after"), each {"right", "passing", "estimate", "low",
        "high"}; "given": how many, and "narrowing": [(labels given, interval width)] as they came."""
        view = self.view()
        positions, labels = self.given()
        rows, t = view.rows, np.asarray(thresholds, dtype=np.float64)
        right0, passing0 = validation_count(view.rows.validation, t)
        passes = rows.confidence[positions] >= t[rows.label[positions]]
        right = np.cumsum(passes & (rows.label[positions] == labels))
        passing = np.cumsum(passes)
        steps = np.unique(np.linspace(0, len(positions), min(len(positions), 40) + 1).astype(np.int64))
        narrowing = [(int(m), _width(right0 + (right[m - 1] if m else 0), passing0 + (passing[m - 1] if m else 0)))
                     for m in steps]
        after = (right0 + int(right[-1]), passing0 + int(passing[-1])) if len(positions) else (right0, passing0)
        return {"given": len(positions), "before": _estimate(right0, passing0), "after": _estimate(*after),
                "narrowing": narrowing}


def _estimate(right: int, passing: int) -> dict:
    est, low, high = precision_interval(int(right), int(passing))
    return {"right": int(right), "passing": int(passing), "estimate": est, "low": low, "high": high}


def _width(right: int, passing: int) -> float:
    _, low, high = precision_interval(int(right), int(passing))
    return high - low

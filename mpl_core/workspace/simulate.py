"""A simulated reviewer, for benchmarks (bench/review_value.py) and the demo only: it answers with the
dataset's hidden true labels, as an oracle would. A person's time is what it stands in for, so
it is refused where there are no hidden labels (own images): there, only people review.
"""
from __future__ import annotations

import numpy as np

from mpl_core.errors import MPLStudioError
from mpl_core.workspace.review import decide_rows
from mpl_core.workspace.review_session import ReviewSession
from mpl_core.workspace.workspace import Workspace

WHO = "simulated reviewer"


def oracle_review(ws: Workspace, positions, *, hand_labels: bool = False, who: str = WHO) -> dict:
    """Decide the pending pseudo-labels at `positions` (rows of the newest round) as an oracle:
    accept the right ones and relabel the wrong ones to the truth, or (hand_labels, the labeling
    queue) label each by hand. Returns how many of each."""
    ds = ws.dataset()
    if not ds.fully_labeled:
        raise MPLStudioError("the simulated reviewer answers with a dataset's hidden labels, and this dataset has "
                             "none; it is for benchmarks on the built-in datasets")
    rows = ws.store.pseudo_labels()
    if rows is None:
        raise MPLStudioError("no pseudo-labels to review: generate them first")
    positions = np.asarray(positions, dtype=np.int64)
    truth = ds.train.labels.numpy()[rows.idx[positions]]
    if hand_labels:
        n = decide_rows(ws, rows, positions, "manual", who, label=truth.tolist(), expect="pending", seen=True)
        return {"labeled": n}
    right = rows.label[positions] == truth
    accepted = decide_rows(ws, rows, positions[right], "accept", who, expect="pending", seen=True)
    relabeled = decide_rows(ws, rows, positions[~right], "relabel", who, label=truth[~right].tolist(),
                            expect="pending", seen=True)
    return {"accepted": accepted, "relabeled": relabeled}


def review_first(ws: Workspace, k: int, threshold: float, order: str = "likely mistakes first",
                 who: str = WHO) -> dict:
    """The oracle decides the first k pending pseudo-labels in one of the Review page's orders, as a
    person working down that page would. Returns how many it accepted and relabeled."""
    view = ReviewSession(ws).view()
    pending = view.select(statuses=["pending"], sort=order, thresholds=[threshold] * len(view.class_names))
    return oracle_review(ws, pending[:k], who=who)

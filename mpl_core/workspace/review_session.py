"""One workspace's review: the newest round's cached ReviewView, decisions on it, undo, paging.

    session = ReviewSession(ws)
    view = session.view()                            # rebuilt only when the round or decisions changed
    session.decide(positions, "accept", who="ana")    # committed, then the cached view is updated in place
    page = view.page(view.select(sort=SORTS[0]), size=48, page=2)

The view is cached per (round, decisions version), so moving a threshold or paging the grid never
touches SQLite. A decision made elsewhere (another process, the CLI) bumps the store's version and
the next view() call reads the state again.
"""
from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from mpl_core.errors import MPLStudioError
from mpl_core.workspace.calibration import (
    Aim,
    ThresholdIndex,
    aim_for,
    confidence_histogram,
    precision_coverage_table,
    reliability_table,
)
from mpl_core.workspace.review import (
    STATUSES,
    decide_rows,
    decision_state,
    select_by_threshold,
    threshold_index,
)
from mpl_core.workspace.store import HUMAN_LABEL_ACTIONS, PseudoLabelRows
from mpl_core.workspace.workspace import Workspace

MAX_ORDERS = 16  # cached row orders per view
MAX_ACKS = 512  # answered batches remembered (a few per reviewer in flight at most)

SORTS = ("least sure first", "closest to the threshold", "likely mistakes first", "a random sample",
         "most sure first", "smallest margin first", "pool order")


@dataclass
class Page:
    """One page of a list of row positions."""
    items: np.ndarray  # the row positions on this page
    page: int  # 1-based, clamped into 1..pages
    pages: int  # at least 1, so an empty list still has a page to show
    total: int  # positions on all pages


def paginate(positions, size: int, page: int) -> Page:
    """The given page (clamped to the pages there are) of positions, size per page."""
    if size < 1:
        raise MPLStudioError(f"a page holds at least one item, not {size}")
    positions = np.asarray(positions, dtype=np.int64)
    pages = max(1, -(-len(positions) // size))
    page = min(max(1, int(page)), pages)
    return Page(positions[(page - 1) * size: page * size], page, pages, len(positions))


@dataclass
class ReviewView:
    """One pseudo-label round with its threshold index and each row's review status."""
    rows: PseudoLabelRows
    index: ThresholdIndex
    status: np.ndarray  # (N,) object: pending / accept / reject / relabel / manual
    final_label: np.ndarray  # (N,) int64: the label a decision set (-1 if none)
    class_names: list[str]
    version: int  # the store's decisions version this view reflects (-1: read it again)
    truth: np.ndarray | None = None  # true labels where the dataset knows them
    # (order, thresholds) -> every row position in that order. An order depends on the rows only,
    # not on decisions, so a decision's rerun filters a cached order in O(N) instead of sorting.
    orders: dict = field(default_factory=dict, repr=False, compare=False)
    # rows per status, kept in step by set_status: counting 59k statuses anew took 6 to 9 ms of every
    # decision's rerun (and of each of eight reviewers' reruns, one after another under the GIL)
    tally: Counter = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        self.tally = Counter(self.status.tolist())

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        out.update(+self.tally)  # + drops the statuses no row has any more
        return out

    def set_status(self, positions: np.ndarray, action: str) -> None:
        """Change rows' status, keeping the tally (the caller holds the session's lock)."""
        positions = np.unique(positions)
        tally = self.tally.copy()  # swapped whole: a reader without the lock sees one tally or the other
        tally.subtract(Counter(self.status[positions].tolist()))
        tally[action] += len(positions)
        self.status[positions] = action
        self.tally = tally

    def aim(self, target: float, per_class: bool = False) -> Aim:
        """The thresholds for a precision to aim for (calibration.aim_for) on the 0.01 grid of the
        page's sliders."""
        return aim_for(self.index, target, per_class, grid=101)

    def select(self, *, classes: list[int] | None = None, statuses: list[str] | None = None,
               conf_range: tuple[float, float] | None = None, sort: str = SORTS[0],
               thresholds: float | Sequence[float] = 0.9) -> np.ndarray:
        """Row positions matching the filters, in the chosen order (see order_key; `thresholds`, one
        or one per class, is what "closest to the threshold" measures from)."""
        mask = np.ones(len(self.rows), dtype=bool)
        if classes is not None:
            mask &= np.isin(self.rows.label, classes)
        if statuses is not None:
            mask &= np.isin(self.status, statuses)
        if conf_range is not None:
            mask &= (self.rows.confidence >= conf_range[0]) & (self.rows.confidence <= conf_range[1])
        order = self.order(sort, thresholds)
        # a stable order of all rows, filtered, is the stable order of the filtered rows
        return np.nonzero(mask)[0] if order is None else order[mask[order]]

    def order(self, sort: str, thresholds: float | Sequence[float] = 0.9) -> np.ndarray | None:
        """All row positions in the chosen order (None: pool order), cached per order (and per
        thresholds for the one order that measures from them). Script threads share a view: a
        concurrent clear() costs a sort again, never a wrong answer."""
        cache_key = (sort, tuple(np.atleast_1d(np.asarray(thresholds, dtype=np.float64)).tolist())
                     if sort == "closest to the threshold" else None)
        order = self.orders.get(cache_key)
        if order is None and cache_key not in self.orders:
            key = self.order_key(sort, thresholds)
            order = None if key is None else np.argsort(key, kind="stable")
            if len(self.orders) >= MAX_ORDERS:  # each threshold move makes a new key for that order
                self.orders.clear()
            self.orders[cache_key] = order
        return order

    def order_key(self, sort: str, thresholds: float | Sequence[float] = 0.9) -> np.ndarray | None:
        """Per row, the value the order sorts by (ascending); None keeps pool order.

        closest to the threshold: |confidence - the row's class threshold|. These are the decisions
        that most change what a threshold admits, and the ones a person can settle faster than
        the model. likely mistakes first: the chance the pseudo-label is wrong, estimated from
        what the validation split says of the predicted class (its error rate when the model
        says that class, Laplace-smoothed) times the model's doubt (1 - margin), so confident
        labels in a class the model often gets wrong come before confident ones in a class it
        gets right (cleanlab ranks label issues by such per-class evidence rather than by raw
        confidence). a random sample: a shuffle drawn from the round's number, so every reviewer
        and every rerun sees the same one. On what stays pending after accepting everything above
        the threshold, such decisions stand for all of it, and a round that draws half its batches
        from people's labels learned more from them than from any other order at 100 and 500
        decisions (quick-demo) and than from likely mistakes first at 1,000 (cpu-10min):
        bench/review_value.py, docs/results.md."""
        r = self.rows
        if sort not in SORTS:
            raise MPLStudioError(f"order must be one of {', '.join(SORTS)}, not {sort!r}")
        if sort == "closest to the threshold":
            per_class = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (len(self.class_names),))
            return np.abs(r.confidence - per_class[r.label])
        if sort == "likely mistakes first":
            return -(class_error_rates(r.validation, len(self.class_names))[r.label] * (1.0 - r.margin))
        if sort == "a random sample":
            return np.random.default_rng(int(r.round)).random(len(r))
        return {"least sure first": r.confidence, "most sure first": -r.confidence,
                "smallest margin first": r.margin}.get(sort)

    def page(self, positions, size: int, page: int) -> Page:
        """One page of positions (from select): see paginate."""
        return paginate(positions, size, page)

    def tiles(self, positions: np.ndarray) -> list[dict]:
        r = self.rows
        return [{"position": int(p), "sample_id": r.sample_ids[p], "pool_index": int(r.idx[p]),
                 "label": int(r.label[p]), "label_name": self.class_names[int(r.label[p])],
                 "confidence": float(r.confidence[p]), "margin": float(r.margin[p]),
                 "status": str(self.status[p]), "final_label": int(self.final_label[p]),
                 "final_name": self.class_names[int(self.final_label[p])] if self.final_label[p] >= 0 else "",
                 "top": self.top_classes(int(p))}
                for p in positions]

    def top_classes(self, position: int, k: int = 3) -> list[tuple[int, float]]:
        """The model's k most likely classes for a row, with their probabilities."""
        probs = self.rows.probs[position].astype(np.float32)
        best = np.argsort(-probs, kind="stable")[:k]
        return [(int(c), round(float(probs[c]), 4)) for c in best]

    def queue(self, n: int) -> np.ndarray:
        """The n most uncertain pending samples (smallest top-1 margin): to label by hand."""
        pending = np.nonzero(self.status == "pending")[0]
        return pending[np.argsort(self.rows.margin[pending], kind="stable")[:n]]

    def histogram(self, bins: int = 20) -> np.ndarray:
        return confidence_histogram(self.rows.label, self.rows.confidence, len(self.class_names), bins)

    def confusion(self, statuses: list[str] | None = None) -> np.ndarray | None:
        """(K, K) counts: true class (rows) x pseudo-label (columns); None without true labels."""
        if self.truth is None:
            return None
        keep = np.ones(len(self.rows), dtype=bool) if statuses is None else np.isin(self.status, statuses)
        k = len(self.class_names)
        flat = np.bincount(self.truth[keep] * k + self.rows.label[keep], minlength=k * k)
        return flat.reshape(k, k)

    def reliability(self, bins: int = 10) -> list[dict]:
        """Validation accuracy per confidence bin, only the bins with validation images in them."""
        return [r for r in reliability_table(self.rows.validation, bins) if r["count"]]

    def precision_coverage(self, thresholds: Sequence[float] | None = None) -> list[dict]:
        """Precision and coverage per global threshold: see calibration.precision_coverage_table."""
        return precision_coverage_table(self.index, thresholds)


def class_error_rates(validation: dict, num_classes: int) -> np.ndarray:
    """(K,) per predicted class: the share of validation images predicted as that class that are
    something else, with one right and one wrong added (Laplace) so a class with no evidence is 0.5."""
    label = np.asarray(validation.get("label", []), dtype=np.int64)
    truth = np.asarray(validation.get("truth", []), dtype=np.int64)
    wrong = np.bincount(label[label != truth], minlength=num_classes)[:num_classes]
    seen = np.bincount(label, minlength=num_classes)[:num_classes]
    return (wrong + 1.0) / (seen + 2.0)


class ReviewSession:
    """The review state of one workspace, shared by every page and tab of a process (thread-safe)."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self._lock = threading.RLock()
        self._view: ReviewView | None = None
        self._acks: OrderedDict = OrderedDict()  # (who, batch id) -> its answer, for batches sent again
        self._apply_lock = threading.Lock()

    def latest_round(self) -> int | None:
        """The newest pseudo-label round in the store (another tab or process may have added it)."""
        return self.ws.store.latest_round()

    def view(self) -> ReviewView | None:
        """The newest round's review state, rebuilt only when the round or the decisions changed."""
        store = self.ws.store
        latest, version = store.latest_round(), store.decisions_version()
        if latest is None:
            return None
        with self._lock:
            view = self._view
            if view is not None and view.rows.round == latest and view.version == version:
                return view
            same_round = view is not None and view.rows.round == latest
            rows = view.rows if same_round else store.pseudo_labels(latest)
            index = view.index if same_round else threshold_index(self.ws, latest)
            ds = self.ws.dataset()
            status, final = decision_state(rows, store.current_decisions())
            truth = ds.train.labels.numpy()[rows.idx] if ds.fully_labeled else None
            orders = view.orders if same_round else {}
            self._view = ReviewView(rows, index, status, final, ds.class_names, version, truth, orders)
            return self._view

    def decide(self, positions, action: str, who: str, label: int | Sequence[int] | None = None,
               expect: str | Sequence[str] | None = None, seen: bool = False) -> int:
        """Record a decision for rows of the newest round in one transaction (committed before this
        returns); relabel/manual take one class or one per row. With `expect`, only rows still in
        that state (what the reviewer saw: one state for all rows or one per row). `seen`: a person
        decided them looking at each image (see Store.decide). Returns how many."""
        view = self._current()
        positions = np.asarray(positions, dtype=np.int64)
        n = decide_rows(self.ws, view.rows, positions, action, who, label, expect=expect, seen=seen)
        with self._lock:
            if n != len(positions):  # some were decided elsewhere first: read the state again next time
                view.version = -1
                return n
            # keep the cached view in step without re-reading the store
            view.set_status(positions, action)
            if action == "reject":
                view.final_label[positions] = -1
            else:
                view.final_label[positions] = (np.asarray(label, dtype=np.int64) if action in HUMAN_LABEL_ACTIONS
                                               else view.rows.label[positions])
            view.version = self.ws.store.decisions_version()
        return n

    def decide_by_threshold(self, action: str, thresholds, who: str, classes: list[int] | None = None) -> int:
        """Accept pending rows at or above their class threshold, or reject those below it."""
        view = self._current()
        bound = {"above": thresholds} if action == "accept" else {"below": thresholds}
        positions = select_by_threshold(view.rows, None, classes=classes, status=view.status, **bound)
        return self.decide(positions, action, who)

    def label_by_hand(self, positions, labels: int | Sequence[int], who: str) -> int:
        """Manual labels for rows (the labeling queue): one class for all or one per row, saved
        together in one transaction, so one undo takes them all back and a bad class saves none."""
        return self.decide(positions, "manual", who, labels, seen=True)

    def apply(self, batch: dict, who: str) -> dict:
        """The review grid's operations, in the order they were keyed: each decision is its own store
        transaction (one undo takes back one key press), each undo takes back this reviewer's last.

        batch = {"id": 7, "round": 3, "ops": [{"op": "decide", "positions": [..], "action": "accept",
        "label": None, "expect": ["pending", ..]}, {"op": "undo"}]}. A decision applies only to tiles
        still as the reviewer saw them (`expect`). Returns {"id", "results": one per op, "message"}:
        the grid redraws from the store, so a failed operation's tiles turn back by themselves. A
        batch id this reviewer had answered before gets the same answer again, nothing re-applied:
        a grid that lost an answer sends its batch again, perhaps by another way
        (review_grid/api.py), and its undos must not take back two decisions."""
        key = (who, batch["id"]) if isinstance(batch.get("id"), (str, int)) else None
        with self._apply_lock:  # one batch at a time: a batch sent twice at once is applied once
            if key is not None and key in self._acks:
                return self._acks[key]
            answer = self._apply_ops(batch, who)
            if key is not None:
                self._acks[key] = answer
                while len(self._acks) > MAX_ACKS:
                    self._acks.popitem(last=False)
            return answer

    def _apply_ops(self, batch: dict, who: str) -> dict:
        results, messages = [], []
        round_ = self.latest_round()
        ops = batch.get("ops") or []
        if not isinstance(ops, list):
            return {"id": batch.get("id"), "results": [], "message": "a batch needs a list of operations"}
        for op in ops:
            try:
                if batch.get("round") != round_:
                    raise MPLStudioError("a new round of pseudo-labels arrived and the grid was redrawn: "
                                         "decide those tiles again")
                results.append(self._apply_one(op, who))
                if results[-1].get("conflicts"):
                    messages.append(f"another reviewer decided {results[-1]['conflicts']} of those tile(s) first; "
                                    "the grid shows their decision")
            except MPLStudioError as exc:
                results.append({"error": str(exc)})
                messages.append(str(exc))
            except Exception as exc:  # e.g. the database busy for too long: the grid must get its answer
                results.append({"error": f"{exc.__class__.__name__}: {exc}"})
                messages.append(f"could not save a decision ({exc.__class__.__name__}); the tiles show what is saved")
        return {"id": batch.get("id"), "results": results, "message": "; ".join(dict.fromkeys(messages))}

    def _apply_one(self, op: dict, who: str) -> dict:
        if not isinstance(op, dict) or op.get("op") not in ("decide", "undo"):
            raise MPLStudioError(f"unknown review operation {op!r}")
        if op["op"] == "undo":
            return {"undone": self.undo(who)}
        view = self._current()
        raw, action, expect = op.get("positions"), op.get("action"), op.get("expect")
        if not isinstance(raw, list) or not all(isinstance(p, int) for p in raw):
            raise MPLStudioError("a decision needs the positions of its tiles")
        if not isinstance(action, str):
            raise MPLStudioError(f"a decision needs one action, not {action!r}")
        if expect is not None and not (isinstance(expect, str) or
                                       (isinstance(expect, list) and all(isinstance(e, str) for e in expect))):
            raise MPLStudioError("a decision's expected states must be text")
        positions = raw
        if not positions or min(positions) < 0 or max(positions) >= len(view.rows):
            raise MPLStudioError("a decision names tiles that are not in this round")
        n = self.decide(positions, action, who, op.get("label"), expect=expect, seen=True)
        return {"decided": n, "conflicts": len(positions) - n}

    def as_seen_by(self, positions, shown: Sequence[str], who: str) -> list[str]:
        """The state in which `who` last saw each row: as drawn (`shown`), or as their own later
        decision left it, since the grid commits keys without redrawing its page."""
        view = self._current()
        positions = [int(p) for p in positions]
        sample_ids = [view.rows.sample_ids[p] for p in positions]
        history = self.ws.store.history(sample_ids)
        out = []
        for p, sid, drawn in zip(positions, sample_ids, shown):
            live = [h for h in history[sid] if not h["undone"]]
            mine = bool(live) and live[-1]["who"] == who
            out.append(str(view.status[p]) if mine and str(view.status[p]) != drawn else drawn)
        return out

    def undo(self, who: str | None = None) -> int:
        """Undo the newest batch of decisions (by `who` if given); the next view() reads the store."""
        return self.ws.store.undo_last(who)

    def _current(self) -> ReviewView:
        view = self.view()
        if view is None:
            raise MPLStudioError("no pseudo-labels to review yet")
        return view

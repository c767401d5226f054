"""The workspace database: runs, metrics, pseudo-labels and review decisions in SQLite (WAL).

    store = Store("data/workspaces/demo/store.sqlite")
    store.decide([("train/00017", 17)], "accept", labels=[3], who="ana")
    store.undo_last(who="ana")

Every write is one `BEGIN IMMEDIATE` transaction committed with `synchronous=FULL` before the
call returns, so a decision the caller was told about survives a crash of the process (or the
machine). Each thread keeps its own connection while it lives: Streamlit runs every script run on
its own thread and a job on another, and SQLite connections must not cross threads. Keeping it
open matters: closing the last connection to a WAL database checkpoints it and deletes the WAL,
two more syncs, which every call paid when each opened its own. Writers of one process queue on
a lock in the process rather than in SQLite's busy handler, which sleeps up to 100 ms between
tries (8 threads deciding at once waited up to 2.9 s there).

Decisions are an append-only log (`decisions`) plus the current state per sample
(`current_decisions`), updated in the same transaction; undo marks the last batch undone and
recomputes the current state of the samples it touched.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mpl_core.errors import MPLStudioError

ACTIONS = ("accept", "reject", "relabel", "manual")  # manual = labeled by hand from the queue
HUMAN_LABEL_ACTIONS = ("relabel", "manual")
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0  # a writer waits this long for another writer before giving up

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,              -- "train" or "retrain"
    config TEXT NOT NULL,            -- the RunConfig as JSON
    status TEXT NOT NULL,            -- created, running, paused, done, stopped, failed, interrupted
    message TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    checkpoint TEXT,
    metrics TEXT NOT NULL DEFAULT '{}'  -- final metrics and label counts as JSON
);
CREATE TABLE IF NOT EXISTS metrics(
    run_id INTEGER NOT NULL, step INTEGER NOT NULL, phase TEXT NOT NULL, name TEXT NOT NULL, value REAL
);
CREATE INDEX IF NOT EXISTS metrics_by_run ON metrics(run_id, phase, step);
CREATE TABLE IF NOT EXISTS pl_rounds(
    round INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    model TEXT NOT NULL,             -- "teacher" or "student"
    created REAL NOT NULL,
    count INTEGER NOT NULL,
    num_classes INTEGER NOT NULL,
    validation TEXT NOT NULL         -- the model's val predictions (confidence, label, truth) as JSON
);
CREATE TABLE IF NOT EXISTS pseudo_labels(
    round INTEGER NOT NULL,
    sample_id TEXT NOT NULL,
    idx INTEGER NOT NULL,            -- index into the dataset's training pool
    label INTEGER NOT NULL,
    confidence REAL NOT NULL,
    margin REAL NOT NULL,            -- top-1 minus top-2 probability
    entropy REAL NOT NULL,           -- in nats
    probs BLOB NOT NULL,             -- float16 class probabilities
    PRIMARY KEY(round, sample_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS decisions(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch INTEGER NOT NULL,          -- decisions made by one call share a batch (undone together)
    sample_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    action TEXT NOT NULL,
    label INTEGER NOT NULL,          -- the label accepted, rejected, or given by a person
    who TEXT NOT NULL,
    at REAL NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS decisions_by_sample ON decisions(sample_id, id);
CREATE INDEX IF NOT EXISTS decisions_by_batch ON decisions(batch);
-- batches whose decisions a person made on images they looked at (keys on a tile, a page's button,
-- the simulated reviewer), not in bulk by a threshold: a round counts
-- their accepts among people's labels. A workspace from before this table counts none.
CREATE TABLE IF NOT EXISTS seen_batches(batch INTEGER PRIMARY KEY);
-- pool images a person labeled for validation (the validation queue): they leave the pool and the
-- estimate of precision counts them from the next round of pseudo-labels. A log like decisions, with at
-- most one row of a sample not undone: the label in force. label -1: none of the classes (stays in the pool)
CREATE TABLE IF NOT EXISTS validation_labels(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch INTEGER NOT NULL,          -- labels given by one call share a batch (undone together)
    sample_id TEXT NOT NULL,
    idx INTEGER NOT NULL,            -- index into the dataset's training pool
    label INTEGER NOT NULL,
    who TEXT NOT NULL,
    at REAL NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS validation_by_sample ON validation_labels(sample_id, id);
CREATE TABLE IF NOT EXISTS current_decisions(
    sample_id TEXT PRIMARY KEY,
    idx INTEGER NOT NULL,
    action TEXT NOT NULL,
    label INTEGER NOT NULL,
    decision_id INTEGER NOT NULL,
    who TEXT NOT NULL,
    at REAL NOT NULL
) WITHOUT ROWID;
"""


@dataclass
class PseudoLabelRows:
    """One round of pseudo-labels as arrays, sorted by pool index."""
    round: int
    run_id: int
    model: str
    sample_ids: list[str]
    idx: np.ndarray  # (N,) int64 pool indices
    label: np.ndarray  # (N,) int64 predicted class
    confidence: np.ndarray  # (N,) float32 top-1 probability
    margin: np.ndarray  # (N,) float32
    entropy: np.ndarray  # (N,) float32
    probs: np.ndarray  # (N, K) float16
    validation: dict  # {"confidence": [...], "label": [...], "truth": [...]}

    def __len__(self) -> int:
        return len(self.idx)


_WRITE_LOCKS: dict[str, threading.Lock] = {}  # database path -> the lock its writers in this process share
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock(path: Path) -> threading.Lock:
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(str(path.resolve()), threading.Lock())


class Store:
    """SQLite store of one workspace. Safe to use from any thread; one connection per thread."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()  # this thread's connection
        self._write_lock = _write_lock(self.path)
        self.validation = ValidationLabels(self)  # pool images labeled for validation
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)
            con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            con.execute("INSERT OR IGNORE INTO meta VALUES ('decisions_version', '0')")
            con.execute("INSERT OR IGNORE INTO meta VALUES ('validation_version', '0')")
            version = int(con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
        if version != SCHEMA_VERSION:
            raise MPLStudioError(f"{self.path} was written by another version of MPL Studio "
                                 f"(schema {version}, this one reads {SCHEMA_VERSION}); use a new workspace")

    # --- connections ---------------------------------------------------------------------------

    @contextmanager
    def _connect(self):
        """This thread's connection, opened on first use; one that saw an error is closed, not reused."""
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = self._open()
        try:
            yield con
        except sqlite3.Error:
            self.close()
            raise

    def _open(self) -> sqlite3.Connection:
        try:
            con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise MPLStudioError(f"cannot open the workspace database {self.path}: {exc}") from exc
        try:
            con.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the caller hears of it
            con.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            con.close()
            raise MPLStudioError(f"cannot open the workspace database {self.path}: {exc}") from exc
        return con

    def close(self) -> None:
        """Close this thread's connection (the next call opens a new one)."""
        con = getattr(self._local, "con", None)
        self._local.con = None
        if con is not None:
            con.close()

    @contextmanager
    def _write(self):
        """One write transaction; BEGIN IMMEDIATE takes the write lock up front (no upgrade deadlock).
        Not re-entrant: a write inside a write would wait for itself (the process's lock)."""
        if not self._write_lock.acquire(timeout=BUSY_TIMEOUT_S):
            raise MPLStudioError("the workspace database is busy (another write in this app takes too long); "
                                 "try again")
        try:
            with self._connect() as con:
                try:
                    con.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    raise MPLStudioError(f"the workspace database is busy ({exc}); try again") from exc
                try:
                    yield con
                    con.execute("COMMIT")
                except BaseException as exc:
                    self._roll_back(con)
                    if isinstance(exc, sqlite3.OperationalError):  # disk full, I/O error, read-only file
                        raise MPLStudioError(f"could not save to the workspace database ({exc}); nothing of "
                                             "this change was saved and earlier changes are intact. Free disk "
                                             "space and try again") from exc
                    raise
        finally:
            self._write_lock.release()

    def _roll_back(self, con) -> None:
        try:
            con.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite already rolled back (it does on a full disk or an I/O error)
        if con.in_transaction:  # never keep a connection that holds a transaction (and SQLite's lock)
            self.close()

    def _read(self, sql: str, args=()) -> list[tuple]:
        with self._connect() as con:
            return con.execute(sql, args).fetchall()

    def integrity_check(self) -> str:
        return self._read("PRAGMA integrity_check")[0][0]

    # --- runs and metrics ------------------------------------------------------------------------

    def create_run(self, kind: str, config: dict) -> int:
        now = time.time()
        with self._write() as con:
            cur = con.execute("INSERT INTO runs(kind, config, status, created, updated) VALUES (?, ?, 'created', ?, ?)",
                              (kind, json.dumps(config), now, now))
            return int(cur.lastrowid)

    def update_run(self, run_id: int, *, status: str | None = None, message: str | None = None,
                   checkpoint: str | None = None, metrics: dict | None = None, config: dict | None = None) -> None:
        sets, args = ["updated = ?"], [time.time()]
        for column, value in (("status", status), ("message", message), ("checkpoint", checkpoint),
                              ("config", json.dumps(config) if config is not None else None)):
            if value is not None:
                sets.append(f"{column} = ?")
                args.append(value)
        if metrics is not None:
            sets.append("metrics = ?")
            args.append(json.dumps(metrics))
        with self._write() as con:
            con.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", (*args, run_id))

    _RUN_COLUMNS = ("id", "kind", "config", "status", "message", "created", "updated", "checkpoint", "metrics")

    def runs(self, run_id: int | None = None) -> list[dict]:
        """Every run (or the one with run_id), oldest first, config and metrics parsed."""
        sql = f"SELECT {', '.join(self._RUN_COLUMNS)} FROM runs"
        rows = self._read(sql + " ORDER BY id" if run_id is None else sql + " WHERE id = ?",
                          () if run_id is None else (run_id,))
        out = []
        for row in rows:
            d = dict(zip(self._RUN_COLUMNS, row))
            d["config"], d["metrics"] = json.loads(d["config"]), json.loads(d["metrics"])
            out.append(d)
        return out

    def run(self, run_id: int) -> dict:
        found = self.runs(run_id)
        if not found:
            raise MPLStudioError(f"no run {run_id} in this workspace")
        return found[0]

    def mark_interrupted(self) -> int:
        """Runs left 'running' or 'paused' by a process that died: mark them resumable."""
        with self._write() as con:
            cur = con.execute("UPDATE runs SET status='interrupted', message='the process stopped during this "
                              "run; resume it to continue from its last checkpoint', updated=? "
                              "WHERE status IN ('running', 'paused', 'created')", (time.time(),))
            return cur.rowcount

    def add_metrics(self, run_id: int, step: int, phase: str, values: dict[str, float]) -> None:
        with self._write() as con:
            con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?)",
                            [(run_id, step, phase, k, float(v)) for k, v in values.items()])

    def last_logged(self, run_id: int) -> tuple[str, int] | None:
        """(phase, step) of the run's newest metrics row, or None: progress without reading them all."""
        rows = self._read("SELECT phase, step FROM metrics WHERE run_id = ? ORDER BY rowid DESC LIMIT 1", (run_id,))
        return (rows[0][0], int(rows[0][1])) if rows else None

    def metric_rows(self, run_id: int) -> list[dict]:
        """[{phase, step, name: value, ...}] in step order, one dict per logged step."""
        rows = self._read("SELECT phase, step, name, value FROM metrics WHERE run_id = ? ORDER BY rowid", (run_id,))
        merged: dict[tuple, dict] = {}
        for phase, step, name, value in rows:
            merged.setdefault((phase, step), {"phase": phase, "step": step})[name] = value
        return list(merged.values())

    # --- pseudo-labels ---------------------------------------------------------------------------

    def add_pseudo_labels(self, run_id: int, model: str, sample_ids: list[str], idx: np.ndarray,
                          probs: np.ndarray, validation: dict) -> int:
        """Store one round of pseudo-labels from class probabilities (N, K); returns the round."""
        probs = np.asarray(probs, dtype=np.float32)
        label, conf, margin, entropy = summarize_probs(probs)
        half = probs.astype(np.float16)
        with self._write() as con:
            round_ = (con.execute("SELECT COALESCE(MAX(round), 0) FROM pl_rounds").fetchone()[0] or 0) + 1
            con.execute("INSERT INTO pl_rounds VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (round_, run_id, model, time.time(), len(idx), probs.shape[1], json.dumps(validation)))
            con.executemany("INSERT INTO pseudo_labels VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            zip([round_] * len(idx), sample_ids, map(int, idx), map(int, label),
                                map(float, conf), map(float, margin), map(float, entropy),
                                (row.tobytes() for row in half)))
        return round_

    def rounds(self) -> list[dict]:
        rows = self._read("SELECT round, run_id, model, created, count FROM pl_rounds ORDER BY round")
        return [dict(zip(("round", "run_id", "model", "created", "count"), r)) for r in rows]

    def latest_round(self) -> int | None:
        rows = self.rounds()
        return rows[-1]["round"] if rows else None

    def pseudo_labels(self, round_: int | None = None) -> PseudoLabelRows | None:
        round_ = round_ if round_ is not None else self.latest_round()
        if round_ is None:
            return None
        with self._connect() as con:
            head = con.execute("SELECT run_id, model, num_classes, validation FROM pl_rounds WHERE round = ?",
                               (round_,)).fetchone()
            if head is None:
                raise MPLStudioError(f"no pseudo-label round {round_} in this workspace")
            rows = con.execute("SELECT sample_id, idx, label, confidence, margin, entropy, probs FROM pseudo_labels "
                               "WHERE round = ? ORDER BY idx", (round_,)).fetchall()
        run_id, model, k, validation = head
        cols = list(zip(*rows)) if rows else [[] for _ in range(7)]
        probs = np.frombuffer(b"".join(cols[6]), dtype=np.float16).reshape(-1, k)
        return PseudoLabelRows(round_, run_id, model, list(cols[0]), np.asarray(cols[1], dtype=np.int64),
                               np.asarray(cols[2], dtype=np.int64), np.asarray(cols[3], dtype=np.float32),
                               np.asarray(cols[4], dtype=np.float32), np.asarray(cols[5], dtype=np.float32),
                               probs, json.loads(validation))

    def known_samples(self) -> list[tuple[str, int]]:
        """(sample id, pool index) of every sample a pseudo-label, a decision or a validation label names."""
        with self._connect() as con:
            return con.execute("SELECT sample_id, idx FROM pseudo_labels UNION SELECT sample_id, idx FROM decisions "
                               "UNION SELECT sample_id, idx FROM validation_labels").fetchall()

    # --- review decisions ------------------------------------------------------------------------

    def decide(self, samples: list[tuple[str, int]], action: str | list[str], labels: list[int] | int, who: str,
               expect: str | list[str] | None = None, seen: bool = False) -> int:
        """Record one decision per (sample_id, pool index), committed before this returns; returns
        how many were recorded (all of them, one batch: one undo takes them back). `action` is one
        for all or one per sample (an import mixes accepts and relabels).

        `expect` makes it conditional, checked in the same transaction: only samples whose
        current state is still `expect` ("pending" = no decision yet, or an action; one for all
        or one per sample, as each tile showed it) are decided.
        A click made on a tile shown as pending then never overwrites what another reviewer
        decided in the meantime, and a click the browser replays is recorded once.

        `seen`: a person made these decisions looking at each image (not in bulk by a threshold),
        so a round counts their accepts among people's labels (see current_decisions' "seen").
        """
        actions = [action] * len(samples) if isinstance(action, str) else list(action)
        if bad := sorted({a for a in actions if a not in ACTIONS}):
            raise MPLStudioError(f"action must be one of {', '.join(ACTIONS)}, not {bad[0]!r}")
        if not who or len(who) > 64:
            raise MPLStudioError("give a reviewer name of 1 to 64 characters")
        labels = [labels] * len(samples) if isinstance(labels, int) else list(labels)
        if len(labels) != len(samples) or len(actions) != len(samples):
            raise MPLStudioError("one label and one action per sample are needed")
        expects = None if expect is None else [expect] * len(samples) if isinstance(expect, str) else list(expect)
        if expects is not None and (len(expects) != len(samples)
                                    or any(e not in ("pending", *ACTIONS) for e in expects)):
            raise MPLStudioError(f"expect must be pending or one of {', '.join(ACTIONS)} for each sample")
        if not samples:
            return 0
        now = time.time()
        with self._write() as con:
            triples = list(zip(samples, actions, labels))
            if expects is not None:
                triples = [t for t, e in zip(triples, expects) if _current_action(con, t[0][0]) == e]
                if not triples:
                    return 0
            batch = (con.execute("SELECT COALESCE(MAX(batch), 0) FROM decisions").fetchone()[0] or 0) + 1
            first = (con.execute("SELECT COALESCE(MAX(id), 0) FROM decisions").fetchone()[0] or 0) + 1
            rows = [(first + i, batch, sid, int(ix), act, int(lab), who, now)
                    for i, ((sid, ix), act, lab) in enumerate(triples)]
            con.executemany("INSERT INTO decisions(id, batch, sample_id, idx, action, label, who, at) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            con.executemany("INSERT OR REPLACE INTO current_decisions VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [(sid, ix, act, lab, did, who, now) for did, _, sid, ix, act, lab, _, _ in rows])
            if seen:
                con.execute("INSERT OR IGNORE INTO seen_batches(batch) VALUES (?)", (batch,))
            _bump_version(con)
        return len(rows)

    def history(self, sample_ids: list[str]) -> dict[str, list[dict]]:
        """Every decision on these samples, oldest first: action, label, who, at, undone."""
        out: dict[str, list[dict]] = {s: [] for s in sample_ids}
        for start in range(0, len(sample_ids), 500):  # SQLite's limit on parameters
            chunk = sample_ids[start:start + 500]
            rows = self._read(f"SELECT sample_id, action, label, who, at, undone FROM decisions WHERE sample_id IN "
                              f"({','.join('?' * len(chunk))}) ORDER BY id", tuple(chunk))
            for sid, action, label, who, at, undone in rows:
                out[sid].append({"action": action, "label": int(label), "who": who, "at": at, "undone": bool(undone)})
        return out

    def undo_last(self, who: str | None = None) -> int:
        """Undo the newest batch of decisions not yet undone (by `who` if given); returns rows undone."""
        with self._write() as con:
            q = "SELECT MAX(batch) FROM decisions WHERE undone = 0" + (" AND who = ?" if who else "")
            batch = con.execute(q, (who,) if who else ()).fetchone()[0]
            if batch is None:
                return 0
            samples = [r[0] for r in con.execute("SELECT sample_id FROM decisions WHERE batch = ?", (batch,))]
            con.execute("UPDATE decisions SET undone = 1 WHERE batch = ?", (batch,))
            for sid in samples:
                prev = con.execute("SELECT id, idx, action, label, who, at FROM decisions WHERE sample_id = ? "
                                   "AND undone = 0 ORDER BY id DESC LIMIT 1", (sid,)).fetchone()
                if prev is None:
                    con.execute("DELETE FROM current_decisions WHERE sample_id = ?", (sid,))
                else:
                    did, ix, action, label, by, at = prev
                    con.execute("INSERT OR REPLACE INTO current_decisions VALUES (?, ?, ?, ?, ?, ?, ?)",
                                (sid, ix, action, label, did, by, at))
            _bump_version(con)
            return len(samples)

    def current_decisions(self) -> dict[str, np.ndarray]:
        """The decision in force per sample: arrays idx, action (str), label, who, at, and seen
        (made by a person looking at the image, see decide), sorted by idx."""
        rows = self._read("SELECT c.idx, c.action, c.label, c.who, c.at, s.batch IS NOT NULL FROM current_decisions c "
                          "JOIN decisions d ON d.id = c.decision_id LEFT JOIN seen_batches s ON s.batch = d.batch "
                          "ORDER BY c.idx")
        cols = list(zip(*rows)) if rows else [[], [], [], [], [], []]
        return {"idx": np.asarray(cols[0], dtype=np.int64), "action": np.asarray(cols[1], dtype=object),
                "label": np.asarray(cols[2], dtype=np.int64), "who": np.asarray(cols[3], dtype=object),
                "at": np.asarray(cols[4], dtype=np.float64), "seen": np.asarray(cols[5], dtype=bool)}

    def decision_counts(self) -> dict[str, int]:
        counts = dict(self._read("SELECT action, COUNT(*) FROM current_decisions GROUP BY action"))
        return {a: int(counts.get(a, 0)) for a in ACTIONS}

    def decision_log(self, limit: int = 100) -> list[dict]:
        rows = self._read("SELECT id, batch, sample_id, action, label, who, at, undone FROM decisions "
                          "ORDER BY id DESC LIMIT ?", (limit,))
        keys = ("id", "batch", "sample_id", "action", "label", "who", "at", "undone")
        return [dict(zip(keys, r)) for r in rows]

    def decisions_version(self) -> int:
        """Goes up with every decision or undo: readers cache the decision state by it."""
        return int(self._read("SELECT value FROM meta WHERE key = 'decisions_version'")[0][0])

    def now(self) -> float:
        """The clock decisions and runs are stamped with: a reader records its time by it."""
        return time.time()

    def seen_saves(self) -> list[tuple[str, float, int]]:
        """(who, time, decisions) of every save of decisions made looking at the images (see
        decide's `seen`), undone ones too (their time was spent), oldest first: see pace.py."""
        # CROSS JOIN keeps SQLite to this order: the few seen batches, each looked up in the index,
        # rather than a scan of every decision (2.5 ms against 8 ms with 62,000 decisions, 2,000 seen).
        return [(who, float(at), int(n)) for who, at, n in self._read(
            "SELECT d.who, MIN(d.at), COUNT(*) FROM seen_batches s CROSS JOIN decisions d ON d.batch = s.batch "
            "GROUP BY s.batch ORDER BY s.batch")]

    def decision_total(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM decisions")[0][0])


def _current_action(con, sample_id: str) -> str:
    row = con.execute("SELECT action FROM current_decisions WHERE sample_id = ?", (sample_id,)).fetchone()
    return row[0] if row else "pending"


def _bump_version(con, key: str = "decisions_version") -> None:
    con.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = ?", (key,))


class ValidationLabels:
    """The store's validation labels (`store.validation`): pool images a person labeled for validation
    in the validation queue, through the store's connections and its write lock."""

    def __init__(self, store: Store):
        self._store = store

    def add(self, samples: list[tuple[str, int]], labels: list[int], who: str) -> int:
        """Record a person's class for pool images drawn for validation (-1: none of the classes), one
        batch committed before this returns; samples that already have one in force are left as they
        are (a key the browser sends twice counts once). Returns how many were recorded."""
        if not who or len(who) > 64:
            raise MPLStudioError("give a reviewer name of 1 to 64 characters")
        if len(labels) != len(samples):
            raise MPLStudioError("one label per sample is needed")
        now = time.time()
        with self._store._write() as con:
            live = {r[0] for r in con.execute("SELECT sample_id FROM validation_labels WHERE undone = 0")}
            rows = [(sid, int(ix), int(lab)) for (sid, ix), lab in zip(samples, labels) if sid not in live]
            if not rows:
                return 0
            batch = (con.execute("SELECT COALESCE(MAX(batch), 0) FROM validation_labels").fetchone()[0] or 0) + 1
            con.executemany("INSERT INTO validation_labels(batch, sample_id, idx, label, who, at) "
                            "VALUES (?, ?, ?, ?, ?, ?)", [(batch, sid, ix, lab, who, now) for sid, ix, lab in rows])
            _bump_version(con, "validation_version")
        return len(rows)

    def undo(self, who: str | None = None) -> int:
        """Undo the newest batch of validation labels not yet undone (by `who` if given); returns how many."""
        with self._store._write() as con:
            q = "SELECT MAX(batch) FROM validation_labels WHERE undone = 0" + (" AND who = ?" if who else "")
            batch = con.execute(q, (who,) if who else ()).fetchone()[0]
            if batch is None:
                return 0
            n = con.execute("UPDATE validation_labels SET undone = 1 WHERE batch = ?", (batch,)).rowcount
            _bump_version(con, "validation_version")
            return n

    def in_force(self) -> dict[str, np.ndarray]:
        """The validation labels in force, in the order they were given: arrays idx, label (-1: none of
        the classes), sample_id (object) and at."""
        rows = self._store._read("SELECT idx, label, sample_id, at FROM validation_labels WHERE undone = 0 "
                                 "ORDER BY id")
        cols = list(zip(*rows)) if rows else [[], [], [], []]
        return {"idx": np.asarray(cols[0], dtype=np.int64), "label": np.asarray(cols[1], dtype=np.int64),
                "sample_id": np.asarray(cols[2], dtype=object), "at": np.asarray(cols[3], dtype=np.float64)}

    def version(self) -> int:
        """Goes up with every validation label given or undone: the workspace's split is cached by it."""
        return int(self._store._read("SELECT value FROM meta WHERE key = 'validation_version'")[0][0])


def summarize_probs(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row: predicted class, confidence (top-1), margin (top-1 - top-2), entropy (nats)."""
    probs = np.asarray(probs, dtype=np.float32)
    if probs.shape[1] == 1:
        top2 = np.concatenate([probs, np.zeros_like(probs)], axis=1)
    else:
        top2 = -np.sort(-np.partition(probs, probs.shape[1] - 2, axis=1)[:, -2:], axis=1)
    label = probs.argmax(axis=1)
    entropy = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=1)
    return label.astype(np.int64), top2[:, 0], top2[:, 0] - top2[:, 1], entropy.astype(np.float32)

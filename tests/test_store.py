import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import ROOT
from mpl_core.errors import MPLStudioError
from mpl_core.workspace.store import Store, summarize_probs


def test_decisions_undo_restores_the_previous_state(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.decide([("a", 0), ("b", 1)], "accept", [3, 4], who="ana")
    store.decide([("a", 0)], "relabel", 5, who="bo")
    cur = store.current_decisions()
    assert cur["action"].tolist() == ["relabel", "accept"] and cur["label"].tolist() == [5, 4]
    assert store.undo_last() == 1  # bo's relabel
    cur = store.current_decisions()
    assert cur["action"].tolist() == ["accept", "accept"] and cur["label"].tolist() == [3, 4]
    assert store.undo_last(who="ana") == 2
    assert len(store.current_decisions()["idx"]) == 0
    assert store.undo_last() == 0
    assert store.decision_total() == 3  # the history keeps every row, undone ones marked


def test_decide_refuses_bad_input(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    with pytest.raises(MPLStudioError, match="action"):
        store.decide([("a", 0)], "maybe", 1, who="ana")
    with pytest.raises(MPLStudioError, match="reviewer"):
        store.decide([("a", 0)], "accept", 1, who="")
    with pytest.raises(MPLStudioError, match="one label and one action per sample"):
        store.decide([("a", 0), ("b", 1)], "accept", [1], who="ana")
    with pytest.raises(MPLStudioError, match="one label and one action per sample"):
        store.decide([("a", 0), ("b", 1)], ["accept"], 1, who="ana")
    with pytest.raises(MPLStudioError, match="action must be one of"):
        store.decide([("a", 0), ("b", 1)], ["accept", "maybe"], 1, who="ana")


def test_one_batch_may_mix_actions_and_one_undo_takes_it_back(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    assert store.decide([("a", 0), ("b", 1)], ["accept", "relabel"], [2, 3], who="ana") == 2
    dec = store.current_decisions()
    assert dec["action"].tolist() == ["accept", "relabel"] and dec["label"].tolist() == [2, 3]
    assert store.undo_last() == 2 and len(store.current_decisions()["idx"]) == 0


def test_eight_threads_500_decisions_each_give_4000_rows(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    errors = []

    def reviewer(t):
        try:
            for i in range(500):
                store.decide([(f"t{t}-{i}", t * 1000 + i)], "accept" if i % 3 else "reject", i % 10, who=f"r{t}")
        except Exception as exc:  # pragma: no cover - shown by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=reviewer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert store.decision_total() == 4000
    assert len(store.current_decisions()["idx"]) == 4000
    assert store.integrity_check() == "ok"


_WRITER = """
import sys
sys.path.insert(0, {root!r})
from mpl_core.workspace.store import Store
store = Store(sys.argv[1])
for i in range(100000):
    store.decide([(f"s{{i}}", i)], "accept", i % 10, who="child")
    print(i, flush=True)  # told the caller: committed
"""


def test_sigkill_while_writing_loses_no_acknowledged_decision(tmp_path):
    db = tmp_path / "s.sqlite"
    Store(db)
    child = subprocess.Popen([sys.executable, "-c", _WRITER.format(root=str(ROOT)), str(db)],
                             stdout=subprocess.PIPE, text=True)
    acknowledged = []
    for line in child.stdout:
        acknowledged.append(int(line))
        if len(acknowledged) >= 300:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    acknowledged += [int(line) for line in child.stdout.read().split()]  # lines already in the pipe
    store = Store(db)
    assert store.integrity_check() == "ok"
    stored = set(store.current_decisions()["idx"].tolist())
    assert set(acknowledged) <= stored
    assert len(stored) - len(acknowledged) <= 1  # at most the one committed as the kill came


def test_pseudo_labels_round_trip(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.34, 0.33, 0.33]], dtype=np.float32)
    r = store.add_pseudo_labels(7, "teacher", ["x", "y", "z"], np.array([5, 2, 9]), probs,
                                {"confidence": [0.9], "label": [1], "truth": [1]})
    rows = store.pseudo_labels(r)
    assert r == 1 and rows.run_id == 7 and rows.sample_ids == ["y", "x", "z"]  # sorted by pool index
    assert rows.label.tolist() == [2, 0, 0]
    np.testing.assert_allclose(rows.confidence, [0.6, 0.7, 0.34], atol=1e-6)
    np.testing.assert_allclose(rows.margin, [0.3, 0.5, 0.01], atol=1e-6)
    np.testing.assert_allclose(rows.probs.astype(np.float32), probs[[1, 0, 2]], atol=1e-3)
    assert store.add_pseudo_labels(7, "student", ["x"], np.array([5]), probs[:1], {}) == 2
    assert store.latest_round() == 2 and len(store.pseudo_labels()) == 1


def test_summarize_probs_entropy_and_margin():
    label, conf, margin, entropy = summarize_probs(np.array([[0.5, 0.5], [1.0, 0.0]]))
    assert label.tolist() == [0, 0] and conf.tolist() == [0.5, 1.0] and margin.tolist() == [0.0, 1.0]
    np.testing.assert_allclose(entropy, [np.log(2), 0.0], atol=1e-6)


def test_runs_metrics_and_interrupted_runs(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    run = store.create_run("train", {"algorithm": {"name": "mpl"}})
    store.update_run(run, status="running")
    store.add_metrics(run, 10, "train", {"t_loss": 1.5, "val_acc": 0.4})
    store.add_metrics(run, 20, "train", {"t_loss": 1.0})
    assert store.metric_rows(run) == [{"phase": "train", "step": 10, "t_loss": 1.5, "val_acc": 0.4},
                                      {"phase": "train", "step": 20, "t_loss": 1.0}]
    assert store.mark_interrupted() == 1 and store.run(run)["status"] == "interrupted"


def test_a_conditional_decision_applies_once_and_never_overwrites_another_reviewer(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    assert store.decide([("a", 0), ("b", 1)], "accept", 3, who="ana", expect="pending") == 2
    assert store.decide([("a", 0)], "accept", 3, who="ana", expect="pending") == 0  # a replayed click
    assert store.decide([("b", 1)], "reject", 3, who="bo", expect="pending") == 0  # ana was first
    assert store.decide([("b", 1), ("c", 2)], "reject", 3, who="bo", expect="pending") == 1  # only c
    assert store.decide([("b", 1)], "reject", 3, who="bo", expect="accept") == 1  # bo saw ana's accept
    assert store.decision_total() == 4
    current = store.current_decisions()
    assert dict(zip(current["idx"].tolist(), current["action"])) == {0: "accept", 1: "reject", 2: "reject"}
    with pytest.raises(MPLStudioError, match="expect must be"):
        store.decide([("a", 0)], "accept", 3, who="ana", expect="maybe")


def test_each_thread_keeps_its_connection_and_one_that_failed_is_replaced(tmp_path):
    import sqlite3
    store = Store(tmp_path / "s.sqlite")
    with store._connect() as first, store._connect() as again:
        assert first is again  # no open and close (with its WAL checkpoint) per call
    theirs = []
    t = threading.Thread(target=lambda: theirs.append(store._connect().__enter__()))
    t.start()
    t.join()
    assert theirs[0] is not first  # SQLite connections do not cross threads
    store.decide([("train/1", 1)], "accept", labels=[0], who="ana")
    assert (tmp_path / "s.sqlite-wal").exists()  # the open connection keeps the WAL between calls
    with pytest.raises(sqlite3.OperationalError):
        with store._connect() as con:
            con.execute("SELECT * FROM no_such_table")
    with store._connect() as fresh:
        assert fresh is not first
    assert store.current_decisions()["idx"].tolist() == [1]


def test_a_write_stuck_behind_another_in_the_process_gives_up_with_a_message(tmp_path, monkeypatch):
    from mpl_core.workspace import store as store_mod
    store = Store(tmp_path / "s.sqlite")
    monkeypatch.setattr(store_mod, "BUSY_TIMEOUT_S", 0.2)
    held, release = threading.Event(), threading.Event()

    def hold():
        with store._write():
            held.set()
            release.wait(10)
    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    try:
        with pytest.raises(MPLStudioError, match="busy"):
            store.decide([("train/1", 1)], "accept", labels=[0], who="ana")
    finally:
        release.set()
        t.join()
    assert store.decide([("train/1", 1)], "accept", labels=[0], who="ana") == 1  # free again

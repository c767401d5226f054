import numpy as np
import pytest
import torch

from conftest import tiny_run_config
from mpl_core.config import DataConfig
from mpl_core.errors import MPLStudioError
from mpl_core.service.studio import Studio
from mpl_core.service.work import start_pseudo_labeling, start_retrain, start_training
from mpl_core.workspace.review import decide_rows, reviewed_training_set, select_by_threshold, status_of
from mpl_core.workspace.workspace import create_workspace, open_workspace


@pytest.fixture
def labeled_ws(tiny_workspace):
    """The tiny workspace with a trained MPL run and one round of teacher pseudo-labels."""
    assert start_training(tiny_workspace, tiny_run_config("mpl")).join(60).state == "done"
    st = start_pseudo_labeling(tiny_workspace).join(60)
    assert st.state == "done" and st.result["model"] == "teacher"
    return tiny_workspace


def test_bulk_decisions_skip_samples_a_person_decided(labeled_ws):
    ws = labeled_ws
    rows = ws.store.pseudo_labels()
    assert len(rows) == 40
    decide_rows(ws, rows, [0], "relabel", "ana", label=1 - int(rows.label[0]))
    pos = select_by_threshold(rows, ws.store.current_decisions(), above=0.0)
    assert 0 not in pos.tolist() and len(pos) == 39  # the relabel is left alone
    decide_rows(ws, rows, pos, "accept", "bulk")
    status = status_of(rows, ws.store.current_decisions())
    assert status[0] == "relabel" and (status[1:] == "accept").all()
    assert ws.store.undo_last() == 39
    assert (status_of(rows, ws.store.current_decisions())[1:] == "pending").all()
    with pytest.raises(MPLStudioError, match="needs a class"):
        decide_rows(ws, rows, [1], "relabel", "ana", label=7)


def test_relabel_takes_one_class_or_one_per_row_in_one_undo_step(labeled_ws):
    ws = labeled_ws
    rows = ws.store.pseudo_labels()
    assert decide_rows(ws, rows, [0, 1, 2], "relabel", "ana", label=[1, 0, 1]) == 3
    decisions = ws.store.current_decisions()
    assert dict(zip(decisions["idx"].tolist(), decisions["label"].tolist())) == {
        int(rows.idx[0]): 1, int(rows.idx[1]): 0, int(rows.idx[2]): 1}
    assert ws.store.undo_last() == 3  # one batch
    for bad in ([1, 0], [1, 2, 0], [1, None, 0]):  # too few, a class out of range, no class: nothing saved
        with pytest.raises(MPLStudioError):
            decide_rows(ws, rows, [0, 1, 2], "relabel", "ana", label=bad)
    assert ws.store.decision_total() == 3 and (status_of(rows, ws.store.current_decisions()) == "pending").all()


def test_reviewed_training_set_uses_reviewed_labels_and_hides_the_truth(tmp_path, fmnist):
    ws = create_workspace("r", DataConfig(labels_per_class=2, val_per_class=2, max_unlabeled=50), tmp_path)
    split = ws.split()
    pool = split.unlabeled.tolist()
    true = ws.dataset().train.labels
    wrong = (int(true[pool[0]]) + 1) % 10
    ws.store.decide([(f"id{pool[0]}", pool[0])], "accept", wrong, "ana")  # a wrong pseudo-label, accepted
    ws.store.decide([(f"id{pool[1]}", pool[1])], "reject", int(true[pool[1]]), "ana")
    ws.store.decide([(f"id{pool[2]}", pool[2])], "manual", 4, "bo")  # labeled by hand from the queue
    reviewed = reviewed_training_set(ws)
    labels = reviewed.dataset.train.labels
    assert labels[pool[0]] == wrong  # what the reviewer accepted, not the benchmark's answer
    assert labels[pool[1]] == -1 and labels[pool[2]] == 4
    assert (labels[torch.tensor(pool[3:])] == -1).all()  # undecided pool labels stay hidden
    assert set(reviewed.split.labeled.tolist()) == set(split.labeled.tolist()) | {pool[0], pool[2]}
    assert pool[1] in reviewed.split.unlabeled.tolist() and pool[0] not in reviewed.split.unlabeled.tolist()
    assert reviewed.counts == {"given": 20, "accepted": 1, "confirmed": 0, "human": 1, "rejected": 1}
    # the labels people gave, which a round may draw more often: not the pseudo-label accepted in bulk
    assert set(reviewed.split.trusted.tolist()) == set(split.labeled.tolist()) | {pool[2]}


def test_an_accept_a_person_made_on_the_image_counts_among_their_labels_and_a_bulk_one_does_not(labeled_ws):
    ws = labeled_ws
    rows = ws.store.pseudo_labels()
    studio = Studio(ws.data_root)

    def seen() -> list[bool]:
        dec = ws.store.current_decisions()
        by_idx = dict(zip(dec["idx"].tolist(), dec["seen"].tolist()))
        return [by_idx.get(int(rows.idx[p])) for p in range(len(rows))]

    decide_rows(ws, rows, np.arange(0, 10), "accept", "ana")  # above a threshold, in bulk
    studio.decide(ws.name, [10, 11], "accept", "ana", seen=True)  # a page's button: tiles the reviewer looked at
    key = {"op": "decide", "positions": [12], "action": "accept", "expect": ["pending"]}  # a key on a tile
    grid = studio.apply_review_batch(ws.name, {"id": 1, "round": ws.store.latest_round(), "ops": [key]}, "bo")
    assert grid["results"] == [{"decided": 1, "conflicts": 0}], grid
    studio.decide_by_threshold(ws.name, "accept", 0.0, "ana")  # the rest, in bulk
    assert seen() == [False] * 10 + [True] * 3 + [False] * (len(rows) - 13)
    reviewed = reviewed_training_set(ws)
    given = set(ws.split().labeled.tolist())
    assert set(reviewed.split.trusted.tolist()) == given | {int(rows.idx[p]) for p in (10, 11, 12)}
    assert reviewed.counts["accepted"] == len(rows) and reviewed.counts["confirmed"] == 3
    # a page accepted again over bulk accepts makes them the reviewer's; one undo makes them bulk again
    assert studio.decide(ws.name, [0, 1], "accept", "bo", expect="accept", seen=True) == 2
    assert seen()[:2] == [True, True] and reviewed_training_set(ws).counts["confirmed"] == 5
    ws.store.undo_last(who="bo")
    assert seen()[:2] == [False, False] and reviewed_training_set(ws).counts["confirmed"] == 3
    ws.store.undo_last(who="bo")  # the key's accept undone: pending again, and no longer a person's label
    assert seen()[12] is None and int(rows.idx[12]) not in set(reviewed_training_set(ws).split.trusted.tolist())


def test_retrain_round_records_labels_used_and_test_accuracy(labeled_ws):
    ws = labeled_ws
    rows = ws.store.pseudo_labels()
    decide_rows(ws, rows, np.arange(10), "accept", "ana")
    decide_rows(ws, rows, np.arange(10, 15), "reject", "ana")
    st = start_retrain(ws, tiny_run_config("supervised")).join(60)
    assert st.state == "done"
    run = ws.store.run(st.run_id)
    given = len(ws.split().labeled)
    assert run["kind"] == "retrain" and run["metrics"]["labels_used"] == given + 10
    assert run["metrics"]["labels_rejected"] == 5 and 0.0 <= run["metrics"]["test_acc"] <= 1.0
    # a fresh process sees the same runs, pseudo-labels and decisions
    again = open_workspace("tiny", ws.data_root)
    assert [r["kind"] for r in again.store.runs()] == ["train", "retrain"]
    assert again.store.decision_counts()["accept"] == 10 and len(again.store.pseudo_labels()) == 40
    # the Review page warns about a later round's estimate by how many pool images its model trained on
    studio = Studio(ws.data_root)
    mpl_run = again.store.runs()[0]["id"]
    assert studio.trained_on_pool("tiny", st.run_id) == 10 and studio.trained_on_pool("tiny", mpl_run) == 0
    stopped = ws.store.create_run("retrain", tiny_run_config("supervised").to_dict())  # no counts recorded
    assert studio.trained_on_pool("tiny", stopped) is None

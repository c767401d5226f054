"""Validation that means something: a folder's split per class, the words when validation is thin,
and the validation queue whose labels move pool images into the estimate's evidence."""
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from conftest import tiny_run_config, write_stripes_folder
from mpl_core.config import DataConfig
from mpl_core.service.studio import Studio
from mpl_core.service.work import start_pseudo_labeling, start_retrain, start_training
from mpl_core.workspace.calibration import MIN_VALIDATION_PER_CLASS, interval_width, precision_interval
from mpl_core.workspace.export import export_rows
from mpl_core.workspace.review import reviewed_training_set
from mpl_core.workspace.validation import NONE_OF_THEM, round_outlook, split_outlook

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def thin(tmp_path):
    """A Studio over a folder of 3 labels a class (2 classes, 40 unlabeled), trained and pseudo-labeled
    once: the issue's situation, a workspace whose validation is nothing to go on."""
    write_stripes_folder(tmp_path / "stripes", labeled=3)
    studio = Studio(tmp_path)
    ws = studio.create("thin", DataConfig(dataset="stripes"))  # the Data page's defaults: 50 a class
    assert start_training(ws, tiny_run_config("mpl")).join(60).state == "done"
    assert start_pseudo_labeling(ws).join(60).state == "done"
    return studio


def test_a_folder_with_three_labels_a_class_says_so_and_offers_the_queue(thin):
    summary = thin.summary("thin")
    assert summary["per_class"] == [{"class": "horizontal", "train": 3, "validation": 0},
                                    {"class": "vertical", "train": 3, "validation": 0}]
    outlook = summary["validation"]
    assert outlook.short and outlook.more == 2 * MIN_VALIDATION_PER_CLASS
    assert "no validation images" in outlook.message and "Validation labels" in outlook.message
    assert f"{outlook.more} validation labels" in outlook.message
    view = thin.review("thin")
    page = round_outlook(view, view.index.stats(0.5))
    assert page.short and "No estimate" in page.message and "Validation labels tab" in page.message
    assert len(thin.validation_queue("thin").draw(24)) == 24  # the queue has pool images to offer


def test_validation_labels_leave_the_pool_and_join_the_next_rounds_estimate(thin):
    ws, queue = thin.open("thin"), thin.validation_queue("thin")
    view = thin.review("thin")
    pool_before = len(ws.split().unlabeled)
    drawn = queue.draw(6)
    assert len(drawn) == 6
    labels = [1, 0, 1, 0, 1, NONE_OF_THEM]  # the last is none of the classes: it stays in the pool
    assert queue.record(drawn, labels, who="ana") == 6
    assert queue.record(drawn[:2], 0, who="bo") == 0  # labeled already: a key sent twice counts once
    assert set(queue.draw(100).tolist()).isdisjoint(drawn.tolist())  # the queue moves on
    preview = queue.preview([0.0, 0.0])
    assert preview["given"] == 5 and preview["after"]["passing"] == preview["before"]["passing"] + 5
    assert [m for m, _ in preview["narrowing"]] == [0, 1, 2, 3, 4, 5]

    split, ds = ws.split(), ws.dataset()
    moved = view.rows.idx[drawn[:5]]
    assert len(split.unlabeled) == pool_before - 5 and np.isin(moved, split.val.numpy()).all()
    assert ds.train.labels[moved].tolist() == labels[:5]
    assert not np.isin(moved, reviewed_training_set(ws).split.unlabeled.numpy()).any()
    exported = [r for r in export_rows(ws) if r["pool_index"] == int(moved[0])]
    assert [(r["split"], r["final_label"]) for r in exported] == [("validation", "vertical")]  # one row, as labeled
    assert start_pseudo_labeling(ws).join(60).state == "done"  # the next round
    rows = ws.store.pseudo_labels()
    assert sorted(rows.validation["truth"]) == sorted(labels[:5])  # the labels given, as truth
    assert not np.isin(moved, rows.idx).any() and view.rows.idx[drawn[5]] in rows.idx
    assert thin.review("thin").index.stats(0.0).val_support == 5  # the estimate counts them now

    assert queue.undo("ana") == 6  # the newest batch: the next split holds them in the pool again
    assert len(ws.split().unlabeled) == pool_before and len(ws.split().val) == 0


def test_the_queue_draws_reviewed_images_too_so_what_passes_is_sampled(thin):
    """After "accept all above the threshold" the pending images are those below it: a sample of them
    would hold none of what the estimate is about."""
    view = thin.review("thin")
    assert thin.decide_by_threshold("thin", "accept", 0.0, who="ana") == len(view.rows)
    drawn = thin.validation_queue("thin").draw(len(view.rows) + 5)
    assert sorted(drawn.tolist()) == list(range(len(view.rows)))  # every row, in the queue's order


def test_a_retrain_evaluates_on_validation_labels_from_the_queue(thin):
    ws, queue = thin.open("thin"), thin.validation_queue("thin")
    queue.record(queue.draw(4), [0, 1, 0, 1], who="ana")
    job = start_retrain(ws, tiny_run_config("supervised"))
    assert job.join(60).state == "done"
    assert ws.store.run(job.run_id)["metrics"]["val_acc"] == ws.store.run(job.run_id)["metrics"]["val_acc"]  # a number


def test_the_grid_keys_label_for_validation_and_undo_takes_them_back(thin):
    queue = thin.validation_queue("thin")
    round_, drawn = thin.latest_round("thin"), queue.draw(3).tolist()
    ops = [{"op": "decide", "positions": [drawn[0]], "action": "manual", "label": [1], "expect": ["pending"]},
           {"op": "decide", "positions": [drawn[1]], "action": "reject", "label": None, "expect": ["pending"]},
           {"op": "undo"},
           {"op": "decide", "positions": [drawn[2]], "action": "manual", "label": None, "expect": ["pending"]}]
    answer = queue.apply({"id": 1, "round": round_, "ops": ops}, who="ana")
    assert [r.get("decided", r.get("undone")) for r in answer["results"]] == [1, 1, 1, 1] and not answer["message"]
    given = thin.open("thin").store.validation.in_force()
    view = thin.review("thin")
    assert given["label"].tolist() == [1, int(view.rows.label[drawn[2]])]  # A: the model's class
    stale = queue.apply({"id": 2, "round": round_ - 1, "ops": ops[:1]}, who="ana")
    assert "new round" in stale["message"]


def test_the_words_name_the_width_now_and_with_more_labels():
    # the issue: 6 classes, 2 validation images a class, 6 of the 9 that pass labeled right
    est, low, high = precision_interval(6, 9)
    assert (round(est * 100, 1), round(low * 100, 1), round(high * 100, 1)) == (65.0, 39.6, 86.8)
    outlook = split_outlook([2] * 6)
    assert outlook.more == 6 * MIN_VALIDATION_PER_CLASS - 12
    assert outlook.width_more == interval_width(0.9, 6 * MIN_VALIDATION_PER_CLASS) < outlook.width
    assert f"{outlook.more} more validation labels" in outlook.message
    assert not split_outlook([MIN_VALIDATION_PER_CLASS] * 6).message  # enough: nothing to say


@pytest.fixture
def thin_app(tmp_path, monkeypatch):
    """The `thin` workspace's data root, with the app pointed at it."""
    monkeypatch.setenv("MPL_DATA_ROOT", str(tmp_path))
    write_stripes_folder(tmp_path / "stripes", labeled=3)
    ws = Studio(tmp_path).create("thin", DataConfig(dataset="stripes"))
    assert start_training(ws, tiny_run_config("mpl")).join(60).state == "done"
    assert start_pseudo_labeling(ws).join(60).state == "done"
    ws.store.close()
    from ui import get_studio
    get_studio.clear()  # a fresh Studio for this data root
    return tmp_path


def _page(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state["workspace"] = "thin"
    return at.switch_page(page).run()


def test_the_data_and_review_pages_say_it_in_words_and_offer_the_queue(thin_app):
    at = _page("app_pages/data.py")
    assert not at.exception and not at.error
    assert any("Per class, train / validation: horizontal 3 / 0 · vertical 3 / 0." in c.value for c in at.caption)
    assert any("no validation images" in w.value and "Validation labels" in w.value for w in at.warning)
    at = _page("app_pages/review.py")
    assert not at.exception and not at.error
    assert any("No estimate" in w.value and "Validation labels tab" in w.value for w in at.warning)
    assert next(m.value for m in at.metric if m.label == "Labeled for validation") == "0"
    from ui import get_studio
    queue = get_studio().validation_queue("thin")
    queue.record(queue.draw(3), [0, 1, 1], who="ana")
    at.run()
    assert next(m.value for m in at.metric if m.label == "Labeled for validation") == "3"

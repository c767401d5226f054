import io

import numpy as np
import pytest
from PIL import Image
from test_review import labeled_ws  # noqa: F401 (fixture)

from mpl_core.errors import MPLStudioError
from mpl_core.service.job import TrainingJob
from mpl_core.service.studio import Studio
from mpl_core.workspace import media
from mpl_core.workspace.review import reviewed_training_set
from mpl_core.workspace.review_session import paginate


def test_uploads_are_named_by_a_checked_workspace_name(tmp_path):
    studio = Studio(tmp_path / "data")
    with pytest.raises(MPLStudioError, match="workspace name"):
        studio.save_upload("../../escape", b"zip")
    assert not any(tmp_path.rglob("*.zip"))
    assert studio.save_upload("mine", b"zip") == "uploads/mine.zip"
    assert (tmp_path / "data" / "uploads" / "mine.zip").read_bytes() == b"zip"


@pytest.fixture
def studio(labeled_ws):  # noqa: F811
    """A Studio over the tiny workspace with one round of pseudo-labels."""
    return Studio(labeled_ws.data_root)


def test_queue_labels_are_saved_in_one_transaction(studio):
    """The labeling queue's form: one call, one undo step; a bad class in it saves none of them."""
    queue = studio.review("tiny").queue(3)
    assert len(queue) == 3
    labels = [0, 1, 0]
    assert studio.label_by_hand("tiny", queue, labels, "ana") == 3
    view = studio.review("tiny")
    assert (view.status[queue] == "manual").all() and view.final_label[queue].tolist() == labels
    assert reviewed_training_set(studio.open("tiny")).counts["human"] == 3
    assert studio.undo("tiny") == 3  # all three, not only the last tile
    assert (studio.review("tiny").status[queue] == "pending").all()
    store = studio.open("tiny").store
    before = store.decision_total()
    for bad in ([0, 7, 1], [0, 1]):  # a class out of range; a class missing
        with pytest.raises(MPLStudioError):
            studio.label_by_hand("tiny", queue, bad, "ana")
    assert store.decision_total() == before and studio.review("tiny").counts()["manual"] == 0
    assert studio.label_by_hand("tiny", queue[:2], 1, "bo") == 2  # one class for every row still works
    assert studio.review("tiny").final_label[queue[:2]].tolist() == [1, 1]


def test_decisions_keep_the_cached_view_in_step_with_the_store(studio):
    view = studio.review("tiny")
    assert studio.review("tiny") is view  # cached: nothing changed
    assert studio.decide("tiny", [0, 1], "accept", "ana") == 2
    assert studio.decide("tiny", [2], "relabel", "ana", label=1 - int(view.rows.label[2])) == 1
    # the cached view's counts are kept in step by the decisions, not counted again
    assert studio.review("tiny") is view
    assert view.counts() == {"pending": 37, "accept": 2, "reject": 0, "relabel": 1, "manual": 0}
    assert studio.decide("tiny", [0], "reject", "bo", expect="pending") == 0  # ana decided it first
    fresh = Studio(studio.data_root).review("tiny")  # what another process reads from the store
    assert studio.review("tiny").status.tolist() == fresh.status.tolist()
    assert studio.review("tiny").final_label.tolist() == fresh.final_label.tolist()
    assert studio.review("tiny").counts() == fresh.counts()
    assert studio.decide_by_threshold("tiny", "accept", 0.0, "ana") == 37  # every pending row
    assert studio.review("tiny").counts() == {"pending": 0, "accept": 39, "reject": 0, "relabel": 1, "manual": 0}


def test_a_page_is_as_seen_by_its_reviewer_with_their_own_later_decisions(studio):
    """The grid commits keys without redrawing its page: the page buttons must tell the reviewer's
    own decisions since the drawing from another reviewer's."""
    studio.decide("tiny", [0], "accept", "ana")
    studio.decide("tiny", [1], "reject", "bo")
    studio.decide("tiny", [2], "reject", "ana")
    studio.decide("tiny", [2], "accept", "bo")  # bo changed ana's decision: ana never saw that
    assert studio.as_seen_by("tiny", [0, 1, 2, 3], ["pending"] * 4, "ana") == ["accept", "pending", "pending",
                                                                                 "pending"]


def test_a_new_round_shows_in_latest_round(studio):
    first = studio.latest_round("tiny")
    assert first == studio.review("tiny").rows.round
    assert studio.start("tiny", "pseudo_label").join(60).state == "done"
    assert studio.latest_round("tiny") == first + 1 == studio.review("tiny").rows.round


def test_paginate_clamps_the_page():
    positions = np.arange(50)
    page = paginate(positions, 24, 3)
    assert page.items.tolist() == [48, 49] and (page.page, page.pages, page.total) == (3, 3, 50)
    assert paginate(positions, 24, 9).page == 3 and paginate(positions, 24, 0).items.tolist() == list(range(24))
    empty = paginate(np.array([], dtype=np.int64), 24, 2)
    assert (len(empty.items), empty.page, empty.pages, empty.total) == (0, 1, 1, 0)
    with pytest.raises(MPLStudioError):
        paginate(positions, 0, 1)


def test_own_images_show_their_source_and_pool_images_are_enlarged(studio):
    ws = studio.open("tiny")
    ds = ws.dataset()  # own 16-px images, trained on at 28 px
    thumb = Image.open(io.BytesIO(studio.thumbnails("tiny", [0])[0]))
    source = Image.open(ws.data_root / ws.data.dataset / ds.train.ids[0])
    assert thumb.size == (16, 16) and (np.asarray(thumb) == np.asarray(source)).all()
    assert media.display_uris(ds, [0])[0].startswith("data:image/png;base64,")
    zoom = studio.zoom_image("tiny", 0)  # the lightbox: a small image as PNG (exact pixels), and its size
    assert zoom["image"].startswith("data:image/png;base64,") and (zoom["width"], zoom["height"]) == (16, 16)
    images = ds.train.images  # (N, 1, 28, 28) uint8
    arr = media.thumbnails(images, [0, 1], scale=2)
    assert arr[0].shape == (56, 56) and (arr[0][::2, ::2] == images[0, 0].numpy()).all()
    rgb = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3).transpose(0, 3, 1, 2)  # (N, C, H, W)
    assert (media.thumbnails(rgb, [1], scale=1)[0] == rgb[1].transpose(1, 2, 0)).all()


def test_adopt_makes_a_job_the_workspaces_job(studio):
    job = TrainingJob(studio.open("tiny"), "train", lambda job: {"completed": True}).start()
    assert studio.adopt("tiny", job) is job and studio.job("tiny") is job
    assert job.join(10).state == "done"


def batch(round_, *ops, id_=1):
    return {"id": id_, "round": round_, "ops": list(ops)}


def decide(positions, action, expect="pending", label=None):
    return {"op": "decide", "positions": positions, "action": action, "label": label,
            "expect": [expect] * len(positions)}


def test_a_grid_batch_commits_each_key_press_as_its_own_undo_step(studio):
    view = studio.review("tiny")
    r = int(view.rows.round)
    other = 1 - int(view.rows.label[4])
    ack = studio.apply_review_batch("tiny", batch(r, decide([0], "accept"), decide([1, 2, 3], "reject"),
                                                  decide([4], "relabel", label=other), {"op": "undo"},
                                                  decide([5], "accept")), "ana")
    assert ack["id"] == 1 and ack["message"] == ""
    assert [x.get("decided", x.get("undone")) for x in ack["results"]] == [1, 3, 1, 1, 1]
    status = studio.review("tiny").status
    assert status[:6].tolist() == ["accept", "reject", "reject", "reject", "pending", "accept"]  # the relabel undone
    assert studio.undo("tiny", "ana") == 1 and studio.undo("tiny", "ana") == 3  # one key press at a time
    assert studio.review("tiny").status[:6].tolist() == ["accept"] + ["pending"] * 5


def test_a_tile_another_reviewer_decided_first_keeps_their_decision(studio):
    r = int(studio.review("tiny").rows.round)
    studio.apply_review_batch("tiny", batch(r, decide([0], "reject")), "bo")
    ack = studio.apply_review_batch("tiny", batch(r, decide([0, 1], "accept")), "ana")  # ana saw both pending
    assert ack["results"][0] == {"decided": 1, "conflicts": 1}
    assert "another reviewer decided 1 of those tile(s) first" in ack["message"]
    assert studio.review("tiny").status[:2].tolist() == ["reject", "accept"]


@pytest.mark.parametrize("bad_batch, message", [
    (lambda r: batch(r + 1, decide([0], "accept")), "a new round of pseudo-labels arrived"),
    (lambda r: batch(r, decide([9999], "accept")), "not in this round"),
    (lambda r: batch(r, decide([0], "maybe")), "action must be one of"),
    (lambda r: batch(r, decide([0], "relabel", label=7)), "needs a class between 0 and 1"),
    (lambda r: batch(r, {"op": "explode"}), "unknown review operation"),
    (lambda r: batch(r, {"op": "decide", "positions": "12", "action": "accept"}), "positions of its tiles"),
    (lambda r: batch(r, {"op": "decide", "positions": [0], "action": ["relabel"]}), "one action"),
    (lambda r: batch(r, {"op": "decide", "positions": [0], "action": "accept", "expect": 5}), "must be text"),
])
def test_a_bad_operation_records_nothing_and_says_why(studio, bad_batch, message):
    store = studio.open("tiny").store
    before = store.decision_total()
    ack = studio.apply_review_batch("tiny", bad_batch(int(studio.review("tiny").rows.round)), "ana")
    assert message in ack["message"] and "error" in ack["results"][0]
    assert store.decision_total() == before


def test_a_full_disk_fails_the_batch_with_a_message(studio, full_disk):
    r = int(studio.review("tiny").rows.round)
    full_disk(True)
    ack = studio.apply_review_batch("tiny", batch(r, decide([0, 1], "accept")), "ana")
    full_disk(False)
    assert "disk is full" in ack["message"]
    assert (studio.review("tiny").status == "pending").all()


def test_grid_tiles_carry_the_top_classes_and_the_history(studio):
    studio.decide("tiny", [0], "accept", "ana")
    studio.undo("tiny", "ana")
    studio.decide("tiny", [0], "reject", "bo")
    tile = studio.review_tiles("tiny", [0])[0]
    assert tile["image"].startswith("data:image/png;base64,")
    probs = [p for _, p in tile["top"]]
    assert probs == sorted(probs, reverse=True) and tile["top"][0][0] == tile["label"]
    assert abs(sum(probs) - 1.0) < 0.01  # two classes: the top 3 are all of them
    assert [(h["action"], h["who"], h["undone"]) for h in tile["history"]] == [("accept", "ana", True),
                                                                                ("reject", "bo", False)]


def test_closest_to_the_threshold_orders_by_distance_from_each_class_threshold(studio):
    view = studio.review("tiny")
    thresholds = [0.6, 0.8]
    order = view.select(sort="closest to the threshold", thresholds=thresholds)
    conf, label = view.rows.confidence, view.rows.label
    distance = np.abs(conf[order] - np.asarray(thresholds)[label[order]])
    assert len(order) == 40 and (np.diff(distance) >= 0).all()


def test_every_order_filtered_is_the_filtered_rows_sorted_also_after_decisions(studio):
    from mpl_core.workspace.review_session import SORTS
    for step in range(3):
        view = studio.review("tiny")
        for sort, thresholds in [(sort, t) for sort in SORTS for t in ([0.6, 0.8], [0.9, 0.5])]:
            for statuses, classes in ((None, None), (["pending"], None), (["pending", "accept"], [1])):
                got = view.select(statuses=statuses, classes=classes, sort=sort, thresholds=thresholds)
                mask = np.ones(len(view.rows), dtype=bool)
                if statuses:
                    mask &= np.isin(view.status, statuses)
                if classes:
                    mask &= np.isin(view.rows.label, classes)
                want = np.nonzero(mask)[0]
                key = view.order_key(sort, thresholds)
                if key is not None:
                    want = want[np.argsort(key[want], kind="stable")]
                assert got.tolist() == want.tolist(), (step, sort, statuses, classes)
        studio.decide("tiny", view.select(statuses=["pending"])[:5], "accept", "ana")  # the cached order stays


def test_a_random_sample_is_the_same_shuffle_for_every_reviewer_of_a_round(studio):
    from mpl_core.workspace.review_session import ReviewSession
    view = studio.review("tiny")
    mine = view.select(sort="a random sample")
    theirs = ReviewSession(studio.open("tiny")).view().select(sort="a random sample")  # another process's view
    assert mine.tolist() == theirs.tolist() and sorted(mine.tolist()) == list(range(len(view.rows)))
    assert mine.tolist() != view.select(sort="pool order").tolist()


def test_likely_mistakes_put_confident_labels_of_error_prone_classes_first():
    from mpl_core.workspace.review_session import class_error_rates
    validation = {"label": [0, 0, 0, 0, 1, 1, 1, 1], "truth": [0, 0, 0, 0, 1, 0, 0, 0]}  # says 1: wrong 3 of 4
    rates = class_error_rates(validation, 3)
    assert rates.tolist() == [1 / 6, 4 / 6, 0.5]  # Laplace: one right and one wrong added; no evidence = 0.5


@pytest.mark.parametrize("target", [0.0, 1.0, 1.5])
def test_thresholds_for_a_precision_outside_zero_to_one_say_so(studio, target):
    with pytest.raises(MPLStudioError, match="between 0 and 1"):
        studio.review("tiny").aim(target)


def test_thresholds_for_a_precision_sit_on_the_sliders_grid(studio):
    from mpl_core.workspace.calibration import class_thresholds_to_accept, threshold_to_accept
    view = studio.review("tiny")
    for target in (0.3, 0.6, 0.9):
        (one,) = set(view.aim(target).thresholds)  # one for all
        assert one == pytest.approx(threshold_to_accept(view.index, target, grid=101))
        assert view.aim(target, per_class=True).thresholds == pytest.approx(
            class_thresholds_to_accept(view.index, target, grid=101))
        assert len(view.aim(target, per_class=True).thresholds) == view.index.num_classes

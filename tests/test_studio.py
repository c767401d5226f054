import numpy as np
import pytest
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
    assert studio.decide("tiny", [0], "reject", "bo", expect="pending") == 0  # ana decided it first
    fresh = Studio(studio.data_root).review("tiny")  # what another process reads from the store
    assert studio.review("tiny").status.tolist() == fresh.status.tolist()
    assert studio.review("tiny").final_label.tolist() == fresh.final_label.tolist()
    assert studio.decide_by_threshold("tiny", "accept", 0.0, "ana") == 37  # every pending row
    assert studio.review("tiny").counts() == {"pending": 0, "accept": 39, "reject": 0, "relabel": 1, "manual": 0}


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


def test_thumbnails_are_channels_last_and_enlarged(studio):
    images = studio.open("tiny").dataset().train.images  # (N, 1, 28, 28) uint8
    arr = studio.thumbnails("tiny", [0, 1], scale=2)
    assert arr[0].shape == (56, 56) and (arr[0][::2, ::2] == images[0, 0].numpy()).all()
    assert studio.thumbnail_uris("tiny", [0])[0].startswith("data:image/png;base64,")
    rgb = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3).transpose(0, 3, 1, 2)  # (N, C, H, W)
    assert (media.thumbnails(rgb, [1], scale=1)[0] == rgb[1].transpose(1, 2, 0)).all()


def test_adopt_makes_a_job_the_workspaces_job(studio):
    job = TrainingJob(studio.open("tiny"), "train", lambda job: {"completed": True}).start()
    assert studio.adopt("tiny", job) is job and studio.job("tiny") is job
    assert job.join(10).state == "done"

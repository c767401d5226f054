"""The review grid's HTTP route (review_grid/api.py): tokens, the answer, bad requests, and a batch
sent twice (by POST and again by trigger) applied once."""
import asyncio
import json

import pytest
from test_review import labeled_ws  # noqa: F401 (fixture)
from test_studio import batch, decide

from mpl_core.service.studio import Studio
from review_grid import api


@pytest.fixture
def mounted():
    api.routes()
    yield
    api._mounted.clear()
    api._grants.clear()


@pytest.fixture
def studio(labeled_ws):  # noqa: F811
    return Studio(labeled_ws.data_root)


def post(body: bytes) -> tuple[int, dict]:
    """Call the route's handler as Starlette would, with this request body."""
    from starlette.requests import Request
    sent = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return sent.pop(0) if sent else {"type": "http.disconnect"}

    scope = {"type": "http", "method": "POST", "path": api.URL, "headers": [], "query_string": b""}
    response = asyncio.run(api._batch(Request(scope, receive)))
    return response.status_code, json.loads(response.body)


def test_without_the_route_the_grid_uses_triggers(studio):
    assert api.grid_api(studio, "tiny", "ana", {}) is None


def test_a_token_is_kept_per_session_and_reviewer(mounted, studio):
    session = {}
    first = api.grid_api(studio, "tiny", "ana", session)
    assert first["url"] == api.URL and len(first["token"]) >= 24
    assert api.grid_api(studio, "tiny", "ana", session) == first  # a rerun reuses it
    assert api.grid_api(studio, "tiny", "bo", session)["token"] != first["token"]
    assert api.grid_api(studio, "tiny", "ana", {})["token"] != first["token"]  # another session


def test_a_post_commits_and_answers_with_the_page_as_stored(mounted, studio):
    token = api.grid_api(studio, "tiny", "ana", {})["token"]
    r = int(studio.review("tiny").rows.round)
    studio.decide("tiny", [3], "reject", "bo")  # another reviewer, on a tile of the same page
    code, reply = post(json.dumps({"token": token, "batch": batch(r, decide([0, 1], "accept"), id_="g:1"),
                                   "positions": [0, 1, 2, 3, 99999, "x"]}).encode())
    assert code == 200 and reply["ack"]["results"] == [{"decided": 2, "conflicts": 0}]
    assert [(t["position"], t["status"]) for t in reply["tiles"]] == [
        (0, "accept"), (1, "accept"), (2, "pending"), (3, "reject")]  # bad positions left out
    assert reply["counts"]["accept"] == 2 and reply["counts"]["reject"] == 1 and reply["round"] == r
    assert studio.open("tiny").store.history([studio.review("tiny").rows.sample_ids[0]])[
        studio.review("tiny").rows.sample_ids[0]][-1]["who"] == "ana"  # the token's reviewer


@pytest.mark.parametrize("body, code, message", [
    (b"not json", 400, "not JSON"),
    (b"[1, 2]", 400, "not a JSON object"),
    (json.dumps({"token": "made-up", "batch": {}}).encode(), 403, "reload the page"),
    (b"x" * (api.MAX_BODY + 1), 413, "too large"),
])
def test_a_bad_request_is_refused_with_a_reason(mounted, studio, body, code, message):
    api.grid_api(studio, "tiny", "ana", {})
    before = studio.open("tiny").store.decision_total()
    status, reply = post(body)
    assert status == code and message in reply["error"]
    assert studio.open("tiny").store.decision_total() == before


def test_a_batch_sent_again_is_answered_without_applying_it_twice(mounted, studio):
    """The grid falls back to a trigger when a POST fails, perhaps after the server had committed it:
    the undo in it must not take back a second decision."""
    token = api.grid_api(studio, "tiny", "ana", {})["token"]
    r = int(studio.review("tiny").rows.round)
    studio.apply_review_batch("tiny", batch(r, decide([0], "accept"), id_="g:1"), "ana")
    studio.apply_review_batch("tiny", batch(r, decide([1], "reject"), id_="g:2"), "ana")
    undo = batch(r, {"op": "undo"}, id_="g:3")
    code, reply = post(json.dumps({"token": token, "batch": undo, "positions": [0, 1]}).encode())
    assert code == 200 and reply["ack"]["results"] == [{"undone": 1}]
    assert [t["status"] for t in reply["tiles"]] == ["accept", "pending"]
    assert studio.apply_review_batch("tiny", undo, "ana") == reply["ack"]  # by trigger: the same answer
    assert studio.review("tiny").status[:2].tolist() == ["accept", "pending"]  # one undo, not two
    assert studio.apply_review_batch("tiny", undo, "bo")["results"] == [{"undone": 0}]  # ids are per reviewer


def test_a_reply_leaves_out_the_tiles_of_another_round(mounted, studio):
    token = api.grid_api(studio, "tiny", "ana", {})["token"]
    r = int(studio.review("tiny").rows.round)
    code, reply = post(json.dumps({"token": token, "batch": batch(r - 1, decide([0], "accept")),
                                   "positions": [0, 1]}).encode())
    assert "a new round of pseudo-labels arrived" in reply["ack"]["message"]
    assert reply["tiles"] == [] and reply["round"] == r


def test_tokens_of_lookalike_names_differ(mounted, studio):
    """Free-text names joined by a separator could collide: ("a-b", "c") and ("a", "b-c")."""
    session = {}
    one = api.grid_api(studio, "a-b", "c", session)["token"]
    two = api.grid_api(studio, "a", "b-c", session)["token"]
    assert one != two and api._grants[one][1:] == ("a-b", "c") and api._grants[two][1:] == ("a", "b-c")


def test_a_batch_without_a_list_of_operations_is_refused(mounted, studio):
    token = api.grid_api(studio, "tiny", "ana", {})["token"]
    code, reply = post(json.dumps({"token": token, "batch": {"id": "g:9", "round": 1, "ops": 5}}).encode())
    assert code == 200 and "list of operations" in reply["ack"]["message"]

"""The review grid's decisions over plain HTTP: one POST per batch, committed without a Streamlit rerun.

    app = st.App("app.py", routes=routes())     # server.py: `streamlit run server.py`
    grid_api(studio, "ws", "ana", session)      # a page: {"url", "token"} for the component, or None

A trigger makes Streamlit rerun the grid's fragment, and the browser then renders the whole app
three times (script started, the new element, script finished): 100 to 150 ms of main-thread work
per decision and per tab, most of what eight reviewers on two cores waited for. The POST commits
the same batch through the same code (ReviewSession.apply, one store transaction per decision) and
answers with the ack, the page's tiles as stored now (another reviewer's decisions show at once)
and the round's counts. Under plain `streamlit run app.py` no route is mounted, grid_api gives
None and the grid sends its batches as triggers, as before; it falls back to them by itself when a
POST fails. The page grants each (session, workspace, reviewer) a random token: the route acts
only for a token a page handed out in this process.
"""
from __future__ import annotations

import json
import secrets
import threading
from collections import OrderedDict

URL = "/api/review-batch"
MAX_GRANTS = 4096  # tokens kept: one per session, workspace and reviewer name
MAX_BODY = 1_000_000  # bytes: a batch of keys is a few KB

_grants: OrderedDict[str, tuple] = OrderedDict()  # token -> (studio, workspace, who)
_lock = threading.Lock()
_mounted = threading.Event()


def routes() -> list:
    """The Starlette routes to mount on st.App (see server.py); mounting them turns the API on."""
    from starlette.routing import Route
    _mounted.set()
    return [Route(URL, _batch, methods=["POST"])]


def grid_api(studio, name: str, who: str, session: dict) -> dict | None:
    """What the component needs to POST its batches (None without the route): the URL and this
    session's token for `name` and `who`, kept in `session` so reruns reuse it."""
    if not _mounted.is_set():
        return None
    key = "grid-api " + json.dumps([name, who])  # names are free text: no separator is safe
    token = session.get(key)
    with _lock:
        grant = _grants.get(token)
        if grant is None or grant[1:] != (name, who):  # a token is never pointed elsewhere
            token = secrets.token_urlsafe(24)
            session[key] = token
        _grants[token] = (studio, name, who)
        _grants.move_to_end(token)
        while len(_grants) > MAX_GRANTS:
            _grants.popitem(last=False)
    return {"url": URL, "token": token}


def apply(grant: tuple, batch, positions) -> dict:
    """Commit a batch as the grant's reviewer; the answer the grid redraws from."""
    studio, name, who = grant
    if not isinstance(batch, dict):
        return {"error": "the request holds no batch"}
    ack = studio.apply_review_batch(name, batch, who)
    return {"ack": ack, **studio.review_state(name, batch.get("round"), positions)}


async def _batch(request):
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse

    too_large = JSONResponse({"error": f"batch too large (over {MAX_BODY:,} bytes)"}, status_code=413)
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > MAX_BODY:
        return too_large
    body = b""
    async for chunk in request.stream():  # a body longer than it said is cut off here too
        body += chunk
        if len(body) > MAX_BODY:
            return too_large
    try:
        data = json.loads(body)
    except ValueError:
        return JSONResponse({"error": "the body is not JSON"}, status_code=400)
    if not isinstance(data, dict):
        return JSONResponse({"error": "the body is not a JSON object"}, status_code=400)
    with _lock:
        grant = _grants.get(data.get("token")) if isinstance(data.get("token"), str) else None
    if grant is None:
        return JSONResponse({"error": "unknown review session: reload the page"}, status_code=403)
    # the store and the cached view are blocking work: off the event loop that serves every tab
    reply = await run_in_threadpool(apply, grant, data.get("batch"), data.get("positions"))
    return JSONResponse(reply, status_code=400 if "error" in reply else 200)

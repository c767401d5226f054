"""Eight reviewers at once in real Chromium while a training job runs, then the server is killed.

    python bench/concurrent_review.py                     # 8 sessions x 50 A keys each
    python bench/concurrent_review.py --sessions 8 --clicks 30 --pool 20000

1. A Fashion-MNIST workspace is trained (smoke preset) and pseudo-labeled before the app starts.
2. Every session opens the Train page and presses "Start training" within about a second:
   exactly one training job may start.
3. Every session opens the Review page (each on its own grid page) and, round after round,
   presses A in the review grid (accept the focused tile); all sessions' keys are in flight
   together. The latency of a key is what the grid itself records in the browser: from the key
   to Python's ack, which is sent after the decision's store transaction has committed.
4. A last key per session is sent and the server is killed with SIGKILL 0.4 s later; every
   decision a grid had acknowledged must be in the store afterwards.

Prints keys sent, decisions acknowledged as saved (as the acks count them) and stored, the number
of training jobs, and key -> commit latency (p50 / p95 / max; target p95 <= 1 s for 8 reviewers).
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benches

from review_keys import TIMINGS, settled  # noqa: E402  (the grid's own timings and pending count)

from browser import browser_pages, choose, streamlit_server  # noqa: E402
from mpl_core.config import DataConfig  # noqa: E402
from mpl_core.presets import build_run_config  # noqa: E402
from mpl_core.service.work import start_pseudo_labeling, start_training  # noqa: E402
from mpl_core.workspace.workspace import create_workspace, open_workspace  # noqa: E402


def prepare(root: Path, pool: int) -> None:
    ws = create_workspace("bench", DataConfig(dataset="fashion-mnist", max_unlabeled=pool), root)
    if start_training(ws, build_run_config("smoke", algorithm="mpl")).join().state != "done":
        raise SystemExit("could not train the workspace's first model")
    if start_pseudo_labeling(ws).join().state != "done":
        raise SystemExit("could not pseudo-label the pool")
    print(f"workspace ready: {len(ws.store.pseudo_labels()):,} pseudo-labels", file=sys.stderr)


def wait_acked(pages, timeout, poll=0.1) -> int:
    """Wait until every session's grid has its decisions acknowledged (committed: Python acks a batch
    after its store transaction); returns how many sessions still wait. Polled slowly on purpose:
    each poll is a round trip through the browser on the same two cores the server needs."""
    end = time.perf_counter() + timeout
    waiting = list(pages)
    while waiting and time.perf_counter() < end:
        waiting = [p for p in waiting if not settled(p)]
        if waiting:
            time.sleep(poll)
    return len(waiting)


def grid_attr(page, name: str) -> str:
    return page.locator(".grid-root").first.get_attribute(f"data-{name}") or "0"


def press_accept(pages) -> None:
    """Press A in every session's grid without waiting for anything."""
    for page in pages:
        page.keyboard.press("a")


def start_training_everywhere(pages, url) -> None:
    for page in pages:
        page.goto(url + "/train?ws=bench", timeout=180000)
        page.get_by_role("heading", name="Train").first.wait_for(timeout=60000)
        choose(page, "Preset", "quick-demo")
        steps = page.get_by_label("Steps (0 = the preset's)")
        steps.fill("100000")
        steps.press("Tab")
    t0 = time.perf_counter()
    for page in pages:  # as close together as one driver can send them
        page.get_by_role("button", name="Start training").click(no_wait_after=True)
    print(f"{len(pages)} start clicks sent in {time.perf_counter() - t0:.2f} s", file=sys.stderr)


def open_review(pages, url) -> None:
    for i, page in enumerate(pages):
        t0 = time.perf_counter()
        page.goto(url + "/review?ws=bench", timeout=180000)
        try:
            page.get_by_text("Round 1:").wait_for(timeout=120000)
        except Exception:
            print(page.locator('[data-testid="stMain"]').first.inner_text()[:2000], file=sys.stderr)
            raise
        print(f"session {i}: review page in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        name = page.get_by_label("Your name (recorded with decisions)")
        name.fill(f"reviewer-{i}")  # decisions are counted per session in the store
        name.press("Enter")
        number = page.get_by_label("Go to page", exact=True)
        number.fill(str(i + 1))  # each reviewer on its own grid page
        number.press("Enter")
        page.locator(".grid-root").first.get_by_text(f"page {i + 1} of").wait_for(timeout=60000)
        page.locator(".grid-root").first.locator(".tile img").first.click()  # the grid has the keys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--clicks", type=int, default=50, help="A keys per session")
    parser.add_argument("--pool", type=int, default=10000, help="unlabeled images (pseudo-labels)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepare(root, args.pool)
        store = open_workspace("bench", root).store
        runs_before = len(store.runs())
        sent, misses = 0, 0
        with streamlit_server(root, log=root / "app.log") as server, browser_pages(args.sessions) as pages:
            pages[0].goto(server.url)  # app.py runs once before any deep link
            pages[0].get_by_role("heading", name="MPL Studio").first.wait_for(timeout=60000)
            start_training_everywhere(pages, server.url)
            time.sleep(5)
            new_runs = store.runs()[runs_before:]
            running = [r for r in new_runs if r["status"] == "running"]
            for page in pages:  # leave the Train page: eight live Train pages alone load two cores
                page.goto("about:blank")
            open_review(pages, server.url)
            for _ in range(args.clicks):
                press_accept(pages)
                sent += len(pages)
                misses += wait_acked(pages, timeout=60)
            stored_under_load = store.decision_total()
            # key -> ack, as each grid recorded it in the browser
            latencies = [ms / 1000 for page in pages for ms in page.evaluate(TIMINGS)["ack"]]
            job = store.run(new_runs[0]["id"]) if new_runs else {"status": "none"}
            logged = store.last_logged(job["id"]) if new_runs else None
            status = f"its run {job['status']}, step {logged[1] if logged else 0} logged"

            # The crash: one more key per session, then SIGKILL while decisions are in flight.
            press_accept(pages)
            sent += len(pages)
            time.sleep(0.4)
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
            # decisions that reached a browser as saved, by Python's count in the acks
            acknowledged = sum(int(grid_attr(page, "saved")) for page in pages)
            conflicts = sum(int(grid_attr(page, "conflicts")) for page in pages)
        after = open_workspace("bench", root).store
        stored = after.decision_total()
        per_session = {}
        for row in after.decision_log(limit=100_000):
            per_session[row["who"]] = per_session.get(row["who"], 0) + 1
        log = (root / "app.log").read_text()
        for block in log.split("Traceback (most recent call last):")[1:]:
            print("server traceback ends with:", block.strip().splitlines()[-1], file=sys.stderr)

    lat = sorted(latencies)
    p95 = lat[max(0, int(round(0.95 * len(lat))) - 1)] if lat else float("nan")
    print(f"{args.sessions} sessions x {args.clicks} accept clicks, {args.pool:,} pseudo-labels, "
          f"training running in the app ({status.strip()})")
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| training jobs started by {args.sessions} simultaneous Start clicks | {len(new_runs)} "
          f"(running: {len(running)}) | 1 |")
    print(f"| A keys sent under load / decisions stored | {sent - len(pages)} / {stored_under_load} | |")
    print(f"| decisions acknowledged as saved before SIGKILL / stored after restart | {acknowledged} / {stored} "
          f"(keys sent {sent}; {conflicts} tiles another reviewer had decided first) | none lost |")
    print(f"| decisions stored per session (sent {args.clicks + 1} each) | "
          f"{', '.join(str(per_session.get(f'reviewer-{i}', 0)) for i in range(args.sessions))} | |")
    print(f"| A key -> decision committed (the grid's ack), p50 | {statistics.median(lat):.2f} s | |")
    print(f"| A key -> decision committed (the grid's ack), p95 | {p95:.2f} s | <= 1 s |")
    print(f"| A key -> decision committed (the grid's ack), max | {lat[-1]:.2f} s | |")
    print(f"| rounds where a session still waited after 60 s | {misses} | 0 |")
    print(f"| tracebacks in the server log | {log.count('Traceback')} | 0 |")


if __name__ == "__main__":
    main()

"""Eight reviewers at once in real Chromium while a training job runs, then the server is killed.

    python bench/concurrent_review.py                     # 8 sessions x 15 accept clicks each
    python bench/concurrent_review.py --sessions 8 --clicks 30 --pool 20000

1. A Fashion-MNIST workspace is trained (smoke preset) and pseudo-labeled before the app starts.
2. Every session opens the Train page and presses "Start training" within about a second:
   exactly one training job may start.
3. Every session opens the Review page (each on its own grid page) and, round after round,
   presses A in the review grid (accept the focused tile); all sessions' keys are in flight
   together. The latency of a key is the time until that session's page shows the new Accept
   count (the decision is committed and the counts redrawn).
4. A last burst of clicks is sent and the server is killed with SIGKILL right after; every
   decision a page had acknowledged must be in the store afterwards.

Prints decisions sent / acknowledged / stored, the number of training jobs, and click latency
(p50 / p95 / max; target p95 <= 0.5 s).
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

from browser import browser_pages, choose, metric, streamlit_server  # noqa: E402
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


def accept_count(page) -> int:
    return int(metric(page, "Accept").replace(",", ""))


def wait_all(pages, before, t0, timeout) -> dict[int, float]:
    """Per session that acknowledged within timeout: seconds from its click to its new Accept count."""
    done: dict[int, float] = {}
    end = time.perf_counter() + timeout
    while len(done) < len(pages) and time.perf_counter() < end:
        for i, page in enumerate(pages):
            if i in done:
                continue
            try:
                if accept_count(page) != before[i]:
                    done[i] = time.perf_counter() - t0[i]
            except Exception:  # the metric is being re-rendered
                pass
        time.sleep(0.005)
    return done


def click_accept(pages) -> tuple[list[int], list[float]]:
    """Press A in every session's grid without waiting; (Accept counts before, key times)."""
    before, t0 = [accept_count(p) for p in pages], []
    for page in pages:
        t0.append(time.perf_counter())
        page.keyboard.press("a")
    return before, t0


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
        number = page.get_by_label("Page", exact=True)
        number.fill(str(i + 1))  # each reviewer on its own grid page
        number.press("Enter")
        page.get_by_text(f"page {i + 1} of").wait_for(timeout=60000)
        page.locator(".grid-root").first.locator(".tile img").first.click()  # the grid has the keys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--clicks", type=int, default=15, help="accept keys per session")
    parser.add_argument("--pool", type=int, default=10000, help="unlabeled images (pseudo-labels)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepare(root, args.pool)
        store = open_workspace("bench", root).store
        runs_before = len(store.runs())
        latencies, sent, acknowledged, misses = [], 0, 0, 0
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
                before, t0 = click_accept(pages)
                sent += len(pages)
                done = wait_all(pages, before, t0, timeout=60)
                latencies += list(done.values())
                acknowledged += len(done)
                misses += len(pages) - len(done)
            stored_under_load = store.decision_total()
            status = pages[0].get_by_text("images/s").first.inner_text() if pages[0].get_by_text(
                "images/s").count() else "(no progress line on the review page)"

            # The crash: one more click per session, then SIGKILL while decisions are in flight.
            before, t0 = click_accept(pages)
            sent += len(pages)
            burst_acks = wait_all(pages, before, t0, timeout=0.4)
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.wait()
            acknowledged += len(burst_acks)
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
    print(f"| decisions sent under load / stored | {sent - len(pages)} / {stored_under_load} | equal |")
    print(f"| decisions acknowledged before SIGKILL / stored after restart | {acknowledged} / {stored} "
          f"(sent {sent}) | none lost |")
    print(f"| decisions stored per session (sent {args.clicks + 1} each) | "
          f"{', '.join(str(per_session.get(f'reviewer-{i}', 0)) for i in range(args.sessions))} | |")
    print(f"| accept key -> new count, p50 | {statistics.median(lat):.2f} s | |")
    print(f"| accept key -> new count, p95 | {p95:.2f} s | <= 0.5 s |")
    print(f"| accept key -> new count, max | {lat[-1]:.2f} s | |")
    print(f"| clicks not acknowledged within 60 s | {misses} | 0 |")
    print(f"| tracebacks in the server log | {log.count('Traceback')} | 0 |")


if __name__ == "__main__":
    main()

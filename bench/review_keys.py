"""Keyboard review speed in real Chromium, on ~59k Fashion-MNIST pseudo-labels, with an MPL job
training in the app (as a reviewer meets it).

    python bench/review_keys.py                 # the whole table
    python bench/review_keys.py --no-training --session 100

Measures, in the review grid (app_pages/review.py with review_grid/):
- key press -> tile visibly decided: a keydown dispatched to the grid until the next frame is
  painted with the tile's new state (the grid changes a tile before it asks Python anything);
- key press -> decision committed: from the key press to the grid receiving Python's ack, which
  is sent after the store transaction has committed (so an upper bound on the commit time);
- 100-tile page, first time and again: PageDown (a new page) and PageUp (one seen before), from
  the key to the grid drawn with the new page's 100 thumbnails;
- focus mode: key -> next item shown, to the next painted frame;
- a scripted session of N decisions: A whenever the focus ring is on an undecided tile, keys at least
  --interval apart (a fast reviewer), until all N are stored.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benches

from ui_latency import prepare, start_training_job  # noqa: E402

from browser import browser_pages, choose, streamlit_app  # noqa: E402
from mpl_core.workspace.workspace import open_workspace  # noqa: E402

# Dispatch one key to the grid and time it to the next painted frame; resolves to [ms, ms of them in
# the grid's key handler] or [-1, -1] when the probed tile did not change.
TIME_KEY = """async ([key, selector]) => {
  const root = document.querySelectorAll('*');
  let grid = null;
  for (const e of root) { if (e.shadowRoot && e.shadowRoot.querySelector('.grid-root')) {
    grid = e.shadowRoot.querySelector('.grid-root'); break; } }
  const node = grid.querySelector(selector); // the tile the key is for, looked up before the key
  const probe = () => (node ? node.outerHTML : '');
  const before = probe();
  const t0 = performance.now();
  grid.dispatchEvent(new KeyboardEvent('keydown', {key, bubbles: true}));
  const handled = performance.now();
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const t1 = performance.now();
  return probe() !== before ? [t1 - t0, handled - t0] : [-1, -1];
}"""
TIMINGS = """() => { for (const e of document.querySelectorAll('*')) { const g = e.shadowRoot &&
  e.shadowRoot.querySelector('.grid-root'); if (g && g.__timings) return g.__timings; } return {ack: [], turn: []}; }"""


def grid(page):
    return page.locator(".grid-root").first


def settled(page) -> bool:
    return grid(page).get_attribute("data-pending") == "0"


def wait(predicate, timeout=60.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            if predicate():
                return time.perf_counter() - t0
        except Exception:
            pass
        time.sleep(0.01)
    raise TimeoutError("timed out")


def pct(values: list[float], q: float) -> float:
    return sorted(values)[max(0, int(round(q * len(values))) - 1)]


def row(name: str, values: list[float], target: str) -> str:
    if not values:
        return f"| {name} | - | - | - | {target} |"
    return (f"| {name} | {statistics.median(values):.0f} ms | {pct(values, 0.95):.0f} ms | {len(values)} | "
            f"{target} |")


def measure(page, url: str, ws, args) -> dict:
    page.goto(url + "/review?ws=bench")
    grid(page).locator(".tile").first.wait_for(timeout=120000)
    choose(page, "Per page", "100")
    wait(lambda: grid(page).locator(".tile").count() == 100)
    grid(page).locator(".tile img").first.click()
    out = {"visible": [], "handler": [], "focus": []}
    # Page turns first, on pages nothing was decided on (a PageDown from a page with decided tiles
    # fills that page again instead: see grid.js, turn).
    for _ in range(args.pages):  # a new page, then back to one seen before
        page.keyboard.press("PageDown")
        wait(lambda: len(page.evaluate(TIMINGS)["turn"]) % 2 == 1, 60)
        page.keyboard.press("PageUp")
        wait(lambda: len(page.evaluate(TIMINGS)["turn"]) % 2 == 0, 60)
    grid(page).locator(".tile img").first.click()
    for i in range(args.keys):  # A on the focused tile, which walks the page (the "pending" filter refills it)
        ms, handler = page.evaluate(TIME_KEY, ["a", ".tile.focused"])
        if ms >= 0:
            out["visible"].append(ms)
            out["handler"].append(handler)
        wait(lambda: settled(page))
    timings = page.evaluate(TIMINGS)
    out["ack"], out["turn_new"], out["turn_again"] = timings["ack"], timings["turn"][0::2], timings["turn"][1::2]

    page.get_by_text("Focus mode", exact=True).click()
    grid(page).locator(".focusview img.big").wait_for(timeout=60000)
    for _ in range(args.keys):
        ms, _ = page.evaluate(TIME_KEY, [" ", ".focusview"])  # Space: the next item, nothing recorded
        if ms >= 0:
            out["focus"].append(ms)
    page.get_by_text("Focus mode", exact=True).click()
    grid(page).locator(".tile").first.wait_for(timeout=60000)

    before = len(ws.store.current_decisions()["idx"])
    grid(page).locator(".tile img").first.click()
    t0 = time.perf_counter()
    focused_pending = grid(page).locator(".tile.focused[data-status='pending']")
    for _ in range(args.session):  # as a reviewer would: wait for an undecided tile in the ring, press A
        wait(lambda: focused_pending.count() == 1, 60)
        page.keyboard.press("a")
        time.sleep(args.interval)
    typed = time.perf_counter() - t0
    try:
        wait(lambda: len(ws.store.current_decisions()["idx"]) - before >= args.session, 120)
    except TimeoutError:
        g = grid(page)
        print(f"session: {len(ws.store.current_decisions()['idx']) - before} stored after 120 s; grid: "
              f"{g.get_attribute('data-pending')} unsent, {g.locator('.tile').count()} tiles", file=sys.stderr)
    out["session"] = (len(ws.store.current_decisions()["idx"]) - before, typed, time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=40, help="key presses timed per measure")
    parser.add_argument("--pages", type=int, default=5, help="PageDown/PageUp pairs")
    parser.add_argument("--session", type=int, default=300, help="decisions in the scripted session")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between the session's key presses")
    parser.add_argument("--no-training", action="store_true", help="no training job in the app")
    parser.add_argument("--keep", default=None, help="prepare the workspace in this folder once and reuse it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        if not (root / "workspaces" / "bench").exists():
            prepare(root)
        ws = open_workspace("bench", root)
        with streamlit_app(root) as url, browser_pages(2, 1280, 1000) as (trainer, page):
            if not args.no_training:
                start_training_job(trainer, url)
            out = measure(page, url, ws, args)
            status = "none" if args.no_training else trainer.get_by_text("images/s").first.inner_text()
    print(f"{len(ws.store.pseudo_labels()):,} pseudo-labels (Fashion-MNIST); training job in the app: {status}")
    print("| measure | median | p95 | n | target |\n|---|---|---|---|---|")
    print(row("key press -> tile visibly decided", out["visible"], "<= 50 ms p95"))
    print(row("of which the grid's key handler", out["handler"], "-"))
    print(row("key press -> decision committed (ack)", out["ack"], "<= 500 ms p95"))
    print(row("100-tile page, first time", out["turn_new"], "<= 500 ms p95"))
    print(row("100-tile page, again", out["turn_again"], "<= 500 ms p95"))
    print(row("focus mode: key -> next item shown", out["focus"], "<= 100 ms p95"))
    stored, typed, total = out["session"]
    print(f"| scripted session of {args.session} decisions (A, {args.interval * 1000:.0f} ms apart) | "
          f"{stored} stored | typed in {typed:.1f} s | all stored after {total:.1f} s | - |")


if __name__ == "__main__":
    main()

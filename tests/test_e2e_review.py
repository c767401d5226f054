"""The review grid in real Chromium: keys decide, select, undo, open the lightbox and walk focus
mode; decisions survive a reload; two tabs on one tile leave one decision and a message."""
import time

import pytest

from browser import browser_pages, chromium_available, grid_count, streamlit_app
from conftest import tiny_run_config, write_stripes_folder
from mpl_core.config import DataConfig
from mpl_core.service.work import start_pseudo_labeling, start_training
from mpl_core.workspace.workspace import create_workspace

pytestmark = pytest.mark.skipif(not chromium_available(),
                                reason="needs chromium and playwright (make test installs them)")


def wait_for(predicate, timeout=30.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if predicate():
                return
        except Exception:  # the grid may be redrawing
            pass
        time.sleep(0.1)
    raise AssertionError("timed out")


def settled(page) -> bool:
    """Every decision keyed in this tab has been acknowledged by the server."""
    return grid(page).get_attribute("data-pending") == "0"


def counts(ws) -> dict:
    actions = ws.store.current_decisions()["action"].tolist()
    return {a: actions.count(a) for a in ("accept", "reject", "relabel", "manual")}


def grid(page):
    """The Pseudo-labels tab's grid (the Labeling queue tab holds a second one)."""
    return page.locator(".grid-root").first


def focused_label(page) -> str:
    return grid(page).locator(".tile.focused .cap").inner_text().split(" ")[0]


@pytest.fixture
def workspace(tmp_path):
    write_stripes_folder(tmp_path / "stripes", labeled=8, unlabeled=80)
    ws = create_workspace("tiny", DataConfig(dataset="stripes", val_fraction=0.25), tmp_path)
    assert start_training(ws, tiny_run_config("mpl")).join(120).state == "done"
    assert start_pseudo_labeling(ws).join(120).state == "done"
    return ws


def test_keys_decide_select_undo_and_every_decision_survives_a_reload(workspace, tmp_path):
    ws = workspace
    with streamlit_app(tmp_path, log=tmp_path / "app.log") as url, browser_pages(2, 1280, 1000) as (page, other):
        posts = []  # this tab's decisions go by POST to review_grid/api.py; the other tab's cannot
        page.on("response", lambda r: posts.append(r.status) if r.url.endswith("/api/review-batch") else None)
        other.route("**/api/review-batch", lambda route: route.abort())
        page.goto(url + "/review?ws=tiny")
        grid(page).locator(".tile").first.wait_for(timeout=60000)
        grid(page).locator(".tile img").first.click()
        for _ in range(5):
            page.keyboard.press("a")
        page.keyboard.press("x")
        wait_for(lambda: settled(page) and counts(ws) == {"accept": 5, "reject": 1, "relabel": 0, "manual": 0})
        assert posts and set(posts) == {200}

        names = ws.dataset().class_names
        other_class = 1 - names.index(focused_label(page))
        page.keyboard.press(str(other_class + 1))  # a digit relabels to the legend's class
        wait_for(lambda: settled(page) and counts(ws)["relabel"] == 1)

        page.keyboard.press("Shift+ArrowRight")
        page.keyboard.press("Shift+ArrowRight")
        assert grid(page).locator(".tile.selected").count() == 3
        page.keyboard.press("a")  # the key applies to the whole selection
        wait_for(lambda: settled(page) and counts(ws)["accept"] == 8)

        for _ in range(3):  # the range, the relabel, the reject
            page.keyboard.press("u")
        wait_for(lambda: settled(page) and counts(ws) == {"accept": 5, "reject": 0, "relabel": 0, "manual": 0})

        page.keyboard.press(" ")
        grid(page).locator("dialog.lightbox[open]").wait_for(timeout=5000)
        box = grid(page).locator("dialog.lightbox")
        box.get_by_text("Model's top classes").wait_for()
        wait_for(lambda: box.locator(".size").inner_text() == "16 × 16 px", 20)  # the stripes' own size
        assert box.locator("img.huge").evaluate("i => getComputedStyle(i).imageRendering") == "pixelated"  # tiny
        shown = box.get_attribute("data-position")
        page.keyboard.press("ArrowRight")  # the lightbox keeps the keys: next image
        wait_for(lambda: box.get_attribute("data-position") != shown, 10)
        page.keyboard.press("Escape")
        wait_for(lambda: grid(page).locator("dialog.lightbox[open]").count() == 0)

        page.get_by_text("Focus mode", exact=True).click()
        grid(page).locator(".focusview img.big").wait_for(timeout=30000)
        seen = set()
        for step in range(10):  # walk ten items: accept every other one, skip the rest
            seen.add(grid(page).locator(".focusview").get_attribute("data-position"))
            page.keyboard.press("a" if step % 2 == 0 else " ")
            wait_for(lambda: grid(page).locator(".focusview").get_attribute("data-position") not in seen, 10)
        wait_for(lambda: settled(page) and counts(ws)["accept"] == 10)

        page.reload()
        grid(page).wait_for(timeout=60000)
        wait_for(lambda: grid_count(page, "accept") == "10" and grid_count(page, "reject") == "0")
        page.get_by_text("Your pace:").first.wait_for(timeout=30000)  # the keys above were saved, and timed
        # A decided tile stays on its page, marked; PageDown then first fills the page again (the next
        # tile moves up into it), or it would skip as many tiles as were decided here.
        drawn = grid(page).locator(".tile").evaluate_all("ts => ts.map((t) => t.dataset.position)")
        grid(page).locator(".tile img").first.click()
        page.keyboard.press("a")
        wait_for(lambda: settled(page) and counts(ws)["accept"] == 11)
        assert grid(page).locator(".tile").first.get_attribute("data-status") == "accept"
        page.keyboard.press("PageDown")
        wait_for(lambda: grid(page).locator(".tile").first.get_attribute("data-position") == drawn[1])
        assert grid(page).locator(".tile").evaluate_all("ts => ts.map((t) => t.dataset.position)")[:-1] == drawn[1:]
        grid(page).get_by_text("page 1 of").wait_for(timeout=5000)
        grid(page).locator(".legend .page-btn", has_text="›").click()  # the mouse turns pages too
        grid(page).get_by_text("page 2 of").wait_for(timeout=30000)
        box = page.get_by_label("Go to page", exact=True)
        box.fill("1")
        box.press("Enter")
        grid(page).get_by_text("page 1 of").wait_for(timeout=30000)

        # Two tabs on the same tile: the first decision stands, the second tab is told.
        grid(page).locator(".tile").first.wait_for(timeout=30000)  # a reload starts in the grid
        other.goto(url + "/review?ws=tiny")
        grid(other).locator(".tile").first.wait_for(timeout=60000)
        first = grid(page).locator(".tile").first.get_attribute("data-position")
        assert grid(other).locator(".tile").first.get_attribute("data-position") == first
        grid(page).locator(".tile img").first.click()
        page.keyboard.press("x")
        wait_for(lambda: settled(page) and counts(ws)["reject"] == 1)
        grid(other).locator(".tile img").first.click()
        other.keyboard.press("a")  # this tab still shows the tile as pending; its POST fails: a trigger
        grid(other).locator(".statusline").get_by_text("another reviewer decided 1").wait_for(timeout=30000)
        assert counts(ws) == {"accept": 11, "reject": 1, "relabel": 0, "manual": 0}

        # The labeling queue, the page's second grid, shows what the first decided (opening a tab
        # reruns the page): a digit labels its first tile by hand, with no conflict.
        page.get_by_role("tab", name="Labeling queue").click()
        page.get_by_text("The most uncertain pending samples", exact=False).wait_for(timeout=30000)
        queue = page.locator(".grid-root").nth(1)
        queue.locator(".tile img").first.click()
        page.keyboard.press("2")
        wait_for(lambda: queue.get_attribute("data-pending") == "0" and counts(ws)["manual"] == 1)
        page.get_by_role("tab", name="Calibration").click()
        wait_for(lambda: page.locator(".js-plotly-plot").count() == 3, 30)  # the histogram and its two charts
    assert "Traceback" not in (tmp_path / "app.log").read_text()

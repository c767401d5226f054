"""The app in real Chromium against `streamlit run`: train, watch, pseudo-label, review, reload,
retrain, export. Screenshots of every page go to test-artifacts/screens/."""
import csv
import io
import re
import time
from pathlib import Path

import pytest

from browser import ROOT, browser_page, choose, chromium_available, grid_count, metric, streamlit_app
from conftest import write_stripes_folder
from mpl_core.config import DataConfig
from mpl_core.workspace.workspace import create_workspace

pytestmark = pytest.mark.skipif(not chromium_available(),
                                reason="needs chromium and playwright (make test installs them)")
SCREENS = ROOT / "test-artifacts" / "screens"


def wait_until(predicate, timeout=120.0, every=0.25):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if predicate():
                return
        except Exception:  # the element may be re-rendering
            pass
        time.sleep(every)
    raise AssertionError("timed out waiting for the page")


def shot(page, name):
    SCREENS.mkdir(parents=True, exist_ok=True)
    time.sleep(0.8)  # let charts finish drawing
    page.screenshot(path=str(SCREENS / f"{name}.png"), full_page=False)


def go(page, url, link):
    page.get_by_role("link", name=link, exact=True).click()
    page.get_by_role("heading", name=link if link != "Home" else "MPL Studio").first.wait_for(timeout=30000)


def test_the_whole_loop_in_a_browser(tmp_path):
    write_stripes_folder(tmp_path / "stripes", labeled=8, unlabeled=200, test=20)
    create_workspace("tiny", DataConfig(dataset="stripes", val_fraction=0.25), tmp_path)
    with streamlit_app(tmp_path, log=tmp_path / "app.log") as url, browser_page() as page:
        page.goto(url + "/?ws=tiny")
        page.get_by_text("Workspace: tiny").wait_for(timeout=60000)
        shot(page, "home")
        go(page, url, "Data")
        page.get_by_text("horizontal · 6 shown").wait_for(timeout=30000)  # 8 labeled, 2 held out
        shot(page, "data")

        # train: a short MPL run started from the page; progress arrives while it runs
        go(page, url, "Train")
        choose(page, "Preset", "smoke")
        steps = page.get_by_label("Steps (0 = the preset's)")
        steps.fill("400")
        steps.press("Tab")
        page.get_by_text("First train on the labels alone, for comparison").click()  # off: one run, run 1
        page.get_by_role("button", name="Start training").click()
        page.get_by_text(re.compile(r"\d+/400 ·")).first.wait_for(timeout=60000)
        page.get_by_text(re.compile(r"Training · run 1 — done")).wait_for(timeout=300000)
        page.get_by_text("Curves of run 1").first.wait_for()
        shot(page, "train")

        # review: generate pseudo-labels, move the threshold, accept a tile, bulk-accept
        go(page, url, "Review")
        page.get_by_role("button", name="Generate").click()
        page.get_by_text("Round 1: 200 pseudo-labels from the teacher of run 1").wait_for(timeout=120000)
        assert grid_count(page, "pending") == "200"
        page.get_by_role("slider").first.focus()
        page.keyboard.press("Home")  # threshold 0: everything passes
        wait_until(lambda: metric(page, "Pass") == "200")
        page.keyboard.press("End")  # threshold 1: only certain pseudo-labels pass
        wait_until(lambda: metric(page, "Pass") != "200")
        page.get_by_role("button", name="Set", exact=True).click()  # the slider set from a precision to aim for
        page.get_by_text(re.compile(r"is the lowest threshold estimated at|No threshold")).first.wait_for(timeout=30000)
        shot(page, "review-aim")
        page.get_by_role("slider").first.focus()
        page.keyboard.press("Home")
        wait_until(lambda: metric(page, "Pass") == "200")
        page.locator(".grid-root").first.locator(".tile button.ok").first.click()  # the grid's ✓
        wait_until(lambda: grid_count(page, "accept") == "1")
        shot(page, "review")
        page.get_by_role("button", name="Accept all pending at or above the threshold").click()
        wait_until(lambda: grid_count(page, "accept") == "200" and grid_count(page, "pending") == "0")
        page.reload()
        page.get_by_text("Round 1: 200 pseudo-labels").wait_for(timeout=60000)
        assert grid_count(page, "accept") == "200"  # decisions survive a reload

        # a retrain round on the reviewed labels
        go(page, url, "Rounds")
        choose(page, "Preset", "smoke")  # 6x its 30 steps, from scratch with mixup: the page's defaults
        page.get_by_role("button", name="Start a retrain round").click()
        page.get_by_text(re.compile(r"Retrain round · run 2 — done")).wait_for(timeout=300000)
        page.reload()
        page.get_by_role("heading", name="Rounds").wait_for()
        shot(page, "rounds")

        # export: the CSV carries every decision
        go(page, url, "Export")
        page.get_by_role("button", name="Prepare").first.click()
        with page.expect_download(timeout=60000) as download:
            page.get_by_role("button", name="Download").first.click()
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        assert sum(r["status"] == "accept" for r in rows) == 200
        assert sum(r["split"] == "labeled" for r in rows) == 12
        shot(page, "export")
    assert "Traceback" not in (tmp_path / "app.log").read_text()

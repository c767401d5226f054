"""Helpers for real-browser tests and benchmarks: start the app, drive it with Chromium."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium_available() -> bool:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).exists() or shutil.which("chromium") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen


@contextmanager
def streamlit_server(data_root: Path, log: Path | None = None):
    """`streamlit run server.py` (the app with its review route) on a free port with data_root as the
    data folder; yields a Server."""
    port = free_port()
    env = {**os.environ, "MPL_DATA_ROOT": str(data_root)}
    out = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "server.py"), "--server.port",
                             str(port), "--server.headless", "true"], cwd=ROOT, env=env, stdout=out,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.3)
        else:
            raise RuntimeError("the app did not start within 90 s")
        yield Server(url, proc)
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log:
            out.close()


@contextmanager
def streamlit_app(data_root: Path, log: Path | None = None):
    """`streamlit run server.py` on a free port with data_root as the data folder; yields the URL."""
    with streamlit_server(data_root, log) as server:
        yield server.url


@contextmanager
def browser_pages(count: int = 1, width: int = 1280, height: int = 800):
    """`count` pages (tabs, each its own app session) of one headless Chromium."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                    args=CHROMIUM_ARGS)
        try:
            yield [browser.new_page(viewport={"width": width, "height": height}) for _ in range(count)]
        finally:
            browser.close()


@contextmanager
def browser_page(width: int = 1280, height: int = 800):
    with browser_pages(1, width, height) as pages:
        yield pages[0]


def metric(page, label: str) -> str:
    """The value shown by the st.metric whose label is `label`."""
    box = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=label))
    return box.locator('[data-testid="stMetricValue"]').first.inner_text()


def grid_count(page, status: str) -> str:
    """The count the review grid shows for a status (pending, accept, reject, relabel, manual)."""
    return page.locator(".grid-root").first.locator(f'.counts [data-status="{status}"] .n').inner_text()


def choose(page, label: str, option: str) -> None:
    """Pick an option of the st.selectbox labelled `label`."""
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first
    for _ in range(5):  # a rerun that lands mid-click closes the list: try again
        box.click()
        item = page.get_by_role("option", name=option, exact=True)
        try:
            item.click(timeout=5000)
        except Exception:
            page.keyboard.press("Escape")
            continue
        if box.locator("input").input_value() == option:
            return
    raise AssertionError(f"could not choose {option!r} in {label!r}")

"""Bad input in the real app (Chromium): malformed zips uploaded on the Data page, and class names
with HTML and markdown shown as typed on every page that shows them."""
import time

import pytest

from browser import browser_page, chromium_available, streamlit_app
from conftest import tiny_run_config
from malformed import base_files, noise, write_folder, write_zip
from mpl_core.config import DataConfig
from mpl_core.service.work import start_pseudo_labeling, start_training
from mpl_core.workspace.workspace import create_workspace

pytestmark = pytest.mark.skipif(not chromium_available(),
                                reason="needs chromium and playwright (make test installs them)")
ODD = ["<img src=x onerror=alert(1)>", "**bold** [link](x.html)"]


def upload(page, url, name, path):
    page.goto(url + "/data")
    page.get_by_role("heading", name="Data").first.wait_for(timeout=60000)
    field = page.get_by_label("Workspace name", exact=True)
    if not field.is_visible():
        page.get_by_text("New workspace").first.click()  # collapsed once a workspace is open
    field.fill(name)
    page.get_by_text("My images: upload a zip").click()
    page.locator('input[type="file"]').set_input_files(str(path))
    page.get_by_text(path.name).first.wait_for(timeout=30000)  # the upload finished
    page.get_by_role("button", name="Create workspace").click()


def test_malformed_uploads_and_odd_class_names_in_the_browser(tmp_path):
    odd = {f"labeled/{c}/{i}.png": noise(500 + 10 * k + i) for k, c in enumerate(ODD) for i in range(6)}
    odd.update({f"unlabeled/u{i}.png": noise(600 + i) for i in range(40)})
    write_folder(tmp_path / "odd", odd)
    ws = create_workspace("odd", DataConfig(dataset="odd", val_fraction=0.25), tmp_path)
    assert start_training(ws, tiny_run_config("mpl")).join(120).state == "done"
    assert start_pseudo_labeling(ws).join(60).state == "done"

    slip = write_zip(tmp_path / "slip.zip", {**base_files(1), "../../evil.png": noise(2)})
    not_zip = tmp_path / "notes.zip"
    not_zip.write_text("this is not a zip")
    one_class = write_zip(tmp_path / "one.zip", {k: v for k, v in base_files(3).items() if "labeled/b" not in k})
    bomb = write_zip(tmp_path / "bomb.zip", {**base_files(4), "unlabeled/zeros.png": bytes(100 * 2**20)})
    alerts = []
    with streamlit_app(tmp_path, log=tmp_path / "app.log") as url, browser_page() as page:
        page.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))
        page.goto(url)
        page.get_by_role("heading", name="MPL Studio").first.wait_for(timeout=60000)

        upload(page, url, "slip", slip)  # imported; the unsafe entry is skipped and listed
        page.get_by_text("1 file(s) were skipped").wait_for(timeout=60000)
        page.get_by_text("unsafe path in zip").wait_for()
        upload(page, url, "notzip", not_zip)
        page.get_by_text("neither a folder nor a zip").wait_for(timeout=60000)
        upload(page, url, "one", one_class)
        page.get_by_text("need at least 2").wait_for(timeout=60000)
        upload(page, url, "bomb", bomb)
        page.get_by_text("larger than 64 MB uncompressed").first.wait_for(timeout=60000)
        upload(page, url, "slip", slip)  # the name is taken: refused, the first upload untouched
        page.get_by_text("already exists").first.wait_for(timeout=60000)

        page.goto(url + "/data?ws=odd")
        page.get_by_text(f"{ODD[1]} · ").first.wait_for(timeout=60000)
        page.goto(url + "/review?ws=odd")
        page.get_by_text("pseudo-labels from the teacher").first.wait_for(timeout=60000)
        page.get_by_text("Per-class thresholds").first.click()
        page.get_by_text(ODD[1], exact=True).first.wait_for(timeout=30000)  # a slider label, as typed
        page.get_by_text(ODD[0], exact=True).first.wait_for()
        legend = page.locator(".grid-root").first.locator(".legend")  # the review grid shows names as text
        legend.get_by_text(ODD[0]).wait_for(timeout=30000)
        legend.get_by_text(ODD[1]).wait_for()
        time.sleep(2)
        assert page.locator('a[href="x.html"]').count() == 0  # the markdown link was not rendered
        assert page.locator('img[src="x"]').count() == 0  # nor the HTML image
        assert page.locator("strong", has_text="bold").count() == 0
        assert alerts == []
    assert (tmp_path / "uploads" / "slip.zip").read_bytes() == slip.read_bytes()
    assert not (tmp_path / "evil.png").exists() and not (tmp_path.parent / "evil.png").exists()
    log = (tmp_path / "app.log").read_text()
    assert "Traceback" not in log, log[-3000:]

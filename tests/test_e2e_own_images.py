"""Own photos in real Chromium: tiles at their own resolution, the lightbox's source image, a
source file deleted after the import named on its tile, and a first run without network."""
import dataclasses
import re

import pytest
from PIL import Image
from test_e2e_review import grid, wait_for
from test_own_images import write_photos

from browser import browser_pages, choose, chromium_available, streamlit_app
from conftest import tiny_run_config
from mpl_core.config import FROM_SCRATCH, DataConfig
from mpl_core.engine.backbones import HostProbe, imagenet_file
from mpl_core.service.work import start_pseudo_labeling, start_training
from mpl_core.workspace.workspace import create_workspace

pytestmark = pytest.mark.skipif(not chromium_available(),
                                reason="needs chromium and playwright (make test installs them)")


@pytest.fixture
def photos(tmp_path, monkeypatch):
    monkeypatch.setattr("mpl_core.workspace.workspace.device_kind", lambda: "cpu")  # as the app's CPU machine
    write_photos(tmp_path / "photos", per_class=4, unlabeled=30)
    ws = create_workspace("photos", DataConfig(dataset="photos", val_fraction=0.25), tmp_path)
    cfg = tiny_run_config("mpl")
    cfg.model = dataclasses.replace(cfg.model, name="cnn")  # no download: auto would be a pretrained ResNet
    assert start_training(ws, cfg).join(180).state == "done"
    assert start_pseudo_labeling(ws).join(120).state == "done"
    return ws


def natural_width(page, selector: str) -> int:
    return page.eval_on_selector(selector, "img => img.naturalWidth")


# An image's box as drawn, against the image's own shape, its backdrop and how it is enlarged.
BOX = """i => { const r = i.getBoundingClientRect(); const css = getComputedStyle(i);
  return [r.width / r.height, i.naturalWidth / i.naturalHeight, css.backgroundImage, css.imageRendering]; }"""


def fitted(box) -> bool:
    """The box has the image's shape (the checkerboard behind it shows through see-through pixels only)."""
    drawn, own, backdrop, _ = box
    return abs(drawn - own) < 0.03 and "conic-gradient" in backdrop


def test_tiles_show_the_photos_at_their_own_resolution(photos, tmp_path):
    ws = photos
    rows = ws.store.pseudo_labels()
    gone = ws.dataset().train.ids[int(rows.idx[1])]
    (tmp_path / "photos" / gone).unlink()  # after the import: its tile must say so
    with streamlit_app(tmp_path, log=tmp_path / "app.log") as url, browser_pages(1, 1280, 1000) as (page,):
        page.goto(url + "/review?ws=photos")
        tiles = grid(page).locator(".tile")
        tiles.first.wait_for(timeout=60000)
        widths = [page.evaluate("t => t.querySelector('img').naturalWidth", t.element_handle())
                  for t in tiles.all()]
        assert widths and min(widths) >= 96  # the training copies are 64 px
        boxes = [page.evaluate(f"t => ({BOX})(t.querySelector('img'))", t.element_handle()) for t in tiles.all()]
        assert all(fitted(box) and box[3] == "auto" for box in boxes)  # photos enlarge smoothly
        notes = grid(page).locator(".tile .note").all_inner_texts()
        assert "source file gone since the import" in notes
        fine = [i for i, t in enumerate(tiles.all()) if not t.locator(".note").inner_text()][0]
        tiles.nth(fine).locator("img").click()
        page.keyboard.press(" ")
        grid(page).locator("dialog.lightbox[open]").wait_for(timeout=5000)
        position = int(tiles.nth(fine).get_attribute("data-position"))
        width, height = Image.open(tmp_path / "photos" / ws.dataset().train.ids[int(rows.idx[position])]).size
        # the source image replaces the thumbnail once the server sends it, with its size said
        said = grid(page).locator("dialog.lightbox .size")
        wait_for(lambda: said.inner_text() == f"{width} × {height} px", timeout=20)
        assert natural_width(page, "dialog.lightbox img.huge") == width
        assert fitted(page.eval_on_selector("dialog.lightbox img.huge", BOX))


def test_without_network_the_default_start_is_from_scratch_before_start_and_training_works(tmp_path, monkeypatch):
    """A new user's own images and no network (as in CI): the pages say before Start that ResNet-18's
    ImageNet weights cannot be had and offer from scratch, and Start with those defaults trains."""
    monkeypatch.setenv("MPL_DATA_ROOT", str(tmp_path))
    if HostProbe()("https://download.pytorch.org/models/resnet18-f37072fd.pth"):
        pytest.skip("this machine can download ImageNet weights; the test is of one that cannot")
    monkeypatch.setattr("mpl_core.workspace.workspace.device_kind", lambda: "cpu")  # 64 px: auto is a ResNet-18
    write_photos(tmp_path / "photos", per_class=4, unlabeled=30)
    create_workspace("mine", DataConfig(dataset="photos", val_fraction=0.25), tmp_path)
    weights = imagenet_file("resnet18")
    note = f"Training starts {FROM_SCRATCH}: resnet18's ImageNet weights are not in {weights.parent}/"
    with streamlit_app(tmp_path, log=tmp_path / "app.log") as url, browser_pages(1, 1280, 1000) as (page,):
        page.goto(url + "/data?ws=mine")
        page.get_by_text(note).wait_for(timeout=60000)
        page.goto(url + "/train?ws=mine")
        page.get_by_text(note).wait_for(timeout=60000)
        assert page.get_by_text(f"put {weights.name} in {weights.parent}/").is_visible()
        start_from = page.locator('[data-testid="stSelectbox"]').filter(has_text="Start from").first
        assert start_from.locator("input").input_value() == FROM_SCRATCH
        choose(page, "Preset", "smoke")
        steps = page.get_by_label("Steps (0 = the preset's)")
        steps.fill("4")
        steps.press("Tab")
        page.get_by_role("button", name="Start training").click()
        # the defaults: the labels alone first (run 1), then MPL (run 2)
        page.get_by_text(re.compile(r"Training · run 2 — done")).wait_for(timeout=240000)
        assert not page.locator('[data-testid="stAlertContentError"]').count()
    assert not weights.exists()  # nothing was downloaded

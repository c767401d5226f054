"""A shared link opens the named page of the named workspace on a freshly started server, in the
app's own navigation (real Chromium against `streamlit run`)."""
import pytest

from browser import browser_page, chromium_available, streamlit_app
from conftest import write_stripes_folder
from mpl_core.config import DataConfig
from mpl_core.workspace.workspace import create_workspace

pytestmark = pytest.mark.skipif(not chromium_available(),
                                reason="needs chromium and playwright (make test installs them)")


def test_a_deep_link_opens_its_page_and_workspace_on_a_fresh_server(tmp_path):
    write_stripes_folder(tmp_path / "stripes", labeled=8, unlabeled=40, test=10)
    for name in ("another", "tiny"):  # "tiny" is not the first workspace: the link must choose it
        create_workspace(name, DataConfig(dataset="stripes", val_fraction=0.25), tmp_path)
    with streamlit_app(tmp_path) as url, browser_page() as page:
        page.goto(url + "/review?ws=tiny")  # the first request this server sees
        page.get_by_role("heading", name="Review").first.wait_for(timeout=60000)
        nav = page.locator('[data-testid="stSidebarNav"]')
        nav.get_by_role("link", name="Train", exact=True).wait_for(timeout=30000)  # the app's titles
        assert "rounds" not in nav.inner_text()  # not Streamlit's raw file list (app, data, ..., rounds)
        picker = page.locator('[data-testid="stSelectbox"]').filter(has_text="Workspace").first
        assert picker.locator("input").input_value() == "tiny"
        assert page.get_by_text("Create a workspace first").count() == 0
        assert page.get_by_text("Train a model first").count() == 1  # the Review page of "tiny"
        assert page.get_by_role("button", name="Deploy").count() == 0
        assert page.url.endswith("/review?ws=tiny")

        page.goto(url + "/train?ws=another")
        page.get_by_role("heading", name="Train").first.wait_for(timeout=60000)
        picker = page.locator('[data-testid="stSelectbox"]').filter(has_text="Workspace").first
        assert picker.locator("input").input_value() == "another"

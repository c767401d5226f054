"""The app's pages run without errors (Streamlit AppTest, no browser)."""
import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]


def test_home_page_renders():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "MPL Studio"


def test_runs_page_lists_finished_runs(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    history = [{"phase": "train", "step": 10, "val_acc": 0.5}, {"phase": "train", "step": 20, "val_acc": 0.7}]
    run.joinpath("result.json").write_text(json.dumps({"config": {"algorithm": {"name": "mpl"}},
                                                       "metrics": {"test_acc": 0.71}, "history": history}))
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).switch_page("pages/runs.py").run()
    assert not at.exception
    assert at.dataframe[0].value["run"].tolist() == ["demo"]

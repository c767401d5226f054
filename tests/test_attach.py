"""A checkpoint trained elsewhere (train --out, torchrun) added to a workspace as a run."""
import pytest

from conftest import write_stripes_folder
from mpl_core.config import DataConfig
from mpl_core.errors import MPLStudioError
from mpl_core.service.cli import main
from mpl_core.service.studio import Studio
from mpl_core.service.work import start_pseudo_labeling

SMALL = ["--steps", "10", "--finetune-steps", "2", "--batch-size", "4", "--mu", "2", "--width", "4",
         "--device", "cpu", "--quiet", "--eval-every", "5"]


def trained_out(root, name="runs/elsewhere", dataset="stripes"):
    """What `train --out` leaves: checkpoints and result.json (the same files under torchrun)."""
    assert main(["train", "--dataset", str(root / dataset), "--out", str(root / name), *SMALL]) == 0
    return root / name


def test_an_outside_run_becomes_a_workspace_run_with_curves_and_pseudo_labels(tiny_workspace, tmp_path, capsys):
    trained_out(tmp_path)
    studio = Studio(tmp_path)
    run_id = studio.attach_checkpoint("tiny", "runs/elsewhere")
    run = studio.runs("tiny")[-1]
    assert run["id"] == run_id and run["status"] == "done" and "test_acc" in run["metrics"]
    assert "added from ckpt-0000012.safetensors" in run["message"]
    assert "another split" in run["message"]  # its split (val_per_class) is not the workspace's
    assert [r["step"] for r in studio.metric_rows("tiny", run_id) if r["phase"] == "train"] == [10]
    assert start_pseudo_labeling(studio.open("tiny"), run_id).join(60).state == "done"
    assert main(["attach", "--workspace", "tiny", "--data-root", str(tmp_path),
                 str(tmp_path / "runs/elsewhere/ckpt-0000012.safetensors")]) == 0
    assert f"run {run_id + 1}: done" in capsys.readouterr().out


def test_attach_refuses_what_does_not_fit(tiny_workspace, tmp_path, image_folder):
    studio = Studio(tmp_path)
    with pytest.raises(MPLStudioError, match="outside the data folder"):
        studio.attach_checkpoint("tiny", "/etc")
    with pytest.raises(MPLStudioError, match="no checkpoint"):
        studio.attach_checkpoint("tiny", "stripes")
    with pytest.raises(MPLStudioError, match="type the path"):
        studio.attach_checkpoint("tiny", "  ")
    (tmp_path / "fake.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(MPLStudioError, match="not a readable checkpoint"):
        studio.attach_checkpoint("tiny", "fake.safetensors")
    assert image_folder == tmp_path / "shapes"  # 3 classes; the workspace has 2
    trained_out(tmp_path, "runs/shapes", dataset="shapes")
    with pytest.raises(MPLStudioError, match="classes"):
        studio.attach_checkpoint("tiny", "runs/shapes")
    assert len(studio.runs("tiny")) == 0  # nothing half-added


def test_train_page_adds_a_run_from_a_folder(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT
    from ui import get_studio
    monkeypatch.setenv("MPL_DATA_ROOT", str(tmp_path))
    write_stripes_folder(tmp_path / "stripes")
    Studio(tmp_path).create("tiny", DataConfig(dataset="stripes", val_fraction=0.25))
    trained_out(tmp_path)
    get_studio.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state["workspace"] = "tiny"
    at = at.switch_page("app_pages/train.py").run()
    box = next(t for t in at.text_input if t.label == "Checkpoint or run folder")
    box.set_value("nowhere").run()
    next(b for b in at.button if b.label == "Add as a run").click().run()
    assert any("no checkpoint" in e.value for e in at.error) and not at.exception
    next(t for t in at.text_input if t.label == "Checkpoint or run folder").set_value("runs/elsewhere").run()
    next(b for b in at.button if b.label == "Add as a run").click().run()
    assert not at.exception and any("Added as run 1" in s.value for s in at.success)
